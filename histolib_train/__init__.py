"""histolib_train: the region-guided CycleGAN trainer (PyTorch); depends on histolib.

Modules: ``models`` (ResnetGenerator, PatchDiscriminator, RoIDiscriminator), ``data`` (tile
sets, the paper's batch sampling), ``losses`` (LSGAN, L1, replay buffer), ``config``
(TrainConfig, YAML), ``trainer`` (CycleGANTrainer, ``train``), ``checkpoint``
(``load_generator``), ``sampling`` (sample sheets).
"""

from __future__ import annotations
