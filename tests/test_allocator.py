"""The malloc setting ``styler train`` makes: freed memory is kept and reused,
so a second round of the same allocations faults in no new pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc only",
)

# Rounds of 64 MiB in 4 MiB blocks, each page written (bytearray zero-fills):
# prints whether the setting was made and the minor page faults per round
# after the first.
ROUNDS = """
import resource, sys
from styler.training.allocator import keep_freed_memory
made = keep_freed_memory() if sys.argv[1] == "keep" else False
def one_round():
    blocks = [bytearray(4 << 20) for _ in range(16)]
    del blocks
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    one_round()
print(made, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""


def faults(mode: str, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **env},
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_kept_memory_is_reused_without_new_page_faults() -> None:
    made, kept = faults("keep")
    _, default = faults("default")
    assert made
    assert default > 8000  # 16384 pages a round: glibc gave them back
    assert kept < default / 20


def test_the_users_own_malloc_settings_are_left_alone() -> None:
    made, kept = faults("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert not made
    assert kept > 8000
