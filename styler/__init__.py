"""styler: batch image style transfer.

The apply half (``styler.runtime``, ...) needs only onnxruntime, pillow and
numpy; the train half (``styler.zoo``, ``styler.export``, ``styler.importer``)
needs the ``train`` extra (torch). Importing ``styler`` itself imports neither.
"""

from styler._version import __version__

__all__ = ["__version__"]
