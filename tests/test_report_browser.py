"""report.html in a real browser: a headless Chromium (Debian's ``chromium``
package) opens the report of a real training run; every sample image loads,
the curves are drawn, and the page is not blank. Skipped where Chromium is
not installed (CI installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from styler.training.loop import WatchOptions, train  # noqa: E402
from styler.training.setup import make_config  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Injected into a copy of the report beside it: makes every image load now
#: (the report's grids load lazily), waits for all of them, and writes what
#: it found into <body data-...> for --dump-dom to show.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; img.src = img.src; });
  let tries = 0;
  const look = () => {
    const done = images.every(img => img.complete);
    if (!done && tries++ < 50) { setTimeout(look, 100); return; }
    const ok = images.filter(img => img.complete && img.naturalWidth > 0);
    document.body.dataset.images = images.length;
    document.body.dataset.loaded = ok.length;
    document.body.dataset.lines = document.querySelectorAll("svg polyline").length;
    document.body.dataset.charts = document.querySelectorAll("svg g").length;
  };
  look();
});
</script>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_html_renders_its_samples_and_curves_in_chromium(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folders = []
    for name in ("photos", "paintings"):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(4):
            pixels = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}{i}.png")
        folders.append(folder)
    config, found = make_config(
        *folders, mode="cyclegan", steps=4, generator="resnet_2blocks", ngf=8, ndf=8, size=32
    )
    run = tmp_path / "run"
    watch = WatchOptions(display="quiet", workers=1, export=False, sample_every=2)
    train(config, run, device="cpu", watch=watch, found=found)

    report = (run / "report.html").read_text()
    grids = re.findall(r'<img src="(samples/step_\d+\.png)"', report)
    assert len(grids) == 3  # steps 0, 2 and 4
    probe = run / "probe.html"  # beside the report, so its relative paths hold
    probe.write_text(report.replace("</body>", PROBE + "</body>"))
    dom = _chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None, dom.stdout[:2000]
    found_attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1)))
    assert found_attrs["images"] == found_attrs["loaded"] == str(len(grids)), found_attrs
    assert int(found_attrs["lines"]) >= 8  # a curve per loss and more
    assert int(found_attrs["charts"]) >= 8

    shot = tmp_path / "report.png"
    args = ["--window-size=1000,1400", f"--screenshot={shot}", (run / "report.html").as_uri()]
    result = _chromium(args, tmp_path / "p2")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank page
    assert len(np.unique(pixels)) > 50  # text, curves and pictures, not a flat fill
