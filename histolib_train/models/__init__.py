"""Networks and losses: the ResNet generator, PatchGAN and RoI discriminators, the
conditional CycleGAN's classifiers and losses."""
