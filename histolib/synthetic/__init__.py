"""Synthetic whole-slide images with known ground truth (tissue, tumours, every cell).

- :mod:`~histolib.synthetic.noise`: deterministic, seamless noise and textures;
- :mod:`~histolib.synthetic.nuclei`: nucleus and red blood cell sprites;
- :mod:`~histolib.synthetic.tissue`: tissue, tumour, fat and vessel geometry;
- :mod:`~histolib.synthetic.layout`: the :class:`Layout` (all ground truth) and
  :func:`make_layout`;
- :mod:`~histolib.synthetic.render`: true masks and :func:`render_region`;
- :mod:`~histolib.synthetic.slides`: :func:`make_slide` (slide TIFF and ground-truth files).
"""

from __future__ import annotations

from histolib.synthetic.layout import Layout, make_layout
from histolib.synthetic.render import render_region, tissue_mask, tumour_mask
from histolib.synthetic.slides import SyntheticSlide, make_slide

__all__ = [
    "Layout",
    "SyntheticSlide",
    "make_layout",
    "make_slide",
    "render_region",
    "tissue_mask",
    "tumour_mask",
]
