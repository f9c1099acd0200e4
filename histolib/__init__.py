"""histolib: whole-slide tiling, cell libraries and region-guided CycleGANs for virtual IHC.

The toolkit never imports torch; the trainer lives in :mod:`histolib_train`.
"""

from __future__ import annotations

from histolib.errors import HistolibError

__version__ = "0.1.0"

__all__ = ["HistolibError", "__version__"]
