"""histolib_train: the region-guided CycleGAN and its baselines (PyTorch); depends on histolib.

Sub-packages, one per stage:

- ``models``: the networks (``networks``: ResnetGenerator, PatchDiscriminator,
  RoIDiscriminator), the losses and replay buffer (``losses``), the conditional CycleGAN
  baselines (``conditional``);
- ``data``: tile sets and the paper's batch sampling (``batches``);
- ``training``: the configuration (``config``: TrainConfig, YAML), the trainer
  (``trainer``: CycleGANTrainer, set_input / optimize_parameters), the run folder
  (``run_folder``: config.yaml, metrics.csv, samples, checkpoint schedule), the loop
  (``loop``: ``train``) and sample sheets (``samples``);
- ``transfer``: restaining with a trained generator (``generator``: TorchGenerator,
  load_transfer_generator; ``slide``: whole slides to pyramidal TIFFs; ``images``: folders of
  tiles);
- ``evaluation``: DICE and balanced accuracy of virtual stains against expert masks;
- ``demo``: the whole pipeline on synthetic slides (``run``) and its HTML report (``report``).

Modules: ``checkpoint`` (the checkpoint format: saving, validated loading, ``load_generator``)
and ``device`` (``resolve_device``: the one ``--device`` resolver).

The torch-free parts of restaining live in histolib: window blending in
``histolib.slide.blend``, the pyramidal TIFF writers in ``histolib.slide.pyramid``.
"""

from __future__ import annotations
