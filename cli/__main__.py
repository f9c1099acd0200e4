"""``python -m histolib_cli ...``: the ``histolib`` command as a module.

``torchrun --nproc_per_node N -m histolib_cli train ...`` starts N processes of ``histolib
train`` (one DistributedDataParallel run, :mod:`histolib_train.training.distributed`).
"""

from __future__ import annotations

from histolib_cli.main import main

if __name__ == "__main__":
    main()
