import sys

from styler.cli import main

sys.exit(main())
