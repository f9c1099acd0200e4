"""The one place where mixed precision (AMP) and TF32 are decided, for training, evaluation
and transfer alike.

``torch.cuda.is_bf16_supported()`` returns True on every CUDA GPU (emulated bf16 counts), so it
cannot tell a GPU with native bf16 from one without. The decision here goes by compute
capability instead: bf16 autocast from 8.0 (Ampere, Hopper and newer), float16 autocast with
loss scaling (:class:`torch.amp.GradScaler`, training only) below (Volta, Turing: V100, T4).
The user can choose: ``amp_dtype="bf16"`` or ``"fp16"`` is honoured on any device, the CPU
included (torch autocasts on the CPU too, which is how the tests run every branch), with a
note in :meth:`Precision.describe` for bf16 on a GPU that only emulates it. ``"auto"`` on the
CPU means float32.

float32 means float32: :func:`set_tf32` turns TF32 off on CUDA (Ampere and newer GPUs run
cuDNN convolutions in TF32 by default) unless ``--tf32`` asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from histolib.errors import ConfigError

if TYPE_CHECKING:
    import torch

AMP_DTYPES = ("auto", "bf16", "fp16")
BF16_CAPABILITY = (8, 0)
"""Compute capability from which CUDA GPUs run bf16 natively."""


def check_amp_dtype(value: str) -> str:
    """Validate an ``--amp-dtype`` value.

    Raises
    ------
    ConfigError
        For anything but ``auto``, ``bf16`` or ``fp16``.
    """
    if value not in AMP_DTYPES:
        raise ConfigError(f"--amp-dtype must be one of {', '.join(AMP_DTYPES)}, not {value!r}")
    return value


@dataclass(frozen=True)
class Precision:
    """The precision a device runs at: float32, or autocast to ``dtype`` (with loss scaling
    when ``scaler``)."""

    device_type: str
    dtype: torch.dtype | None = None
    scaler: bool = False
    note: str = ""

    @property
    def enabled(self) -> bool:
        """True when autocast is on."""
        return self.dtype is not None

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        import torch

        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> Any:
        """The autocast context (a no-op at float32)."""
        import contextlib

        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        """One line for the log, e.g. ``bf16 autocast (compute capability 9.0)``."""
        text = "float32" if self.dtype is None else f"{self.name} autocast"
        if self.scaler:
            text += " with loss scaling"
        return f"{text} ({self.note})" if self.note else text


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """Compute capability ``(major, minor)`` of a CUDA device."""
    import torch

    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def amp_precision(
    device: torch.device | str,
    *,
    amp: bool,
    amp_dtype: str = "auto",
    training: bool = True,
    capability: tuple[int, int] | None = None,
) -> Precision:
    """Decide the precision of ``device``.

    Parameters
    ----------
    device
        Where the networks run.
    amp
        Mixed precision asked for (``--amp``); False means float32 whatever ``amp_dtype``.
    amp_dtype
        ``auto``: on CUDA bf16 from compute capability 8.0, else fp16; on the CPU float32.
        ``bf16`` / ``fp16``: that dtype on any device.
    training
        fp16 training needs loss scaling (``Precision.scaler``); inference does not.
    capability
        The CUDA compute capability (default: asked of the device; tests pass one).

    Raises
    ------
    ConfigError
        For a bad ``amp_dtype``.
    """
    import torch

    check_amp_dtype(amp_dtype)
    device = torch.device(device)
    if not amp:
        return Precision(device.type)
    if device.type != "cuda":
        if amp_dtype == "auto":
            return Precision(device.type, note="mixed precision is automatic on CUDA only")
        dtype = torch.bfloat16 if amp_dtype == "bf16" else torch.float16
        return Precision(device.type, dtype, scaler=training and dtype == torch.float16)
    major, minor = capability if capability is not None else cuda_capability(device)
    native = (major, minor) >= BF16_CAPABILITY
    note = f"compute capability {major}.{minor}"
    if amp_dtype == "auto":
        amp_dtype = "bf16" if native else "fp16"
    elif amp_dtype == "bf16" and not native:
        note += " < 8.0: bf16 is emulated there, slow; --amp-dtype fp16 runs natively"
    if amp_dtype == "bf16":
        return Precision("cuda", torch.bfloat16, note=note)
    return Precision("cuda", torch.float16, scaler=training, note=note)


def set_tf32(device: torch.device | str, *, allow: bool) -> bool:
    """Decide whether float32 matmuls and convolutions may run in TF32 on a CUDA ``device``.

    On Ampere and newer GPUs cuDNN convolutions run in TF32 by default, so "float32" would be
    TF32. Here, on CUDA, TF32 is off unless ``allow`` (``--tf32``):
    ``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32`` and
    ``torch.set_float32_matmul_precision`` (``highest`` off, ``high`` on) are set for the
    process. Other devices are left as they are (TF32 is a CUDA format).

    Returns
    -------
    bool
        Whether TF32 is allowed on ``device`` after the call (False off CUDA).
    """
    import torch

    if torch.device(device).type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    torch.set_float32_matmul_precision("high" if allow else "highest")
    return allow
