"""The one place a ``--device`` value becomes a ``torch.device``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from histolib.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when one is available, else the CPU.

    ``cpu``, ``cuda`` and ``cuda:N`` are checked and kept.

    Raises
    ------
    ConfigError
        When CUDA is asked for and none is available, or the name is not a device.
    """
    import torch

    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available (use auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name}: {exc}") from None
