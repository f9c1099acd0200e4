"""histolib_train: the region-guided CycleGAN trainer (PyTorch); depends on histolib."""

from __future__ import annotations
