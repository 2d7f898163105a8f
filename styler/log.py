"""The one logger styler writes through."""

from __future__ import annotations

import logging

logger = logging.getLogger("styler")
logger.addHandler(logging.NullHandler())
