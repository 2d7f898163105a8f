"""Shared fixtures: real networks, real exports, the real CLI in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (README) runs two workers on the two cores: one thread
    # each for PyTorch here and in the commands the tests start, where two
    # workers of two threads each would fight over the cores. A value the
    # user set is kept.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# A test run started in the background (`cmd &` in a CI script) or in one of
# xdist's workers has SIGINT ignored, which every command a test starts
# would inherit (and styler rightly keeps an inherited ignored SIGINT
# ignored): the tests' Ctrl-Cs would not reach them. The run takes SIGINT
# as a terminal's process does.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def interruptible() -> None:
    """``preexec_fn`` for a child the test will send SIGINT, as Ctrl-C at a
    terminal would: a child of a background job (``cmd &`` in a script, as
    some CI runners start their jobs) inherits SIGINT ignored, and Python
    then keeps ignoring it, as it should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(
    *args: str, stdin: bytes | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m styler ARGS`` the way a user runs ``styler ARGS``."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "styler", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture(scope="session")
def tiny_resnet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real resnet generator (2 blocks, ngf 8) exported to ONNX once per session."""
    pytest.importorskip("torch")
    import torch

    from styler import zoo
    from styler.export import export_onnx
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    torch.manual_seed(0)
    config = generator_preset("resnet_2blocks", ngf=8)
    net = zoo.build(config, init="normal", gain=0.2)
    meta = ModelMetadata(network=config, name="tiny-resnet", license="CC0-1.0", train_size=32)
    path = tmp_path_factory.mktemp("models") / "tiny_resnet.onnx"
    export_onnx(net, meta, path)
    return path


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its tallies to the controller, which prints them."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        sys.path.insert(0, str(Path(__file__).parent))
        import hostile

        output["styler_summary"] = list(hostile.SUMMARY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """(xdist's controller) a worker's tallies, printed at the end."""
    sys.path.insert(0, str(Path(__file__).parent))
    import hostile

    hostile.SUMMARY.extend(getattr(node, "workeroutput", {}).get("styler_summary", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The tallies of the reliability tests (test_hostile, test_fuzz), if they ran."""
    sys.path.insert(0, str(Path(__file__).parent))
    import hostile

    for line in hostile.SUMMARY:
        terminalreporter.write_line(line)
