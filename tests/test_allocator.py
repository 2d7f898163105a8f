"""The malloc setting ``styler train`` makes: freed memory is kept and reused,
so a second round of the same allocations faults in no new pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

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


def test_styler_train_makes_the_setting(tmp_path: Path) -> None:
    """Through the real command: `styler -vv train` logs that it set malloc,
    and trains."""
    pytest.importorskip("torch")
    from PIL import Image

    for folder, colour in (("a", (200, 80, 40)), ("b", (40, 80, 200))):
        (tmp_path / folder).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 40), colour).save(tmp_path / folder / f"{folder}{i}.png")
    args = ["train", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "run")]
    args += ["--mode", "cyclegan", "--gen", "resnet_2blocks", "--ngf", "8", "--ndf", "8"]
    args += ["--size", "32"]
    args += ["--steps", "1", "--no-export", "--display", "quiet"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    result = subprocess.run(
        [sys.executable, "-m", "styler", "-vv", *args],
        capture_output=True,
        text=True,
        env={**env, "PYTHONWARNINGS": "ignore"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "malloc: keep freed memory: True" in result.stderr
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
