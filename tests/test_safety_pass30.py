"""Reliability, the thirtieth pass: what the thirtieth hostile review and
the twenty-ninth pass's list of what was left found. Each case runs through
the real CLI on tiny files; each fails on the code of the thirtieth pass's
start (4673fe0) for the reason its docstring gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety import _lines
from test_safety_pass7 import _env, _run

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("command", "name"),
    [("export", "run.safetensors"), ("export", "run_folder"), ("import", "latest_net_G.pth")],
)
def test_a_missing_checkpoint_is_said_before_pytorch_is_imported(
    tmp_path: Path, command: str, name: str
) -> None:
    """`styler export`/`import` of a path that is not there took 2.5-3.5 s
    to say so: PyTorch was imported first. Now the one line comes at once.
    A stand-in ``torch`` on PYTHONPATH that refuses to import proves it."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise RuntimeError('torch was imported')\n")
    missing = tmp_path / name
    r = _run(command, str(missing), env=_env(PYTHONPATH=str(fake)))
    assert r.returncode == 2, _lines(r)
    assert _lines(r) == [f"styler: error: {missing}: no such file"]
    assert not missing.exists() and not list(tmp_path.glob("*.onnx"))
