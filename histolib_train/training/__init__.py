"""The training loop: options (TrainConfig), the CycleGAN trainer, run folders and samples."""
