"""Reliability, the twenty-third pass: what a twenty-third hostile review
found. Each case runs through the real CLI on tiny files; each fails on the
code of the twenty-third pass's start (pass23, d0120e4) for the reason its
docstring gives.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety import _lines
from test_safety_pass7 import _env, _run
from test_safety_pass9 import NO_EXPORT, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow

#: ``python WRAPPER ARGS`` runs ``styler ARGS`` (the real entry point), held
#: just as the finished temporary file of ``$HOLD_AT`` is to be renamed into
#: place: it then creates the file ``$HELD`` and sleeps, for the test to kill
#: it there (SIGKILL from outside, as `docker kill` or the OOM killer do).
_HELD_AT = (
    "import os, runpy, sys, time\n"
    "name, mark = os.environ.pop('HOLD_AT'), os.environ.pop('HELD')\n"
    "def held_at(real):\n"
    "    def publish(src, dst, *a, **k):\n"
    "        ours = os.fspath(src).endswith('.part')\n"
    "        if ours and os.path.basename(os.fspath(dst)) == name:\n"
    "            open(mark, 'w').close()\n"
    "            time.sleep(600)\n"
    "        return real(src, dst, *a, **k)\n"
    "    return publish\n"
    "os.replace = held_at(os.replace)\n"
    "os.rename = held_at(os.rename)\n"
    "os.link = held_at(os.link)\n"
    "sys.argv = ['styler', *sys.argv[1:]]\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def _killed_as_a_containers_pid_1(tmp_path: Path, args: list[str], hold_at: str) -> None:
    """``styler ARGS`` as a container's entry point runs it: process 1 of a
    new PID namespace, killed by SIGKILL from outside while it writes
    ``hold_at`` (:data:`_HELD_AT`)."""
    unshare = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    if subprocess.run([*unshare, "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a PID namespace here (needs root or user namespaces)")
    wrapper = tmp_path / "held_at.py"
    wrapper.write_text(_HELD_AT)
    held = tmp_path / "held"
    proc = subprocess.Popen(
        [*unshare, sys.executable, str(wrapper), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(HOLD_AT=hold_at, HELD=str(held)),
        cwd=tmp_path,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not held.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # (the namespace's process 1 too: same group)
    _, err = proc.communicate(timeout=60)
    assert held.exists(), err.decode(errors="replace")[-2000:]


@pytest.mark.parametrize("kill_at", ["config.json", "step_0000000.png"])
def test_a_start_killed_in_a_container_can_start_again_outside_it(
    tmp_path: Path, kill_at: str
) -> None:
    """`styler train a b -o run` run as a container's entry point (process 1
    of its PID namespace: `docker run`, a Kubernetes job) on a folder shared
    with the host or with another container, killed by SIGKILL while it
    writes the run's `config.json` or its first sample grid (`docker kill`,
    the OOM killer), then the very same command outside that container: on
    the host, or in a longer-lived container (a notebook pod) sharing the
    folder. The kill leaves `.styler-1-<token>.part` (in `run/` or
    `run/samples/`). Since the twenty-second pass, `fsutil.dead_writer`
    takes a temporary file for a live writer's when a process of its id runs
    and started before the file was written. Here process 1 is the host's
    init (or the other container's entry point): it runs, and it started
    long before the file, so the dead container's file is taken for a live
    writer's, for as long as that machine (or container) is up. The same
    command is refused for good: `run: another styler process (pid 1) is
    writing in it: wait for it to end or choose another --output` (pid 1 is
    no styler and never ends), or, for the sample grid, `run holds a run
    without checkpoints and files styler did not write there`, exit 2, both
    false; the only way on is to find and delete the hidden file by hand.
    The same command in the next container starts afresh (P22:container);
    it must start afresh here too, exit 0, the earlier files kept aside."""
    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "2", *NO_EXPORT)
    _killed_as_a_containers_pid_1(tmp_path, args, kill_at)
    parts = [p.relative_to(run) for p in run.rglob(".styler-1-*.part")]
    assert parts, sorted(str(p) for p in run.rglob("*"))
    again = _run(*args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, _lines(again)
    assert (run / "config.json").is_file()
    assert list((run / "checkpoints").glob("step_*.safetensors")), _lines(again)


def test_a_writer_in_flight_is_live_whatever_its_age_and_a_file_nobody_holds_is_not(
    tmp_path: Path,
) -> None:
    """What the fix rests on (styler.fsutil): a writer holds a lock on its
    temporary file until it is done, so its file is live however old it
    looks and from any process (this one's cleanup never removes its own
    workers' files); a file nobody holds, named for a process that runs and
    is older than it (pid 1: the host's init, or a container's first
    process), is a killed writer's once it is more than a moment old."""
    from styler.fsutil import atomic_path, dead_writer, remove_stale_parts

    long_ago = time.time() - 3600
    with atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"being written")
        os.utime(tmp, (long_ago, long_ago))
        assert not dead_writer(tmp) and remove_stale_parts(tmp_path) == []
        probe = "import sys; from styler.fsutil import dead_writer; print(dead_writer(sys.argv[1]))"
        other = subprocess.run(
            [sys.executable, "-c", probe, str(tmp)], capture_output=True, text=True, env=_env()
        )
        assert other.stdout.strip() == "False", other.stderr
    assert (tmp_path / "out.png").read_bytes() == b"being written"
    left = tmp_path / ".styler-1-abcd1234.part"
    left.write_bytes(b"a killed writer's")
    assert not dead_writer(left)  # a moment old: it may be a writer about to lock it
    os.utime(left, (long_ago, long_ago))
    assert dead_writer(left) and remove_stale_parts(tmp_path) == [left]
