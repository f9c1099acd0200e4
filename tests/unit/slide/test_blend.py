"""Blending overlapping windows (histolib.slide.blend)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from histolib.errors import ConfigError
from histolib.slide.blend import StripeBlender, blend_weights, window_starts


@pytest.mark.parametrize(("size", "overlap"), [(64, 16), (256, 64), (60, 18), (32, 1)])
def test_blend_weights_sum_to_one_across_the_shared_band(size: int, overlap: int) -> None:
    w = blend_weights(size, overlap)
    stride = size - overlap
    assert (w > 0).all() and w.max() == 1.0
    # Window k's falling ramp over [stride, size) meets window k+1's rising ramp over [0, o).
    np.testing.assert_allclose(w[stride:] + w[:overlap], 1.0, atol=1e-6)


def test_blend_weights_without_overlap_are_flat_and_bad_overlap_fails() -> None:
    assert (blend_weights(32, 0) == 1).all()
    with pytest.raises(ConfigError, match="overlap"):
        blend_weights(32, 32)
    with pytest.raises(ConfigError, match="overlap"):
        blend_weights(32, -1)


@pytest.mark.parametrize("length", [1, 40, 64, 65, 200, 1000])
def test_window_starts_cover_the_length(length: int) -> None:
    starts = window_starts(length, tile_size=64, overlap=16)
    assert starts[0] == 0
    assert starts[-1] + 64 >= length
    assert all(b - a == 48 for a, b in itertools.pairwise(starts))
    assert len(starts) == 1 or starts[-1] < length  # no window entirely past the end


def test_stripe_blender_pops_white_where_nothing_was_written() -> None:
    stripe = StripeBlender(width=100, tile_size=32, overlap=8)
    stripe.add(0, np.full((32, 32, 3), 10, np.uint8))
    rows = stripe.pop(24)
    assert (rows[:, :32] == 10).all()
    assert (rows[:, 32:] == 255).all()
    # The shared band (8 rows) was kept for the next row of windows.
    assert stripe.has_data and (stripe.wsum[:8, :32] > 0).all() and not stripe.wsum[8:].any()
