"""What a training config may hold: the type of every field and the bounds of
every size, checked for flags and for configs read back from a run folder
alike (``config.json``, a checkpoint's header), so that neither a typo nor a
forged file can make a run allocate without end, crash deep inside PyTorch,
or name a file outside its run folder.

The bounds are far beyond any run styler is for (the published CycleGAN
trains 256-pixel crops, batch 1, ngf 64) and low enough that what they allow
is at least worth trying. This module imports torch only to count the
parameters of a network (built on PyTorch's ``meta`` device, which allocates
nothing).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from styler.errors import BadModelError, UsageError
from styler.netconfig import LIMITS, config_from_dict, config_to_dict

#: Largest crop: the largest network input ``netconfig`` accepts.
MAX_SIZE = LIMITS["size"]
#: Images are scaled to this shorter side before cropping: twice the largest
#: crop leaves room for any random crop.
MAX_LOAD_SIZE = 2 * MAX_SIZE
#: Largest batch; and at most this many pixels of crops in one batch (2**28:
#: 3 GB of float32 RGB before any network has run: batch 1024 at 512 px,
#: batch 16 at 4096 px).
MAX_BATCH = 1024
MAX_BATCH_PIXELS = 2**28
#: The first layer of a network keeps batch x pixels x width activations for
#: the backward pass, a lower bound on what a step needs (2**34 floats: 64 GB).
MAX_FIRST_ACTIVATIONS = 2**34
#: CycleGAN's image pools hold this many past fakes at most (the reference
#: holds 50), and at most this many pixels of them (4 GB of float32 RGB each).
MAX_POOL = 1000
MAX_POOL_PIXELS = 2**30
#: Parameters of one network: 2**30 is 4 GB of float32 weights, 16 GB with
#: their gradients and Adam's two moments (resnet_9blocks has 11 million,
#: unet_256 54 million).
MAX_PARAMETERS = 2**30
#: A billion steps is decades of training at a step a second.
MAX_STEPS = 10**9
#: torch seeds a generator with a 64-bit number; the networks use
#: ``seed + i``, so seeds stay well inside it.
MAX_SEED = 10**18
#: Domain names make file names (``<a>_to_<b>.fp16.onnx``, the run folder
#: ``<a>_to_<b>-N``): letters, digits, ``-`` and ``_`` only, of at most this
#: many bytes in UTF-8, so that two of them and the rest fit the 255 bytes of
#: a file name (folder names give at most :data:`DOMAIN_FROM_FOLDER`).
MAX_DOMAIN_BYTES = 120
#: Bytes of a domain name made from a folder's name (a cut one keeps room
#: for the ``_A``/``_B`` of two folders of the same name).
DOMAIN_FROM_FOLDER = 100


def check_fields(obj: Any) -> None:
    """Refuse a field of the dataclass ``obj`` whose value is not of the type
    of its default (an int where a float is expected is fine; a bool is not
    a number; a tuple holds strings; ``None`` as default allows a string)."""
    for f in dataclasses.fields(obj):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            continue  # the mode and the networks: checked by their own code
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        value = getattr(obj, f.name)
        if not _same_type(value, default):
            raise UsageError(f"{f.name} must be {_kind(default)}, got {_short(value)}")


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or default is None:
        return isinstance(value, bool) if default is not None else isinstance(value, str | None)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, tuple):
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    return isinstance(value, type(default))


def _kind(default: Any) -> str:
    names = {bool: "true or false", float: "a number", int: "a whole number", str: "a string"}
    if default is None:
        return "a string or null"
    if isinstance(default, tuple):
        return "a list of strings"
    return names.get(type(default), f"a {type(default).__name__}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_weights(obj: Any) -> None:
    """Every number field of the dataclass ``obj`` (loss weights): finite, >= 0."""
    for f in dataclasses.fields(obj):
        if isinstance(f.default, float):
            check_number(f"--{f.name.replace('_', '-')}", getattr(obj, f.name), 0.0)


def check_number(flag: str, value: float, low: float, high: float = math.inf) -> None:
    """Refuse ``value`` unless it is finite and in ``low..high``."""
    if not (math.isfinite(value) and low <= value <= high):
        bounds = f"at least {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
        raise UsageError(f"{flag} must be a number {bounds}, got {_short(value)}")


def check_count(flag: str, value: int, low: int, high: int) -> None:
    """Refuse the whole number ``value`` unless it is in ``low..high``."""
    if not low <= value <= high:
        raise UsageError(f"{flag} must be from {low} to {high}, got {_short(value)}")


def check_sizes(config: Any) -> None:
    """The shared sizes of a TrainConfig: crops, batch, run length, seed, optimiser."""
    check_count("--size", config.size, 1, MAX_SIZE)
    check_count("--load-size", config.load_size, 1, MAX_LOAD_SIZE)
    check_count("--batch-size", config.batch_size, 1, MAX_BATCH)
    if config.batch_size * config.size**2 > MAX_BATCH_PIXELS:
        raise UsageError(
            f"--batch-size {config.batch_size} of {config.size} px crops is more than "
            f"{MAX_BATCH_PIXELS:,} pixels a batch: lower one of them"
        )
    check_count("--steps", config.steps, 1, MAX_STEPS)
    check_seed(config.seed)
    check_number("--lr", config.lr, 0.0)
    if config.lr == 0:
        raise UsageError(f"--lr must be positive, got {config.lr}")
    check_number("--beta1", config.beta1, 0.0, 0.999999)
    check_number("beta2", config.beta2, 0.0, 0.999999)
    check_number("lambda_gp", config.lambda_gp, 0.0)
    check_number("init_gain", config.init_gain, 0.0)
    check_count("version", config.version, 0, 2**31)


def check_seed(seed: int) -> None:
    if not -MAX_SEED <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be a whole number of at most 18 digits, got {_short(seed)}")


def check_domains(domains: tuple[str, ...]) -> None:
    """Two short names of letters, digits, ``-`` and ``_`` (they name files)."""
    if len(domains) != 2:
        raise UsageError(f"domains must be two names, got {len(domains)}")
    for name in domains:
        if not safe_name(name):
            raise UsageError(
                f"domain name {_short(name)} is not 1 to {MAX_DOMAIN_BYTES} bytes of letters, "
                "digits, - or _ (not starting with -)"
            )


def safe_name(name: str) -> bool:
    """Whether ``name`` is a file name made of safe characters only, short
    enough in bytes to name a model file (see :data:`MAX_DOMAIN_BYTES`)."""
    return (
        0 < len(name.encode("utf-8", "surrogatepass")) <= MAX_DOMAIN_BYTES
        and name[0] not in "-."
        and all((c.isalnum() and c.isprintable()) or c in "-_" for c in name)
    )


def check_network(what: str, net: Any, config: Any) -> None:
    """A network config within ``netconfig``'s bounds, of a size that fits
    memory, whose first layer fits a batch of crops."""
    try:
        config_from_dict(config_to_dict(net))
    except BadModelError as exc:
        raise UsageError(f"the {what}: {exc.reason}") from None
    width = getattr(net, "ngf", getattr(net, "ndf", 1))
    if config.batch_size * config.size**2 * width > MAX_FIRST_ACTIVATIONS:
        raise UsageError(
            f"the {what} (width {width}) on batches of {config.batch_size} crops of "
            f"{config.size} px needs more than {4 * MAX_FIRST_ACTIVATIONS / 2**30:.0f} GB for its "
            "first layer alone: lower --batch-size, --size, --ngf or --ndf"
        )
    count = parameter_count(net)
    if count > MAX_PARAMETERS:
        raise UsageError(
            f"the {what} ({net.preset}) would have {count:,} parameters, more than "
            f"{MAX_PARAMETERS:,}: lower its width or depth"
        )


def parameter_count(net: Any) -> int:
    """Parameters of the network ``net`` describes, counted on the meta device."""
    import torch

    from styler import zoo

    with torch.device("meta"):
        return zoo.count_parameters(zoo.build(net, init=None))
