"""CycleGAN's image pool: discriminators see a mix of current and past fakes
(Shrivastava et al. 2017), which damps the oscillation of GAN training."""

from __future__ import annotations

import torch


class ImagePool:
    """Up to ``size`` past fakes. Each query stores the new images and returns,
    per image, either it or (with probability 1/2, once full) a random stored
    one, which the new image then replaces."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
                continue
            coin, pick = torch.rand(2, generator=generator).tolist()
            if coin > 0.5:
                i = min(int(pick * self.size), self.size - 1)
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state(self) -> torch.Tensor | None:
        """The stored images as one tensor (None when empty), for checkpoints."""
        return torch.cat(self.images, 0).cpu() if self.images else None

    def load(
        self, images: torch.Tensor | None, device: torch.device | str, shape: tuple[int, ...]
    ) -> None:
        """Put back the images of :meth:`state`, each of ``shape`` (C, H, W)."""
        if images is not None and (
            tuple(images.shape[1:]) != shape
            or not images.is_floating_point()
            or not bool(torch.isfinite(images).all())
        ):
            raise ValueError(f"checkpoint pool of shape {list(images.shape)}, not (N, *{shape})")
        if images is not None and len(images) > self.size:
            raise ValueError(f"checkpoint pool holds {len(images)} images, size {self.size}")
        self.images = [] if images is None else [x.unsqueeze(0).to(device) for x in images]
