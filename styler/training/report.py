"""What a person looks at: sample grids, loss curves and report.html.

Everything is plain files (PNG, SVG, HTML) that open from disk: no server,
no JavaScript, no plotting library.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from styler.fsutil import atomic_path, atomic_write_bytes
from styler.training.metricslog import read_metrics

if TYPE_CHECKING:
    from styler.training.config import TrainConfig

LABEL_HEIGHT = 14
PAD = 2
#: Smaller images are enlarged in grids to at least this height.
MIN_TILE = 96


# -- sample grids --------------------------------------------------------------------


def to_uint8(x: Any) -> np.ndarray:
    """A (C, H, W) tensor or array in [-1, 1] -> H x W x 3 uint8."""
    arr = np.asarray(x.detach().float().cpu() if hasattr(x, "detach") else x, np.float32)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    arr = np.nan_to_num(arr[:3], nan=0.0, posinf=1.0, neginf=-1.0)  # never a cast warning
    arr = (np.clip(arr, -1, 1) + 1) * 127.5 + 0.5
    return arr.transpose(1, 2, 0).astype(np.uint8)


def grid_image(
    rows: Sequence[tuple[str, Sequence[Any]]], columns: Sequence[str], title: str = ""
) -> Image.Image:
    """One picture: for each (label, [column tensors (N, C, H, W)]) group, N
    rows of images, one per column, under a line of text."""
    tiles = [(label, [to_uint8_batch(col) for col in cols]) for label, cols in rows]
    zoom = max(1, -(-MIN_TILE // tiles[0][1][0][0].shape[0]))
    if zoom > 1:  # tiny images: enlarge (nearest) so that the grid is legible
        tiles = [(label, [[_zoom(t, zoom) for t in col] for col in cols]) for label, cols in tiles]
    h, w = tiles[0][1][0][0].shape[:2]
    n_cols = len(columns)
    width = n_cols * (w + PAD) + PAD
    height = LABEL_HEIGHT * (1 + bool(title))
    for _, cols in tiles:
        height += LABEL_HEIGHT + len(cols[0]) * (h + PAD)
    canvas = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    y = 0
    if title:
        draw.text((PAD, y + 1), title, fill=(230, 230, 230))
        y += LABEL_HEIGHT
    for i, name in enumerate(columns):
        draw.text((PAD + i * (w + PAD), y + 1), name, fill=(200, 200, 200))
    y += LABEL_HEIGHT
    for label, cols in tiles:
        draw.text((PAD, y + 1), label, fill=(255, 214, 102))
        y += LABEL_HEIGHT
        for r in range(len(cols[0])):
            for c, col in enumerate(cols):
                canvas.paste(Image.fromarray(col[r]), (PAD + c * (w + PAD), y))
            y += h + PAD
    return canvas


def _zoom(tile: np.ndarray, factor: int) -> np.ndarray:
    return tile.repeat(factor, axis=0).repeat(factor, axis=1)


def to_uint8_batch(x: Any) -> list[np.ndarray]:
    return [to_uint8(item) for item in x]


def save_png(image: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        image.save(f, format="PNG", compress_level=6)
    return path


# -- curves ---------------------------------------------------------------------------


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (what a curve of noisy GAN losses needs)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    if not hi - lo > 0 or not math.isfinite(hi - lo):
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.0e}"
    return f"{v:.3g}"


def chart_svg(
    name: str, steps: Sequence[float], values: Sequence[float], width: int = 300, height: int = 170
) -> str:
    """One small line chart: raw values faint, their moving average bold."""
    left, right, top, bottom = 44, 8, 18, 22
    pw, ph = width - left - right, height - top - bottom
    finite = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="10">',
        f'<text x="{left}" y="12" font-weight="bold">{html.escape(name)}</text>',
    ]
    if not finite:
        parts.append(f'<text x="{left}" y="{top + ph / 2}">no data</text></svg>')
        return "".join(parts)
    xs, ys = zip(*finite, strict=True)
    avg = smooth(ys, max(1, len(ys) // 50))
    x0, x1 = min(xs), max(xs)
    lo, hi = min(ys), max(ys)
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi), 1e-30):  # constant: a band around it
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0 or 1) * pw

    def py(y: float) -> float:
        return top + (hi - y) / (hi - lo) * ph

    for t in _ticks(lo, hi):
        y = py(t)
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{_fmt(t)}</text>'
        )
    for t in _ticks(x0, x1, 3):
        x = px(t)
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 14}" text-anchor="middle">{int(t)}</text>')
    parts.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>'
    )
    for series, style in (
        (ys, 'stroke="#9bc" stroke-width="0.8"'),
        (avg, 'stroke="#137" stroke-width="1.6"'),
    ):
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in _thin(xs, series, pw * 2))
        parts.append(f'<polyline fill="none" {style} points="{pts}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _thin(xs: Sequence[float], ys: Sequence[float], most: float) -> list[tuple[float, float]]:
    stride = max(1, int(len(xs) / most))
    pts = list(zip(xs[::stride], ys[::stride], strict=True))
    if pts[-1] != (xs[-1], ys[-1]):
        pts.append((xs[-1], ys[-1]))
    return pts


def curves_svg(records: Sequence[dict[str, Any]], keys: Sequence[str], columns: int = 3) -> str:
    """Small multiples, one chart per key, in one SVG."""
    width, height = 300, 170
    steps = [float(r["step"]) for r in records]
    charts = []
    for key in keys:
        vals = [
            float(r[key]) if isinstance(r.get(key), (int, float)) else math.nan for r in records
        ]
        charts.append(chart_svg(key, steps, vals, width, height))
    rows = math.ceil(len(charts) / columns) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{columns * width}" '
        f'height="{rows * height}">'
    ]
    for i, chart in enumerate(charts):
        x, y = (i % columns) * width, (i // columns) * height
        out.append(f'<g transform="translate({x},{y})">{chart}</g>')
    out.append("</svg>")
    return "".join(out)


def metric_keys(records: Sequence[dict[str, Any]], losses: Sequence[str]) -> list[str]:
    present = {k for r in records for k in r}
    return [k for k in (*losses, "kid", "lr", "sec_per_step") if k in present]


# -- report.html ------------------------------------------------------------------------

#: The sample grids styler writes (other files in samples/ are the user's).
SAMPLE_NAME = re.compile(r"step_([0-9]{7,12})\.png")


def sample_name(step: int) -> str:
    """The file name of the sample grid after ``step`` steps."""
    return f"step_{step:07d}.png"


def _names(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(folder)]
    except OSError:
        return []


def summary(config: TrainConfig, step: int, device: str, seconds: float) -> dict[str, Any]:
    """The table at the top of report.html."""
    mode = config.mode.summary(config)
    return {
        "mode": config.mode.name,
        "data": mode["data"],
        "generator": mode["generator"],
        "discriminator": mode["discriminator"],
        "size": mode["size"],
        "loss": config.gan_loss,
        "steps": f"{step} of {config.steps}",
        "batch size": config.batch_size,
        "precision": f"{config.precision} on {device}",
        "training time": f"{seconds / 3600:.2f} h",
    }


def write_report(
    run_dir: Path,
    *,
    title: str,
    losses: Sequence[str],
    summary: dict[str, Any],
    models: Sequence[Path] = (),
) -> Path:
    """(Re)write ``curves.svg`` and ``report.html`` from what is in the run folder."""
    records = read_metrics(run_dir / "metrics.jsonl")
    keys = metric_keys(records, losses)
    svg = curves_svg(records, keys)
    atomic_write_bytes(run_dir / "curves.svg", svg.encode("utf-8", "backslashreplace"))
    samples = sorted(
        (int(m.group(1)), m.group(0))
        for m in map(SAMPLE_NAME.fullmatch, _names(run_dir / "samples"))
        if m is not None
    )
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    model_list = "".join(
        f'<li><a href="{html.escape(p.name)}">{html.escape(p.name)}</a></li>' for p in models
    )
    grids = "".join(
        f"<figure><figcaption>step {step}</figcaption>"
        f'<img src="samples/{name}" loading="lazy"></figure>'
        for step, name in reversed(samples)
    )
    last = records[-1] if records else {}
    latest = " · ".join(f"{k} {last[k]:.4g}" for k in losses if isinstance(last.get(k), float))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ text-align: left; padding: 2px 10px; border-bottom: 1px solid #eee; font-size: 14px; }}
figure {{ margin: 0 0 1.2em 0; }} figcaption {{ font-weight: bold; margin-bottom: 4px; }}
img {{ max-width: 100%; image-rendering: pixelated; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{rows}</table>
<p>{html.escape(latest)}</p>
{"<h2>Models</h2><ul>" + model_list + "</ul>" if model_list else ""}
<h2>Curves</h2>
<p>Faint: every step; bold: moving average.</p>
{svg if records else "<p>No steps yet.</p>"}
<h2>Samples (held-out images), newest first</h2>
{grids or "<p>No samples yet.</p>"}
</body></html>
"""
    path = run_dir / "report.html"
    atomic_write_bytes(path, page.encode("utf-8", "backslashreplace"))  # names as Linux allows
    return path
