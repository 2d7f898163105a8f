"""glibc's malloc, set to keep freed memory for reuse while training.

By default glibc gives large freed blocks back to the kernel: blocks from
128 KiB (a threshold it raises as it goes, up to 32 MiB) are mapped and
unmapped one by one, and a heap top with more than twice that free is
trimmed. A training step frees and allocates the same large tensors every
step, so their pages are faulted in and zeroed again each time: 13,000-15,000
minor page faults per bf16 CycleGAN step at 128 px on the 2-core machine in
docs/BENCHMARKS.md (41,000-69,000 at 256 px). With the memory kept
(``M_MMAP_THRESHOLD`` at glibc's maximum of 32 MiB and ``M_TRIM_THRESHOLD``
at 1 GiB) it is 0-750 (and 0), the step 3-6% faster, at the same peak
memory.

It is a setting of the whole process, so ``styler train`` makes it (the
command owns its process) and the library does not; programs that train
through the Python API can call :func:`keep_freed_memory` themselves. The
price is memory: the process keeps what it freed (up to 1 GiB above its
working set) instead of returning it. Settings the user made through glibc's
environment variables are left alone, and other C libraries are not touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

from styler.log import logger

#: mallopt() parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks below this come from the heap, not from mmap: glibc's largest
#: accepted value on 64-bit systems.
MMAP_THRESHOLD = 32 << 20
#: Free memory at the heap's top is returned to the kernel only above this.
TRIM_THRESHOLD = 1 << 30

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse (see the module's
    docstring). Returns whether it did: not on other C libraries, and not
    when the user set malloc's thresholds in the environment."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc." in tunables:
        logger.debug("malloc: thresholds set in the environment, left as they are")
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    logger.debug("malloc: keep freed memory: %s", done)
    return done
