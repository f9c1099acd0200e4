"""The paper's evaluation (Boyd et al. 2022, section 5.1): virtual IHC DAB mask vs annotation.

For each held-out H&E tile with an expert tumour mask, every generator synthesises IHC; the DAB
mask of the virtual IHC is derived exactly as for real IHC tiles and compared pixel by pixel
with the expert mask: DICE and balanced accuracy, reported as mean +- std over tiles, over all
tiles and over the tumour tiles (non-empty annotation) alone.

Outputs in ``out``: ``tiles.csv`` (one row per checkpoint and tile), ``summary.json``,
``table.md`` (the layout of the paper's Table 1), ``panel.png`` (the layout of its Fig. 3),
``distribution.png`` (DICE and BAC per tile, box plots per model) and ``report.html`` (the
table as an HTML table and both pictures with their legends).

This module is the evaluation's public face; the work is done by job:

- :mod:`histolib_train.evaluation.tiles`: the tiles and their expert masks;
- :mod:`histolib_train.evaluation.scoring`: the DAB mask rule and the scores;
- :mod:`histolib_train.evaluation.report`: ``tiles.csv``, ``table.md``, ``panel.png``,
  ``report.html`` (and :mod:`histolib_train.evaluation.plot`: ``distribution.png``);
- :mod:`histolib_train.evaluation.run`: scoring generators, caching, ``histolib evaluate``.
"""

from __future__ import annotations

from histolib_train.evaluation.report import CSV_COLUMNS, table_markdown, write_panel
from histolib_train.evaluation.run import checkpoint_labels, evaluate_generators, run_evaluation
from histolib_train.evaluation.scoring import (
    CONVENTION,
    PAPER_TARGET,
    GeneratorFn,
    real_ihc_statistics,
    score_generator,
    summarise,
    virtual_dab_mask,
)
from histolib_train.evaluation.tiles import (
    EvalTile,
    load_folder_tiles,
    load_manifest_tiles,
    load_real_ihc,
)

__all__ = [
    "CONVENTION",
    "CSV_COLUMNS",
    "PAPER_TARGET",
    "EvalTile",
    "GeneratorFn",
    "checkpoint_labels",
    "evaluate_generators",
    "load_folder_tiles",
    "load_manifest_tiles",
    "load_real_ihc",
    "real_ihc_statistics",
    "run_evaluation",
    "score_generator",
    "summarise",
    "table_markdown",
    "virtual_dab_mask",
    "write_panel",
]
