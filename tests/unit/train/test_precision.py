"""The GPU paths run on the CPU: the precision decision, bf16 / fp16 autocast, loss scaling,
channels_last, CPU-only checkpoints, tolerant CUDA RNG restore, SSIM in full precision."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from histolib.errors import ConfigError  # noqa: E402
from histolib_train import checkpoint as ckpt  # noqa: E402
from histolib_train.models import conditional as cond  # noqa: E402
from histolib_train.models.networks import ResnetGenerator  # noqa: E402
from histolib_train.precision import amp_precision  # noqa: E402
from histolib_train.training.config import resolve_config  # noqa: E402
from histolib_train.training.trainer import CycleGANTrainer  # noqa: E402
from histolib_train.transfer.generator import TorchGenerator  # noqa: E402

pytestmark = pytest.mark.torch

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


# -------------------------------------------------------------------------------------------
# The decision


def test_bf16_from_compute_capability_8_and_fp16_with_scaling_below(monkeypatch) -> None:
    # is_bf16_supported() says True on every GPU: the decision must not ask it.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("asked"))
    for capability in ((8, 0), (9, 0), (12, 0)):
        p = amp_precision(CUDA, amp=True, capability=capability)
        assert (p.dtype, p.scaler) == (torch.bfloat16, False)
    for capability in ((7, 0), (7, 5), (6, 1)):
        p = amp_precision(CUDA, amp=True, capability=capability)
        assert (p.dtype, p.scaler) == (torch.float16, True)
        assert "7" in p.describe() or "6" in p.describe()
        # Inference needs no loss scaling.
        assert not amp_precision(CUDA, amp=True, capability=capability, training=False).scaler


def test_user_choice_wins_and_is_noted_where_bf16_is_emulated() -> None:
    p = amp_precision(CUDA, amp=True, amp_dtype="fp16", capability=(9, 0))
    assert (p.dtype, p.scaler) == (torch.float16, True)
    p = amp_precision(CUDA, amp=True, amp_dtype="bf16", capability=(7, 5))
    assert p.dtype == torch.bfloat16 and "emulated" in p.describe()
    assert not amp_precision(CUDA, amp=False, amp_dtype="bf16", capability=(9, 0)).enabled
    with pytest.raises(ConfigError, match="--amp-dtype"):
        amp_precision(CPU, amp=True, amp_dtype="fp8")
    with pytest.raises(ConfigError, match="--amp-dtype"):
        resolve_config({"amp_dtype": "half"})


def test_cpu_is_float32_unless_a_dtype_is_asked_for() -> None:
    assert not amp_precision(CPU, amp=True).enabled
    assert amp_precision(CPU, amp=True, amp_dtype="bf16").dtype == torch.bfloat16
    p = amp_precision(CPU, amp=True, amp_dtype="fp16")
    assert (p.dtype, p.scaler) == (torch.float16, True)


# -------------------------------------------------------------------------------------------
# Training branches on the CPU


def _batch(gen: torch.Generator, size: int = 64) -> dict[str, torch.Tensor]:
    image = torch.rand(2, 3, size, size, generator=gen) * 2 - 1
    class_map = torch.zeros(2, 2, size, size)
    boxes = torch.tensor([[0, 2.0, 2.0, 18.0, 18.0], [1, 8.0, 8.0, 24.0, 24.0]])
    class_map[0, 0, 2:18, 2:18] = 1
    class_map[1, 1, 8:24, 8:24] = 1
    return {"image": image, "class_map": class_map, "boxes": boxes}


def _trainer(**kwargs) -> CycleGANTrainer:
    cfg = resolve_config(
        {"model": "roi", "n_blocks": 1, "ngf": 4, "ndf": 4, "seed": 0, "buffer_size": 2}
    )
    return CycleGANTrainer(cfg, device=CPU, total_steps=20, **kwargs)


@pytest.mark.parametrize(
    ("amp_dtype", "channels_last"), [("bf16", False), ("fp16", False), ("bf16", True)]
)
# fp16: a step the loss scaler skips (an overflow) steps the schedulers but not the optimisers.
@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_autocast_and_channels_last_train_on_the_cpu(amp_dtype, channels_last) -> None:
    trainer = _trainer(amp=True, amp_dtype=amp_dtype, channels_last=channels_last)
    dtype = torch.bfloat16 if amp_dtype == "bf16" else torch.float16
    assert trainer.precision.dtype == dtype
    assert trainer.scaler.is_enabled() == (amp_dtype == "fp16")
    if channels_last:
        conv = trainer.nets["G_he2ihc"].model[1]
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    before = [p.detach().clone() for p in trainer.nets["G_he2ihc"].parameters()]
    # fp16: the loss scaler starts at 2^16 and halves on each overflow, skipping that step.
    for _ in range(12):
        losses = trainer.train_step(_batch(gen), _batch(gen))
        assert all(math.isfinite(float(v)) for v in losses.values()), losses
        after = list(trainer.nets["G_he2ihc"].parameters())
        if any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)):
            break
    else:
        pytest.fail("the generator never changed")
    assert trainer.fake_b.dtype == dtype  # the generators really ran under autocast


def test_channels_last_is_off_by_default() -> None:
    trainer = _trainer()
    assert not trainer.channels_last and not trainer.precision.enabled
    assert resolve_config({}).channels_last is False


# -------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoint_holds_no_cuda_state_and_old_ones_restore_tolerantly(monkeypatch) -> None:
    state = _trainer().state_dict()
    assert "cuda" not in state["rng"]
    restored: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, index: restored.append(index))
    # Saved with two GPUs visible, resumed with one: no IndexError, the one present restored.
    old = {"torch": torch.get_rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2}
    ckpt.set_rng_state(old)
    assert restored == [0]


class _OnAnotherDevice(torch.Tensor):
    """A tensor that says it lives on a GPU (as a CUDA tensor would, in a checkpoint)."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)

    def cpu(self, *args, **kwargs) -> torch.Tensor:  # type: ignore[override]
        return self.as_subclass(torch.Tensor).clone()


def test_checkpoints_are_written_with_cpu_tensors(tmp_path: Path) -> None:
    def gpu(t: torch.Tensor) -> torch.Tensor:
        return torch.Tensor._make_subclass(_OnAnotherDevice, t)

    net = ResnetGenerator(n_blocks=1, ngf=4)
    state = {
        "format": ckpt.FORMAT,
        "nets": {"G": {k: gpu(v) for k, v in net.state_dict().items()}},
        "replay": [gpu(torch.ones(2))],
        "rng": {"torch": torch.get_rng_state()},
    }
    # Without moving them, the safe unpickler refuses such tensors.
    raw = io.BytesIO()
    torch.save(state, raw)
    raw.seek(0)
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        torch.load(raw, weights_only=True)
    path = ckpt.save_checkpoint(state, tmp_path / "c.pt")
    loaded = torch.load(path, weights_only=True)  # no map_location: as on a CPU-only machine

    def tensors(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from tensors(item)
        elif isinstance(value, list | tuple):
            for item in value:
                yield from tensors(item)

    found = list(tensors(loaded))
    assert len(found) == len(net.state_dict()) + 2
    assert all(type(t) is torch.Tensor and t.device.type == "cpu" for t in found)
    ResnetGenerator(n_blocks=1, ngf=4).load_state_dict(loaded["nets"]["G"])


# -------------------------------------------------------------------------------------------
# Transfer's autocast path and SSIM


@pytest.mark.parametrize(("amp_dtype", "channels_last"), [("bf16", False), ("auto", True)])
def test_transfer_autocast_and_channels_last_on_the_cpu(amp_dtype, channels_last) -> None:
    torch.manual_seed(0)
    net = ResnetGenerator(n_blocks=1, ngf=8).eval()
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(2, 60, 60, 3), dtype=np.uint8)
    reference = TorchGenerator(net, amp=False)(batch)
    fast = TorchGenerator(net, amp=True, amp_dtype=amp_dtype, channels_last=channels_last)
    assert fast.precision.enabled == (amp_dtype == "bf16")
    out = fast(batch)
    assert out.shape == batch.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - reference).mean()
    assert diff < (4 if amp_dtype == "bf16" else 0.5), diff


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM in float64 with numpy / scipy: 11 x 11 Gaussian (sigma 1.5), valid windows."""
    from scipy.signal import correlate2d

    coords = np.arange(11) - 5.0
    g = np.exp(-(coords**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    x, y = x.astype(np.float64), y.astype(np.float64)

    def f(a: np.ndarray) -> np.ndarray:
        return correlate2d(a, w, mode="valid")

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    return float((num / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def test_ssim_is_computed_in_float64_even_under_autocast(monkeypatch) -> None:
    """On a smooth, bright tile E[x^2] - mu^2 cancels: in bf16 (or TF32) 1 - SSIM is far off."""
    yy, xx = np.mgrid[:64, :64] / 64.0
    smooth = (0.8 + 0.05 * np.sin(2 * np.pi * xx) * np.cos(2 * np.pi * yy)).astype(np.float32)
    other = (smooth + 0.01 * np.cos(4 * np.pi * xx)).astype(np.float32)
    expected = 1 - _ssim_reference(smooth, other)
    x, y = torch.from_numpy(smooth)[None, None], torch.from_numpy(other)[None, None]
    dtypes: list[torch.dtype] = []
    conv2d = cond.F.conv2d

    def spy(inp, weight, *args, **kwargs):
        dtypes.append(inp.dtype)
        return conv2d(inp, weight, *args, **kwargs)

    monkeypatch.setattr(cond.F, "conv2d", spy)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = cond.ssim(x, y)
    assert dtypes and set(dtypes) == {torch.float64}
    assert got.dtype == torch.float32
    assert abs((1 - float(got)) - expected) < 1e-4 * expected


# -------------------------------------------------------------------------------------------
# TF32: off for float32 on CUDA unless --tf32


@pytest.fixture
def tf32_flags():
    """Restore the process's TF32 and cuDNN flags after a test that sets them."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])
    torch.backends.cudnn.benchmark = saved[3]


def _tf32_state() -> tuple[bool, bool, str]:
    return (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )


def test_set_tf32_turns_it_off_on_cuda_and_leaves_the_cpu_alone(tf32_flags) -> None:
    from histolib_train.precision import set_tf32

    torch.backends.cudnn.allow_tf32 = True  # the cuDNN default
    assert set_tf32(CUDA, allow=False) is False
    assert _tf32_state() == (False, False, "highest")
    assert set_tf32("cuda:0", allow=True) is True
    assert _tf32_state() == (True, True, "high")
    assert set_tf32(CPU, allow=False) is False
    assert _tf32_state() == (True, True, "high")  # untouched off CUDA


@pytest.mark.parametrize("tf32", [False, True])
def test_training_on_cuda_sets_tf32_from_the_option(
    tf32_flags, monkeypatch: pytest.MonkeyPatch, tf32: bool
) -> None:
    from histolib_train.training import loop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    torch.backends.cudnn.allow_tf32 = not tf32
    torch.backends.cuda.matmul.allow_tf32 = not tf32
    cfg = resolve_config({"device": "cuda", "tf32": tf32})
    messages: list[str] = []
    assert loop._device(cfg, messages.append) == CUDA
    expected = (tf32, tf32, "high" if tf32 else "highest")
    assert _tf32_state() == expected
    assert any(m.startswith("TF32 on" if tf32 else "TF32 off") for m in messages)
    assert cfg.to_dict()["tf32"] is tf32  # recorded in config.yaml and the checkpoints


def test_evaluate_runs_float32_without_tf32(synthetic, tmp_path: Path, monkeypatch) -> None:
    import histolib_train.precision as precision_module
    from histolib_train.evaluation import evaluator as run_module
    from histolib_train.evaluation.options import EvaluateOptions
    from tests.helpers_transfer import tiny_checkpoint, write_eval_folders

    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        precision_module, "set_tf32", lambda device, *, allow: calls.append((device, allow))
    )
    _, tiles, _, _ = synthetic
    images, masks = write_eval_folders(tmp_path, tiles[:2])
    checkpoint = tiny_checkpoint(tmp_path / "m.pt")
    options = {"out": tmp_path / "eval", "images": images, "masks": masks}
    run_module.run_evaluation([str(checkpoint)], **options, options=EvaluateOptions(device="cpu"))
    assert calls == [("cpu", False)]
