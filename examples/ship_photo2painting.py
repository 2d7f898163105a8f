"""Turn a photo -> painting training run into the shipped model,
weights/photo2painting.onnx: the run's best checkpoint (by KID while training,
else its latest), its A -> B generator, exported with the name, description
and licence the model card gives.

    python examples/make_corpus.py && python bench/corpus.py build   # data/p2p_split/
    styler train data/p2p_split/train data/p2p_split/paintings \\
        -o runs/photo2painting ...                       # the command in weights/photo2painting.md
    python examples/ship_photo2painting.py runs/photo2painting
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from styler.export import export_onnx
from styler.metadata import ModelMetadata
from styler.training import state
from styler.training.modes import build_trainer
from styler.training.run import BEST

NAME = "photo2painting"
DESCRIPTION = (
    "Photographs to painted landscapes in the style of Battle for Wesnoth's story art "
    "(FastCUT generator trained by styler for an hour of CPU on 40 photos and 18 paintings; "
    "keeps each photo's own colours unless --model-colours)"
)
LICENSE = "GPL-2.0-or-later"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the training run folder")
    parser.add_argument("--output", type=Path, default=Path("weights") / f"{NAME}.onnx")
    parser.add_argument(
        "--colours",
        choices=("keep", "model"),
        default="keep",
        help="what styler apply does with colours by default: the network alone casts "
        "photos in the paintings' green-olive grade (weights/photo2painting.md)",
    )
    args = parser.parse_args()
    best = args.run / "checkpoints" / BEST
    ckpt = state.load(best) if best.exists() else state.latest(args.run / "checkpoints")
    if ckpt is None:
        raise SystemExit(f"{args.run} has no checkpoint")
    trainer = build_trainer(ckpt.config, "cpu")
    state.restore(trainer, ckpt)
    trainer.train(False)
    spec = trainer.exports()[0]
    meta = ModelMetadata(
        network=spec.config,
        name=NAME,
        description=DESCRIPTION,
        license=LICENSE,
        direction=spec.direction,
        domains=("photos", "paintings"),  # whatever the training folders were called
        train_size=ckpt.config.size,
        source=f"styler train run {args.run.name}, step {ckpt.step} ({ckpt.path.name})",
        colours=args.colours,
    )
    info = ckpt.header.get("info", {})
    if "kid" in info:
        meta = dataclasses.replace(meta, extra={"kid_while_training": round(info["kid"], 4)})
    result = export_onnx(spec.net, meta, args.output)
    print(f"{result.path}: step {ckpt.step}, parity error {result.parity_error:.2e}")


if __name__ == "__main__":
    main()
