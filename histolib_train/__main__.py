"""``python -m histolib_train train ...``: the ``histolib`` command line, for ``torchrun -m``.

``torchrun --nproc_per_node N -m histolib_train train --he ... --out RUN`` starts N processes
that train one DistributedDataParallel run (:mod:`histolib_train.training.distributed`); the
options are those of ``histolib train``. torchrun starts a *module*, and this one only hands its
arguments to the command line, which sits above histolib_train in the layers: it runs
``python -m histolib_cli`` by name (:func:`runpy.run_module`) and imports nothing of it, so no
module of histolib_train imports histolib_cli and importing histolib_train never loads it
(``tests/unit/test_architecture.py``). ``torchrun -m histolib_cli train ...`` is the same.
"""

from __future__ import annotations

import runpy


def main() -> None:
    """Run ``python -m histolib_train``: ``python -m histolib_cli`` with the same arguments."""
    runpy.run_module("histolib_cli", run_name="__main__")


if __name__ == "__main__":
    main()
