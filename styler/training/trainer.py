"""What every training mode's trainer shares: networks, Adam optimisers,
precision, gradient averaging, and the state a checkpoint must hold.

A mode (``modes/cyclegan.py``, ...) subclasses :class:`Trainer`: it builds
its networks and defines ``train_step``; the loop (``loop.py``) drives it and
knows nothing of GANs.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from styler import zoo
from styler.errors import StylerError
from styler.netconfig import GeneratorConfig, NetConfig, NoiseGeneratorConfig
from styler.training.augment import AugmentPolicy, diff_augment
from styler.training.config import TrainConfig
from styler.training.device import autocast
from styler.training.distributed import DistInfo, average_gradients, broadcast_module
from styler.training.losses import GanLoss


class TrainingError(StylerError):
    """Training cannot go on (for example the losses became NaN)."""


#: What a run that stops on NaN keeps (nothing is saved after the blow-up).
KEPT = "the checkpoints saved before are kept"


@dataclass(frozen=True)
class ExportSpec:
    """A generator to export at the end of a run."""

    name: str
    net: nn.Module
    config: GeneratorConfig | NoiseGeneratorConfig
    direction: str
    domains: tuple[str, str]
    task: str = "translate"
    classes: tuple[str, ...] = ()


def submodule_params(net: nn.Module, names: tuple[str, ...]) -> list[nn.Parameter]:
    """The parameters of those of ``net``'s submodules ``names`` it has."""
    subs = [getattr(net, name, None) for name in names]
    return [p for sub in subs if isinstance(sub, nn.Module) for p in sub.parameters()]


def make_adam(
    groups: list[list[nn.Parameter]], scales: list[float], config: TrainConfig, device: str
) -> torch.optim.Adam:
    """Adam over parameter ``groups``, each at ``config.lr`` times its scale,
    with fused kernels where PyTorch has them, else the foreach ones."""
    params = [{"params": g, "lr": config.lr * s} for g, s in zip(groups, scales, strict=True)]
    betas = (config.beta1, config.beta2)
    try:
        return torch.optim.Adam(params, lr=config.lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=config.lr, betas=betas, foreach=device != "mps")


def set_requires_grad(nets: Iterable[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def batched(net: nn.Module, xs: list[torch.Tensor], together: bool) -> list[torch.Tensor]:
    """``[net(x) for x in xs]``, as one batched call when ``together`` (exact
    only for networks that normalise each image by itself, not with batch
    norm)."""
    if not together or len(xs) == 1:
        return [net(x) for x in xs]
    out = net(torch.cat(xs))
    return list(out.split([len(x) for x in xs]))


def judges_alone(config: object) -> bool:
    """Whether a discriminator judges each image by itself (any norm but
    batch norm; a projected discriminator has none), so that real and fake
    images may go through it in one batched call."""
    return getattr(config, "norm", "none") != "batch"


def pair(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, together: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(net(x), net(y)), as :func:`batched`."""
    a, b = batched(net, [x, y], together)
    return a, b


class Trainer(abc.ABC):
    """Networks ``nets`` (names -> modules), optimisers ``optimizers`` (names
    -> Adam), and one training step."""

    #: Names of the losses ``train_step`` returns, in display order.
    loss_names: tuple[str, ...] = ()

    def __init__(self, config: TrainConfig, device: str, dist: DistInfo) -> None:
        self.config = config
        self.device = torch.device(device)
        self.precision = config.precision
        self.dist = dist
        self.gan = GanLoss(config.gan_loss)
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.groups: dict[str, list[str]] = {}
        #: Each optimiser's learning-rate scale per parameter group.
        self.lr_scales: dict[str, list[float]] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    # -- building ---------------------------------------------------------------

    def build(self, name: str, net_config: NetConfig) -> nn.Module:
        torch.manual_seed(self.config.seed + len(self.nets))
        net = zoo.build(net_config, init=self.config.init, gain=self.config.init_gain)
        net = net.to(self.device)
        broadcast_module(net, self.dist)
        self.nets[name] = net
        return net

    def optimise(
        self, name: str, nets: list[str], faster: list[nn.Parameter] | None = None, scale: float = 1
    ) -> None:
        """One optimiser over ``nets``; the parameters ``faster`` among them
        (if any, and ``scale`` is not 1) in a second group at ``scale`` times
        the learning rate."""
        params = list(itertools.chain.from_iterable(self.nets[n].parameters() for n in nets))
        groups, scales = [params], [1.0]
        if faster and scale != 1:
            fast = {id(p) for p in faster}
            groups, scales = [[p for p in params if id(p) not in fast], list(faster)], [1.0, scale]
        self.optimizers[name] = make_adam(groups, scales, self.config, self.device.type)
        self.lr_scales[name] = scales
        self.groups[name] = nets
        if self.precision == "fp16":
            self.scalers[name] = torch.amp.GradScaler(self.device.type)

    def autocast(self) -> AbstractContextManager[None]:
        return autocast(self.device.type, self.precision)

    def augment(
        self, batches: list[torch.Tensor], generator: torch.Generator
    ) -> list[torch.Tensor]:
        """What a discriminator sees of ``batches`` (real and fake, index by
        index alike): DiffAugment when the run asks for it, else themselves."""
        c = self.config
        policy = AugmentPolicy(translation=c.augment, cutout=c.augment, color=c.augment_color)
        return diff_augment(batches, policy, generator)

    @contextmanager
    def exact(self) -> Iterator[None]:
        """Run the networks in float32, as the exported models will (bf16
        saturates where float32 overflows to NaN)."""
        saved, self.precision = self.precision, "fp32"
        try:
            yield
        finally:
            self.precision = saved

    # -- stepping ---------------------------------------------------------------

    def update(self, name: str, loss: torch.Tensor) -> None:
        """Backward ``loss`` into optimiser ``name``'s networks and step it."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        scaler = self.scalers.get(name)
        (scaler.scale(loss) if scaler else loss).backward()
        params = [p for n in self.groups[name] for p in self.nets[n].parameters()]
        average_gradients(params, self.dist)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def set_lr(self, factor: float) -> None:
        for name, opt in self.optimizers.items():
            for group, scale in zip(opt.param_groups, self.lr_scales[name], strict=True):
                group["lr"] = self.config.lr * factor * scale

    def train(self, mode: bool = True) -> None:
        for net in self.nets.values():
            net.train(mode)

    def check_finite(self, step: int) -> None:
        """Refuse to go on (to sample, score, save or export) with a NaN or
        infinite weight: what was saved before the blow-up is kept."""
        for name, net in self.nets.items():
            for key, value in net.state_dict().items():
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    raise TrainingError(
                        f"the weights became NaN or infinite by step {step} (in {name}.{key}); "
                        f"{KEPT}: train again with a lower --lr, or --precision fp32"
                    )

    @abc.abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One optimisation step of every network; the losses by name."""

    # -- samples and export -----------------------------------------------------

    @abc.abstractmethod
    def sample_rows(self, inputs: dict[str, torch.Tensor]) -> list[tuple[str, list[torch.Tensor]]]:
        """Rows of a sample grid: (label, images (N, C, H, W) per column)."""

    @abc.abstractmethod
    def column_names(self) -> tuple[str, ...]:
        """Titles of the sample grid's columns."""

    @abc.abstractmethod
    def exports(self) -> list[ExportSpec]:
        """The generators to export at the end, with their directions."""

    # -- extra state for checkpoints ---------------------------------------------

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors besides networks and optimisers a resume needs (image pools)."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        del tensors

    def extra_numel(self) -> int:
        """The most numbers :meth:`extra_state` holds (checked in a
        checkpoint's header before its tensors are read)."""
        return 0

    def scaler_state(self) -> dict[str, dict[str, float]]:
        return {k: dict(s.state_dict()) for k, s in self.scalers.items()}

    def load_scaler_state(self, state: dict[str, dict[str, float]]) -> None:
        for k, s in self.scalers.items():
            if k in state:
                s.load_state_dict(state[k])

    @torch.no_grad()
    def run_generator(self, name: str, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.nets[name](x.to(self.device)).float()
