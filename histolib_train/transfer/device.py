"""The device side of slide restaining: host buffers, events, the generator and the blender.

Everything here is torch code that runs on whatever device runs the model (the CPU included,
with the same code path):

- :class:`HostBuffers` is a pool of host buffers (page-locked on CUDA, so that copies to and
  from the device are asynchronous); each buffer carries the :class:`Sync` event of the last
  device work that read or wrote it, and is handed out again only once that work is done.
- :func:`tensor_generator` gives any generator the tensor interface the pipeline runs:
  ``uint8 (N, H, W, 3)`` on the device in, same out (a :class:`TorchGenerator
  <histolib_train.transfer.generator.TorchGenerator>` natively; a numpy function through
  the host).
- :class:`DeviceBlender` is :class:`histolib.slide.blend.StripeBlender` with its stripe
  accumulator on the device: the glass composite and the overlap blending are torch ops, and
  the finished rows come out as a ``uint8`` tensor on the device.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from histolib.slide.blend import blend_weights, window_starts


class Sync:
    """Completion of the device work enqueued before :meth:`record` (a CUDA event on CUDA).

    On the CPU every torch op has finished when it returns, so :meth:`record` notes nothing
    and :meth:`wait` returns at once; the pipeline calls both on every device alike.
    """

    def __init__(self, device: Any) -> None:
        import torch

        self._event = torch.cuda.Event() if device.type == "cuda" else None
        self._device = device
        self.recorded = 0  # how many times recorded / waited (tests check the protocol)
        self.waited = 0

    def record(self) -> None:
        """Mark the work enqueued so far on the current stream."""
        if self._event is not None:
            import torch

            self._event.record(torch.cuda.current_stream(self._device))
        self.recorded += 1

    def wait(self) -> None:
        """Block until the work recorded last has finished."""
        if self._event is not None:
            self._event.synchronize()
        self.waited += 1


@dataclass
class HostBuffer:
    """One host buffer of a :class:`HostBuffers` pool and the event guarding its reuse."""

    tensors: tuple[Any, ...]
    sync: Sync
    index: int


class HostBuffers:
    """A fixed pool of host buffers of given shapes and dtypes, pinned when the device is CUDA.

    :meth:`acquire` blocks until a buffer is free and its last device work has finished;
    :meth:`release` gives it back after recording the event of the device work that uses it.

    Parameters
    ----------
    device
        The torch device the buffers are copied to or from.
    count
        Buffers in the pool.
    specs
        ``(shape, torch dtype)`` of each tensor of a buffer.
    make_sync
        Event factory (tests pass their own to watch the protocol).
    """

    def __init__(
        self,
        device: Any,
        *,
        count: int,
        specs: list[tuple[tuple[int, ...], Any]],
        make_sync: Callable[[Any], Sync] = Sync,
    ) -> None:
        import torch

        pinned = device.type == "cuda"
        self._free: queue.Queue[HostBuffer] = queue.Queue()
        for index in range(count):
            tensors = tuple(torch.empty(shape, dtype=dt, pin_memory=pinned) for shape, dt in specs)
            self._free.put(HostBuffer(tensors, make_sync(device), index))

    def acquire(self, *, timeout: float | None = None) -> HostBuffer:
        """A free buffer whose last device work has finished (raises queue.Empty on timeout)."""
        buffer = self._free.get(timeout=timeout)
        buffer.sync.wait()
        return buffer

    def release(self, buffer: HostBuffer, *, record: bool = True) -> None:
        """Give ``buffer`` back; ``record``: after marking the device work queued so far."""
        if record:
            buffer.sync.record()
        self._free.put(buffer)


TensorGeneratorFn = Callable[[Any], Any]
"""The pipeline's generator: ``uint8 (N, H, W, 3)`` tensor on the device in, same out."""


def tensor_generator(generator: Any) -> tuple[TensorGeneratorFn, Any]:
    """``(run, device)``: ``generator`` as a tensor function and the device it runs on.

    An object with ``run_tensor`` and ``device`` (a :class:`TorchGenerator
    <histolib_train.transfer.generator.TorchGenerator>`) runs on its device; any other
    callable is a numpy ``GeneratorFn`` and runs on the CPU through the host.
    """
    import torch

    if hasattr(generator, "run_tensor") and hasattr(generator, "device"):
        return generator.run_tensor, torch.device(generator.device)

    def run(batch: Any) -> Any:
        out = np.asarray(generator(batch.numpy()))
        if out.shape != tuple(batch.shape):
            raise ValueError(f"generator returned {out.shape} for {tuple(batch.shape)}")
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.uint8))

    return run, torch.device("cpu")


class DeviceBlender:
    """Accumulate a row of overlapping windows on ``device``; hand out finished rows.

    The same arithmetic as :class:`histolib.slide.blend.StripeBlender` (float32 sums of
    ``weight * value`` and of weights, the glass composite ``alpha * tile + (1 - alpha) * 255``,
    round half to even), as torch ops on the device, so that nothing waits for the host.

    Every tensor an op reads has the channel axis last and spelled out (the weights and their
    sums are stored once per channel): torch on the CPU runs an op that broadcasts a per-pixel
    factor over a last axis of three several times slower than the same op on equal shapes,
    and the result is bit for bit the same either way.
    """

    def __init__(self, *, width: int, tile_size: int, overlap: int, device: Any) -> None:
        import torch

        self.width, self.tile_size, self.overlap = width, tile_size, overlap
        self.stride = tile_size - overlap
        full_w = window_starts(width, tile_size=tile_size, overlap=overlap)[-1] + tile_size
        w1 = torch.from_numpy(blend_weights(tile_size, overlap)).to(device)
        self.weights = torch.outer(w1, w1)  # (size, size)
        self.weights3 = _per_channel(self.weights)  # (size, size, 3)
        self.white = 255.0 * self.weights3
        self.acc = torch.zeros((tile_size, full_w, 3), dtype=torch.float32, device=device)
        self.wsum = torch.zeros((tile_size, full_w, 3), dtype=torch.float32, device=device)
        self.rows = torch.empty((tile_size, width, 3), dtype=torch.uint8, device=device)
        # Scratch reused by every call (fresh tensors of megabytes cost page faults each time).
        self._scratch: dict[str, Any] = {}
        # Columns [lo, hi) that windows of this row wrote, and those the band carries from
        # the row above: the sums are zero everywhere else, and pop leaves them alone.
        self._row = self._band = (full_w, 0)

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """Scratch tensor ``name`` of at least ``shape[0]`` along the first axis, sliced."""
        import torch

        held = self._scratch.get(name)
        if held is None or held.shape[0] < shape[0] or tuple(held.shape[1:]) != shape[1:]:
            held = torch.empty(shape, dtype=dtype, device=self.acc.device)
            self._scratch[name] = held
        return held[: shape[0]]

    def add(
        self, xs: list[int], tiles: Any, alphas: Any | None = None, kinds: list[int] | None = None
    ) -> None:
        """Add translated windows ``tiles`` (``uint8 (N, size, size, 3)``) at columns ``xs``;
        with ``alphas`` (``float32 (N, size, size)``), the glass composite of each. ``kinds``
        (per window, :data:`~histolib_train.transfer.glass.ALL_TISSUE`, ``ALL_GLASS`` or
        ``MIXED``, known on the host) lets a window whose alpha is all 1 or all 0 skip the
        per-pixel product with its alpha (the same values: ``weights * 1`` and ``weights * 0``)."""
        import torch

        contrib = self._buffer("contrib", tuple(tiles.shape), torch.float32)
        if alphas is None:
            torch.mul(tiles, self.weights3, out=contrib)
        else:
            faded = self._faded(alphas, kinds)
            torch.sub(tiles, 255.0, out=contrib).mul_(faded).add_(self.white)
        size = self.tile_size
        for x, window in zip(xs, contrib, strict=True):
            self.acc[:, x : x + size] += window
            self.wsum[:, x : x + size] += self.weights3
            self._row = _union(self._row, (x, x + size))

    def _faded(self, alphas: Any, kinds: list[int] | None) -> Any:
        """``weights * alpha`` of each window, per channel (``(N, size, size, 3)``, or the
        weights alone, broadcast over the windows, when every alpha is all 1)."""
        import torch

        from histolib_train.transfer.glass import ALL_GLASS, ALL_TISSUE

        n = alphas.shape[0]
        if kinds is not None and all(kind == ALL_TISSUE for kind in kinds):
            return self.weights3
        faded = self._buffer("faded", (n, *self.weights3.shape), torch.float32)
        if kinds is None:
            plane = self._buffer("plane", tuple(alphas.shape), torch.float32)
            torch.mul(self.weights, alphas, out=plane)
            return _per_channel(plane, out=faded)
        for i, kind in enumerate(kinds):
            if kind == ALL_TISSUE:
                faded[i].copy_(self.weights3)
            elif kind == ALL_GLASS:
                faded[i].zero_()
            else:
                plane = self._buffer("plane", (1, *alphas.shape[1:]), torch.float32)[0]
                torch.mul(self.weights, alphas[i], out=plane)
                _per_channel(plane, out=faded[i])
        return faded

    def add_white(self, x: int) -> None:
        """Add a white window not run (``glass="keep"``'s fringe) at column ``x``."""
        size = self.tile_size
        self.acc[:, x : x + size] += self.white
        self.wsum[:, x : x + size] += self.weights3
        self._row = _union(self._row, (x, x + size))

    def pop(self, n_rows: int, *, chunk: int = 1024) -> Any:
        """The top ``n_rows`` finished rows, ``uint8 (n_rows, width, 3)`` on the device (white
        where no window wrote), valid until the next call; the band shared with the next
        window row moves to the top. Normalised ``chunk`` columns at a time (scratch that
        stays in cache)."""
        import torch

        lo, hi = _union(self._row, self._band)
        right_edge = min(hi, self.width)
        rows = self.rows[:n_rows]
        rows[:, :lo] = 255  # no window wrote there
        rows[:, max(lo, right_edge) :] = 255
        for left in range(lo, right_edge, chunk):
            right = min(right_edge, left + chunk)
            shape = (n_rows, right - left, 3)
            values = self._buffer("values", shape, torch.float32)
            torch.div(self.acc[:n_rows, left:right], self.wsum[:n_rows, left:right], out=values)
            # Where no window wrote, both sums are 0 and the quotient NaN: white.
            values.nan_to_num_(nan=255.0).round_().clamp_(0, 255)
            # Whole numbers in [0, 255]: through int32, which converts several times faster.
            ints = self._buffer("ints", shape, torch.int32)
            ints.copy_(values)
            rows[:, left:right].copy_(ints)
        self._shift(lo, hi)
        return rows

    def _shift(self, lo: int, hi: int) -> None:
        """Move the band shared with the next window row to the top, zero the rest (only
        columns ``[lo, hi)`` hold anything)."""
        overlap, stride = self.overlap, self.stride
        carried = self._band if stride < overlap else (self.acc.shape[1], 0)
        if overlap and lo < hi:  # stride >= overlap unless the overlap exceeds half a window
            for sums in (self.acc, self.wsum):
                band = sums[stride:, lo:hi]
                sums[:overlap, lo:hi].copy_(band if stride >= overlap else band.clone())
        if lo < hi:
            self.acc[overlap:, lo:hi] = 0.0
            self.wsum[overlap:, lo:hi] = 0.0
        self._band = _union(self._row, carried) if overlap else (self.acc.shape[1], 0)
        self._row = (self.acc.shape[1], 0)


def _union(one: tuple[int, int], two: tuple[int, int]) -> tuple[int, int]:
    """The smallest column range ``[lo, hi)`` holding both (``lo >= hi``: empty)."""
    return min(one[0], two[0]), max(one[1], two[1])


def _per_channel(plane: Any, *, out: Any | None = None) -> Any:
    """``plane`` (``(..., H, W)``) repeated along a new last axis of 3, contiguous, into
    ``out`` if given (three strided copies: faster than torch's broadcasting copy)."""
    import torch

    if out is None:
        out = torch.empty((*plane.shape, 3), dtype=plane.dtype, device=plane.device)
    for channel in range(3):
        out[..., channel].copy_(plane)
    return out


@contextlib.contextmanager
def cpu_threads(device: Any, threads: int) -> Iterator[None]:
    """On the CPU, run torch with ``threads`` intra-op threads inside the block (restored
    after); on other devices nothing. The pipeline blends with one (its reader and writer
    threads hold the other cores; intra-op threads fighting them, spinning between ops, cost
    several times the work) and gives the generator the caller's count back."""
    import torch

    if device.type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
