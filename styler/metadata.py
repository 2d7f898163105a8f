"""The seam between the two halves: what a styler ONNX file says about itself.

The exporter writes one :class:`ModelMetadata` as JSON under the ONNX
``metadata_props`` key ``styler``; the runtime reads it back with
onnxruntime alone. Nothing in a model file is ever executed: this module only
parses and checks JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from styler import strictjson
from styler.errors import BadModelError
from styler.netconfig import (
    GeneratorConfig,
    NoiseGeneratorConfig,
    config_from_dict,
    config_to_dict,
)

#: The ONNX metadata key that holds the JSON document.
METADATA_KEY = "styler"
#: Bump when a reader of the old format could misread the new one.
FORMAT_VERSION = 1

#: Names of the optional instance-norm statistics inputs and output.
STATS_INPUT = "norm_stats"
STATS_WEIGHT_INPUT = "norm_stats_weight"
STATS_OUTPUT = "norm_stats_out"

#: translate: image in, image out (pix2pix, CycleGAN); generate: noise (and a
#: class) in, image out (GAN, DCGAN, ACGAN).
Task = Literal["translate", "generate"]
TASK_KINDS: dict[str, tuple[str, ...]] = {
    "translate": ("resnet", "unet"),
    "generate": ("mlp", "dcgan"),
}
#: Input names of generation models: noise (N x latent) and class labels (N,).
NOISE_INPUT = "noise"
LABEL_INPUT = "label"
Precision = Literal["fp32", "fp16", "int8"]
#: What ``styler apply`` does with an output's colours unless told: keep the
#: model's ("model"), or the input's chroma under the model's brightness
#: and texture ("keep", :func:`styler.colour.keep_colours`).
Colours = Literal["model", "keep"]
#: Bounds of a sane value_range: pixel values a network works in are [-1, 1],
#: [0, 1] or [0, 255] (65535 for 16-bit data); anything far outside, or a
#: range too narrow to hold 256 levels apart in float32, is a broken file.
VALUE_LIMIT = 65536.0
MIN_VALUE_SPAN = 1e-3


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a runtime needs to use a model, and a person to trust it."""

    network: GeneratorConfig | NoiseGeneratorConfig
    name: str
    description: str = ""
    license: str = "unknown"
    task: Task = "translate"
    #: Translation direction, for example "AtoB" (CycleGAN G_A) or "BtoA".
    direction: str = "AtoB"
    #: Names of the domains, for example ("photo", "painting"), when known.
    domains: tuple[str, str] | None = None
    #: Pixel values the network takes and gives: x in [lo, hi] maps to [0, 255].
    value_range: tuple[float, float] = (-1.0, 1.0)
    #: Crop size the network was trained at, when known.
    train_size: int | None = None
    precision: Precision = "fp32"
    input_name: str = "image"
    output_name: str = "styled"
    styler_version: str = ""
    #: Where the weights came from (training run, imported checkpoint, ...).
    source: str = ""
    #: Length of the packed instance-norm statistics vector the graph accepts
    #: (optional inputs STATS_INPUT and STATS_WEIGHT_INPUT) and returns
    #: (output STATS_OUTPUT), for seamless tiling; 0 when it has none.
    norm_stats: int = 0
    #: Largest difference from the torch model, measured when the file was written.
    parity_error: float | None = None
    created: str = ""
    #: Class names of a class-conditional generation model, in label order.
    classes: tuple[str, ...] | None = None
    #: The colours ``styler apply`` gives by default (``--keep-colours`` and
    #: ``--model-colours`` choose); a model whose palette casts photos says "keep".
    colours: Colours = "model"
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.network.preset

    @property
    def in_channels(self) -> int:
        return getattr(self.network, "in_channels", 0)

    @property
    def out_channels(self) -> int:
        return self.network.out_channels

    @property
    def size_multiple(self) -> int:
        return getattr(self.network, "size_multiple", 1)

    @property
    def min_side(self) -> int:
        """The shortest side styler gives the model: a ResNet's reflection
        pads need at least 2 pixels after its two downsamplings, so images
        thinner than twice its size multiple (1 x N, 3 x 3, ...) are padded
        further; other networks take their size multiple."""
        multiple = self.size_multiple
        return 2 * multiple if getattr(self.network, "kind", "") == "resnet" else multiple

    @property
    def latent_dim(self) -> int:
        return getattr(self.network, "latent_dim", 0)

    @property
    def num_classes(self) -> int:
        return getattr(self.network, "num_classes", 0)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["network"] = config_to_dict(self.network)
        # Derived facts are written too, so that other tools need not derive them.
        data["architecture"] = self.architecture
        data["in_channels"] = self.in_channels
        data["out_channels"] = self.out_channels
        data["size_multiple"] = self.size_multiple
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        try:
            data = strictjson.loads(text)
        except ValueError as exc:
            raise BadModelError(f"styler metadata is not valid JSON ({exc})") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> ModelMetadata:
        if not isinstance(data, dict):
            raise BadModelError("styler metadata must be a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BadModelError("styler metadata has no format_version")
        if version < 1:
            raise BadModelError(
                f"styler metadata has format_version {version} (versions start at 1)"
            )
        if version > FORMAT_VERSION:
            raise BadModelError(
                f"model format version {version} is newer than this styler understands "
                f"({FORMAT_VERSION}); upgrade styler"
            )
        data = dict(data)
        for derived in ("architecture", "in_channels", "out_channels", "size_multiple"):
            data.pop(derived, None)
        if "network" not in data:
            raise BadModelError("styler metadata has no network config")
        network = config_from_dict(data.pop("network"))
        task = data.get("task", "translate")
        if not isinstance(task, str) or task not in TASK_KINDS:
            raise BadModelError(f"unknown model task {task!r}")
        if network.kind not in TASK_KINDS[task]:
            raise BadModelError(f"network kind {network.kind!r} is not a generator for {task}")
        channels = [network.out_channels] + ([network.in_channels] if task == "translate" else [])
        if any(c not in (1, 3) for c in channels):
            raise BadModelError("images in and out must have 1 (grey) or 3 (RGB) channels")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        # Unknown keys from a newer minor writer are kept, not rejected.
        extra = data.pop("extra", None) or {}
        if not isinstance(extra, dict):
            raise BadModelError("styler metadata field 'extra' must be an object")
        extra = dict(extra)
        extra.update({k: data.pop(k) for k in unknown})
        _check_types(data)
        for key in ("value_range", "domains", "classes"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        meta = cls(network=network, extra=extra, **data)
        if meta.classes is not None and len(meta.classes) != meta.num_classes:
            raise BadModelError(
                f"{len(meta.classes)} class names for a generator of {meta.num_classes} classes"
            )
        return meta


_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "description": (str,),
    "license": (str,),
    "task": (str,),
    "direction": (str,),
    "domains": (list, tuple, type(None)),
    "value_range": (list, tuple),
    "train_size": (int, type(None)),
    "precision": (str,),
    "input_name": (str,),
    "output_name": (str,),
    "styler_version": (str,),
    "source": (str,),
    "parity_error": (float, int, type(None)),
    "norm_stats": (int,),
    "created": (str,),
    "classes": (list, tuple, type(None)),
    "colours": (str,),
    "format_version": (int,),
}


def _check_types(data: dict[str, Any]) -> None:
    for key, types in _TYPES.items():
        value = data.get(key)
        if key in data and (
            not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        ):
            raise BadModelError(f"styler metadata field {key!r} has the wrong type")
    for key in ("train_size", "norm_stats"):
        if not 0 <= (data.get(key) or 0) <= 1 << 20:
            raise BadModelError(f"styler metadata field {key!r} is out of range")
    if "name" not in data:
        raise BadModelError("styler metadata has no name")
    if data.get("precision", "fp32") not in ("fp32", "fp16", "int8"):
        raise BadModelError(f"unknown precision {data['precision']!r}")
    if data.get("colours", "model") not in ("model", "keep"):
        raise BadModelError(f"unknown colours {data['colours']!r}: expected model or keep")
    lo_hi = data.get("value_range", (-1.0, 1.0))
    if (
        len(lo_hi) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo_hi)
        or not all(math.isfinite(v) and abs(v) <= VALUE_LIMIT for v in lo_hi)
        or not lo_hi[1] - lo_hi[0] >= MIN_VALUE_SPAN
    ):
        raise BadModelError(
            f"value_range must be [low, high], finite, within +-{VALUE_LIMIT:g} and at "
            f"least {MIN_VALUE_SPAN:g} apart; got {lo_hi!r}"
        )
    domains = data.get("domains")
    if domains is not None and (len(domains) != 2 or not all(isinstance(d, str) for d in domains)):
        raise BadModelError("domains must be two names")
    classes = data.get("classes")
    if classes is not None and not all(isinstance(c, str) for c in classes):
        raise BadModelError("classes must be names")
