"""Visible command signatures and the bounds of every option (issue 20 item 1, issue 23 items
3 and 5, and ``--seed -1``): each refusal is one line naming the flag, exit 1, no traceback."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from histolib.core.options import OptionRangeError, option_specs, spec_map
from histolib.core.parallel import max_workers
from histolib.errors import ConfigError
from histolib.library.params import LibraryParams
from histolib.synthetic.options import SynthOptions
from histolib.tiling.options import MAX_TILE_SIZE, TilingOptions
from histolib.view.sources import ViewOptions
from histolib_cli.main import app
from histolib_train.evaluation.options import EvaluateOptions
from histolib_train.training.config import TrainConfig
from histolib_train.transfer.options import TransferOptions

runner = CliRunner()


def _commands() -> dict[str, Any]:
    return {c.name: c.callback for c in app.registered_commands if c.name in COMMAND_OPTIONS}


COMMAND_OPTIONS = {
    "tile": TilingOptions,
    "train": TrainConfig,
    "build-library": LibraryParams,
    "synth": SynthOptions,
    "evaluate": EvaluateOptions,
    "transfer": TransferOptions,
    "view": ViewOptions,
}
#: Commands that may keep plain ``typer.Option``s only: at most this many options.
MAX_PLAIN_OPTIONS = 5


def _options(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "option" and p.name != "help"]


def test_every_command_with_more_than_a_handful_of_options_declares_them_in_a_dataclass() -> None:
    from typer.main import get_command

    group = get_command(app)
    commands = {name: group.commands[name] for name in group.commands}  # type: ignore[attr-defined]
    for name, command in commands.items():
        subcommands = getattr(command, "commands", {name: command})
        for sub in subcommands.values():
            if len(_options(sub)) > MAX_PLAIN_OPTIONS:
                assert name in COMMAND_OPTIONS, f"{name}: {len(_options(sub))} plain options"


@pytest.mark.parametrize("name", sorted(COMMAND_OPTIONS))
def test_every_flag_of_the_dataclass_is_a_parameter_of_the_command(name: str) -> None:
    params = inspect.signature(_commands()[name]).parameters
    for spec in option_specs(COMMAND_OPTIONS[name]):
        if spec.cli is None:
            continue
        assert spec.name in params, f"{name}: {spec.flag} is not in the def"
        assert spec.flag in params[spec.name].default.param_decls[0], spec.name


@pytest.mark.parametrize("name", sorted(COMMAND_OPTIONS))
def test_every_command_signature_is_its_def(name: str) -> None:
    command = _commands()[name]
    assert not hasattr(command, "__wrapped__") and not hasattr(command, "__signature__")
    assert len(inspect.signature(command).parameters) == command.__code__.co_argcount


def test_tile_command_signature_is_its_def() -> None:
    from histolib_cli.tile import tile_command

    params = inspect.signature(tile_command).parameters
    assert not hasattr(tile_command, "__wrapped__")
    assert {"slides", "out", "stain", "size", "mpp", "workers", "allow_many_workers"} <= set(params)
    assert len(params) == tile_command.__code__.co_argcount


def _one_line_error(result: Any, flag: str) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error:") and flag in lines[0], lines[0]
    return lines[0]


LIB = "build-library M --out o.parquet --stain"
TRAIN = "train --he a --ihc b --out O"
TRANSFER = "transfer c.pt s.svs --out o.tif"


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("tile S --out O --workers 1000000", "--allow-many-workers"),
        (f"{TRAIN} --workers 1000000", "--workers"),
        (f"{LIB} he -j 999999", "--workers"),
        ("synth O --workers 1000000", "--workers"),
        ("cluster local --workers 1000000", "--workers"),
        (f"{TRANSFER} --workers 1000000", "--workers"),
        ("tile S --out O --size 1000000000", "--size"),
        ("tile S --out O --size 1000000", "--size"),
        ("--any-mpp tile S --out O --mpp 1e6", "--mpp"),
        (f"{TRANSFER} --tile-size 1000000000", "--tile-size"),
        (f"{LIB} he --dilation-radius 1e30", "--dilation-radius"),
        (f"{LIB} he --dilation-radius 100000", "--dilation-radius"),
        (f"{LIB} he --set num_sigma=1000000000", "num_sigma"),
        (f"{LIB} ihc --set dab_sigma=1e9", "dab_sigma"),
        (f"{LIB} he --set he_cancer_max_sigma=100000", "he_cancer_max_sigma"),
        (f"{TRAIN} --ngf 100000", "--ngf"),
        ("tile S --out O --balance --seed -1", "--seed"),
        ("split M --seed -1", "--seed"),
        ("evaluate c.pt --out O --seed -1", "--seed"),
        ("evaluate c.pt --out O --n-tiles 0", "--n-tiles"),
        ("evaluate c.pt --out O --split val2", "--split"),
        (f"{TRANSFER} --overlap -1", "--overlap"),
        (f"{TRANSFER} --glass grey", "--glass"),
        ("view s.svs --cache-mb -1", "--cache-mb"),
        (f"{TRAIN} --seed -1", "--seed"),
    ],
)
def test_out_of_bounds_is_one_line(tmp_path: Path, command: str, flag: str) -> None:
    args = [str(tmp_path / a) if a in ("S", "O", "M") else a for a in command.split()]
    _one_line_error(runner.invoke(app, args), flag)
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_allow_many_workers_lifts_the_cap(tmp_path: Path) -> None:
    many = str(max_workers() + 1)
    args = ["tile", str(tmp_path / "missing.svs"), "--out", str(tmp_path / "o"), "-j"]
    refused = runner.invoke(app, ["tile", "x", "--out", "o", "--workers", many])
    _one_line_error(refused, "--workers")
    allowed = runner.invoke(app, [*args[:-1], "--allow-many-workers", "--workers", many])
    assert "no such file" in _one_line_error(allowed, "missing.svs")


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=-(2**40), max_value=2**40))
def test_tile_size_bounds(size: int) -> None:
    if 8 <= size <= MAX_TILE_SIZE:
        assert TilingOptions(size=size).size == size
    else:
        with pytest.raises(OptionRangeError, match=r"^--size must be in \[8, 4096\]"):
            TilingOptions(size=size)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["dilation_radius", "dab_sigma", "he_cancer_max_sigma", "num_sigma"]),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12)),
)
def test_library_bounds(name: str, value: float) -> None:
    spec = spec_map(LibraryParams)[name]
    if spec.base is int:
        value = int(value) if value == value and abs(value) < 1e18 else 10**12
    if name == "he_cancer_max_sigma":
        ok = spec.in_range(value) and value >= LibraryParams().he_cancer_min_sigma
    else:
        ok = spec.in_range(value)
    if ok:
        assert getattr(LibraryParams(**{name: value}), name) == value
    else:
        with pytest.raises(ConfigError, match=spec.label(None)) as info:
            LibraryParams(**{name: value})
        assert "\n" not in str(info.value)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["ngf", "ndf", "n_blocks", "seed", "workers", "batch_size"]),
    value=st.integers(-(2**40), 2**40),
)
def test_train_bounds(name: str, value: int) -> None:
    spec = spec_map(TrainConfig)[name]
    limit = max_workers() if name == "workers" else spec.le
    ok = spec.in_range(value) and (limit is None or value <= limit)
    if ok:
        assert getattr(TrainConfig(**{name: value}), name) == value
    else:
        with pytest.raises(ConfigError, match=spec.label(None)):
            TrainConfig(**{name: value})


def test_help_loads_neither_numpy_nor_torch() -> None:
    code = (
        "import sys\n"
        "from histolib_cli.main import app\n"
        "for argv in (['--help'], ['tile', '--help'], ['train', '--help']):\n"
        "    try:\n"
        "        app(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_tile_slides_refuses_too_many_workers_before_any_work(tmp_path: Path) -> None:
    from histolib.tiling import tile_slides

    with pytest.raises(ConfigError, match=r"^--workers .* add --allow-many-workers"):
        tile_slides(tmp_path / "s.svs", out=tmp_path / "o", workers=max_workers() + 1)
    with pytest.raises(ConfigError, match="must be a TilingOptions"):
        tile_slides(tmp_path / "s.svs", out=tmp_path / "o", options={"stain": "he"})  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
