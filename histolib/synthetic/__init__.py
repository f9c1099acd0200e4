"""Synthetic whole-slide images with known ground truth (tissue, tumours, every cell).

- :mod:`~histolib.synthetic.noise`: deterministic, seamless noise and textures;
- :mod:`~histolib.synthetic.nuclei`: nucleus and red blood cell sprites;
- :mod:`~histolib.synthetic.tissue`: tissue, tumour, fat and vessel geometry;
- :mod:`~histolib.synthetic.layout`: the :class:`Layout` (all ground truth) and
  :func:`make_layout`;
- :mod:`~histolib.synthetic.render`: true masks and :func:`render_region`;
- :mod:`~histolib.synthetic.slides`: :func:`make_slide` (slide TIFF and ground-truth files);
- :mod:`~histolib.synthetic.options`: :class:`SynthOptions` (``histolib synth``'s options).

The names below are imported on first use, so that the options (read by the command line at
start-up) come without numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Layout": "layout",
    "make_layout": "layout",
    "render_region": "render",
    "tissue_mask": "render",
    "tumour_mask": "render",
    "SyntheticSlide": "slides",
    "make_slide": "slides",
    "SynthOptions": "options",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = [
    "Layout",
    "SynthOptions",
    "SyntheticSlide",
    "make_layout",
    "make_slide",
    "render_region",
    "tissue_mask",
    "tumour_mask",
]
