"""EvaluateOptions: the one declaration of ``histolib evaluate``'s options."""

from __future__ import annotations

import pytest

from histolib.errors import ConfigError
from histolib_train.evaluation.options import DEFAULT_LABELS, SPLIT_PARTS, EvaluateOptions
from histolib_train.evaluation.tiles import DEFAULT_LABELS as TILES_DEFAULT_LABELS


def test_labels_default_to_positive_and_negative_and_all_means_every_label() -> None:
    assert EvaluateOptions().label_filter == DEFAULT_LABELS == TILES_DEFAULT_LABELS
    assert EvaluateOptions(labels=("All",)).label_filter is None
    assert EvaluateOptions(labels=("border",)).label_filter == ("border",)


def test_groups_are_read_in_any_case() -> None:
    assert EvaluateOptions().group_names is None
    assert EvaluateOptions(groups=("Tumour", "BORDER")).group_names == ("tumour", "border")


@pytest.mark.parametrize(
    ("values", "flag"),
    [({"n_tiles": 0}, "--n-tiles"), ({"batch_size": 0}, "--batch-size"), ({"seed": -1}, "--seed")],
)
def test_ranges_are_checked_when_built(values: dict[str, int], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        EvaluateOptions(**values)  # type: ignore[arg-type]


def test_split_parts_are_the_fields_choices() -> None:
    assert SPLIT_PARTS == ("test", "val", "train", "all")
    with pytest.raises(ConfigError, match="--split must be"):
        EvaluateOptions(split="holdout")  # type: ignore[arg-type]
