"""A trained generator as the transfer pipeline sees it: a numpy batch -> batch callable.

:class:`TorchGenerator` wraps a torch network; :func:`load_transfer_generator` builds one from
a checkpoint. The slide and tile pipelines (:mod:`histolib_train.transfer.slide`,
:mod:`histolib_train.transfer.images`) take any :data:`GeneratorFn`, so tests and benchmarks
can pass plain numpy functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ConfigError
from histolib.slide.blend import blend_weights

GeneratorFn = Callable[[np.ndarray], np.ndarray]
"""A generator as the pipeline sees it: ``(N, H, W, 3)`` uint8 RGB in, same shape out."""


def check_window_options(*, tile_size: int, overlap: int, batch_size: int) -> None:
    """Check the window side (a multiple of 4, the generator's stride), overlap and batch size.

    Raises
    ------
    ConfigError
        Naming the option.
    """
    if tile_size % 4 or tile_size < 16:
        raise ConfigError(f"--tile-size must be a multiple of 4 and >= 16, got {tile_size}")
    blend_weights(tile_size, overlap)  # validates the overlap
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")


class TorchGenerator:
    """Wrap a torch image-to-image network as a numpy ``uint8`` batch -> ``uint8`` batch callable.

    Input RGB is scaled to [-1, 1] (the training convention), sides are reflect-padded to a
    multiple of 4 and cropped back, inference runs under ``torch.inference_mode`` (and autocast
    when ``amp``: :func:`histolib_train.precision.amp_precision`), and the tanh output is mapped
    back to [0, 255].

    Parameters
    ----------
    module
        The generator (``histolib_train.models.networks.ResnetGenerator``), already on ``device``.
    device
        Where the module lives.
    amp, amp_dtype
        Mixed precision: on CUDA bf16 from compute capability 8.0, else fp16; ``amp_dtype``
        ``bf16`` or ``fp16`` forces one (on the CPU too; ``auto`` on the CPU is float32).
    channels_last
        Feed the module channels-last tensors (and convert it).
    """

    def __init__(
        self,
        module: Any,
        *,
        device: Any = "cpu",
        amp: bool = True,
        amp_dtype: str = "auto",
        channels_last: bool = False,
    ) -> None:
        import torch

        from histolib_train.precision import amp_precision

        self.module = module
        self.device = torch.device(device)
        self.precision = amp_precision(self.device, amp=amp, amp_dtype=amp_dtype, training=False)
        self.amp = self.precision.enabled
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected an (N, H, W, 3) uint8 batch, got {batch.shape}")
        x = torch.from_numpy(np.require(batch, requirements=["C", "W"]))
        return self.run_tensor(x.to(self.device)).cpu().numpy()

    def run_tensor(self, batch: Any) -> Any:
        """The generator on a ``uint8 (N, H, W, 3)`` tensor on :attr:`device`; the result is a
        ``uint8 (N, H, W, 3)`` tensor on the device (nothing waits for the host)."""
        import torch
        import torch.nn.functional as F

        _, height, width, _ = batch.shape
        pad_h, pad_w = (-height) % 4, (-width) % 4
        with torch.inference_mode():
            x = batch.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            if pad_h or pad_w:
                mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
                x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.precision.autocast():
                y = self.module(x)
            y = y[:, :, :height, :width].float()
            y = y.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
            return y.permute(0, 2, 3, 1).contiguous()


def load_transfer_generator(
    checkpoint: str | Path,
    *,
    direction: str = "he2ihc",
    device: str = "auto",
    amp: bool = True,
    amp_dtype: str = "auto",
    channels_last: bool = False,
) -> tuple[TorchGenerator, dict[str, Any]]:
    """Load a checkpoint's generator as a :class:`TorchGenerator` and return its config.

    Parameters
    ----------
    checkpoint
        A checkpoint file or a run folder (its ``checkpoints/latest.pt``).
    direction
        ``he2ihc`` or ``ihc2he``.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:func:`histolib_train.device.resolve_device`).
    amp, amp_dtype, channels_last
        As :class:`TorchGenerator`.

    Raises
    ------
    CheckpointError
        For a corrupt checkpoint or one of another kind (from ``load_generator``).
    ConfigError
        For an unknown or unavailable device, or a bad direction.
    """
    from histolib_train.checkpoint import load_generator
    from histolib_train.device import resolve_device

    torch_device = resolve_device(device)
    module, config = load_generator(checkpoint, direction=direction, device=torch_device)
    generator = TorchGenerator(
        module, device=torch_device, amp=amp, amp_dtype=amp_dtype, channels_last=channels_last
    )
    return generator, config
