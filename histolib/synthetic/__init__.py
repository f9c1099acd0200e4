"""Synthetic whole-slide images with known ground truth (tissue, tumours, every cell)."""

from __future__ import annotations

from histolib.synthetic.slides import make_layout, make_slide

__all__ = ["make_layout", "make_slide"]
