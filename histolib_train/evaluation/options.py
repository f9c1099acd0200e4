"""The options of an evaluation (``histolib evaluate``): each with its default, help, flag and
range.

Importing this module imports neither numpy nor torch (the command line reads it at start-up).
The inputs (checkpoints, tiles, masks, the output folder) are arguments of
:func:`~histolib_train.evaluation.evaluator.run_evaluation`, not options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from histolib.core.options import (
    check_ranges,
    count_option,
    document_options,
    option,
    seed_option,
    spec_map,
)

#: The manifest labels drawn by default (``--label``); ``all`` keeps every label.
DEFAULT_LABELS = ("positive", "negative")


@document_options
@dataclass(frozen=True)
class EvaluateOptions:
    """How tiles are drawn and scored (recorded in ``summary.json``'s ``selection`` and
    ``inference``)."""

    positive_classes: tuple[str, ...] | None = option(
        None, help="Annotation class meaning tumour (repeatable).", cli="--positive-class"
    )
    labels: tuple[str, ...] = option(
        DEFAULT_LABELS,
        help="Only manifest tiles with this label (repeatable; 'all': every label).",
        cli="--label",
    )
    split: Literal["test", "val", "train", "all"] = option(
        "test",
        help="Part of the manifest's split column to draw from: test, train or all (a "
        "manifest without the column is used whole, with a warning).",
        cli="--split",
    )
    n_tiles: int = count_option(
        500, help="Tiles drawn at random (the paper: 500).", cli="--n-tiles"
    )
    balance: bool = option(
        True,
        help="Draw the tiles equally from each label (folders: tumour and tumour-free masks), "
        "where each has enough; else uniformly.",
        cli="--balance/--no-balance",
    )
    seed: int = seed_option(0, help="Seed of the tile draw.")
    device: str = option("auto", help="auto, cpu or cuda.", cli="--device")
    amp: bool = option(
        False,
        help="Mixed precision (default: float32); bf16 or fp16 as the GPU allows.",
        cli="--amp/--no-amp",
    )
    batch_size: int = count_option(8, help="Tiles per generator call.", cli="--batch-size")
    direction: Literal["he2ihc", "ihc2he"] = option(
        "he2ihc", help="Generator to evaluate.", cli="--direction"
    )
    allow_train_overlap: bool = option(
        False,
        help="Score tiles a run trained on (refused by default, naming how many).",
        cli="--allow-train-overlap",
    )
    groups: tuple[str, ...] | None = option(
        None,
        help="Groups of tiles reported and drawn: all, tumour, border (repeatable; default: "
        "all three).",
        cli="--groups",
    )

    def __post_init__(self) -> None:
        check_ranges(self)

    @property
    def label_filter(self) -> tuple[str, ...] | None:
        """The labels a manifest's tiles are drawn from (None: every label, ``--label all``)."""
        if any(label.lower() == "all" for label in self.labels):
            return None
        return self.labels

    @property
    def group_names(self) -> tuple[str, ...] | None:
        """``groups`` in lower case (None: all three)."""
        return None if not self.groups else tuple(g.lower() for g in self.groups)


#: The parts of a manifest ``evaluate`` can draw from (``all``: ignore the split column).
SPLIT_PARTS: tuple[str, ...] = spec_map(EvaluateOptions)["split"].choices or ()
