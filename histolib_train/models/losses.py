"""Losses and the replay buffer of the CycleGAN family.

Least-squares GAN losses (Mao et al.): the discriminator pushes real scores to 1 and fake
scores to 0, the generator pushes scores of its fakes to 1. Losses are computed in float32
whatever the autocast dtype of the scores.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def lsgan_loss(scores: torch.Tensor, target: float) -> torch.Tensor:
    """Mean squared distance of ``scores`` to ``target`` (1 real, 0 fake)."""
    scores = scores.float()
    return F.mse_loss(scores, torch.full_like(scores, target))


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """LSGAN discriminator loss ``(real + fake) / 2``."""
    return (lsgan_loss(real_scores, 1.0) + lsgan_loss(fake_scores, 0.0)) / 2


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference, in float32 (cycle and identity losses)."""
    return F.l1_loss(output.float(), target.float())


class ReplayBuffer:
    """The history of generated images shown to an image discriminator (Shrivastava et al.).

    Until ``size`` images are stored each new fake is stored and returned; afterwards each new
    fake is, with probability 1/2, swapped for a random stored one (which is returned), or
    returned as is. Its random draws come from its own ``torch.Generator``, so its state is
    saved with :meth:`state_dict` and a resumed run draws the same.
    """

    def __init__(self, size: int = 50, *, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def push_and_pop(self, fakes: torch.Tensor) -> torch.Tensor:
        """Store ``fakes`` (detached) and return a batch of the same size to train on."""
        out = []
        # Stored in float32, so that a run resumed with or without AMP can mix them.
        for image in fakes.detach().float():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=self.generator)) > 0.5:
                i = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """Stored images (a CPU tensor) and the generator state, for checkpoints."""
        images = (
            torch.stack(self.images).cpu()
            if self.images
            else torch.zeros((0,), dtype=torch.float32)
        )
        return {"images": images, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], *, device: torch.device | str) -> None:
        """Restore :meth:`state_dict` output, images moved to ``device``."""
        images = state["images"]
        self.images = [img.to(device) for img in images] if images.ndim == 4 else []
        self.generator.set_state(state["generator"])
