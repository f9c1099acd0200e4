"""Slides: opening any OpenSlide (or plain) image at a target mpp, finding tissue, and
writing pyramidal TIFFs that OpenSlide and QuPath open."""

from __future__ import annotations

from histolib.slide.reader import Slide, open_slide, slide_id_from_path

__all__ = ["Slide", "open_slide", "slide_id_from_path"]
