"""Issue 23, item 8 (and the pixel limit of plain-image slides): each reproduction ends in one
line, a non-zero exit code and no file changed. Each test failed before the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from histolib_cli.main import app

runner = CliRunner()


def invoke(*args: object, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# ------------------------------------------------------------------------- bad checkpoints


def _poisoned(path: Path, **config: object) -> Path:
    torch = pytest.importorskip("torch")
    from tests.helpers_transfer import tiny_checkpoint

    tiny_checkpoint(path, **config)
    state = torch.load(path, weights_only=True)
    if not config:
        for weights in state["nets"].values():
            for tensor in weights.values():
                if tensor.is_floating_point():
                    tensor.fill_(float("nan"))
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiles")
    for name in ("images", "masks"):
        (root / name).mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(root / f"images/{i}.png")
        Image.fromarray(np.full((64, 64), 255 * i, np.uint8)).save(root / f"masks/{i}.png")
    return root / "images", root / "masks"


def test_nan_weights_are_refused_by_transfer_and_evaluate(tmp_path: Path, tiles) -> None:
    checkpoint = _poisoned(tmp_path / "nan.pt")
    images, masks = tiles
    line = error_line(invoke("transfer", checkpoint, "--images", images, "--out", tmp_path / "o"))
    assert "NaN or infinite values" in line and str(checkpoint) in line
    result = invoke(
        "evaluate", checkpoint, "--images", images, "--masks", masks, "--n-tiles", "2",
        "--out", tmp_path / "e", "--device", "cpu",
    )  # fmt: skip
    assert "NaN or infinite values" in error_line(result)
    assert not (tmp_path / "o").exists() and not (tmp_path / "e" / "summary.json").exists()


def test_a_nan_mpp_in_the_config_is_a_bad_checkpoint(tmp_path: Path, tiles) -> None:
    checkpoint = _poisoned(tmp_path / "mpp.pt", mpp=float("nan"))
    line = error_line(invoke("transfer", checkpoint, "--images", tiles[0], "--out", tmp_path / "o"))
    assert "bad checkpoint: its config holds mpp = nan" in line and "--mpp" not in line


# ------------------------------------------------------------------------- messages


def test_a_slide_name_with_a_newline_is_one_line(tmp_path: Path) -> None:
    slide = tmp_path / "bad\nname.tif"
    slide.write_bytes(b"not a slide")
    line = error_line(invoke("info", slide))
    assert "bad\\nname.tif" in line


def test_a_far_away_contour_prints_no_300_digit_number() -> None:
    from shapely.geometry import box

    from histolib.annotations.model import Annotation
    from histolib.annotations.regions import clip_to_slide

    far = Annotation(geometry=box(0, 0, 1e300, 100), object_type="annotation", class_name="T")
    _, notes = clip_to_slide([far], (1000, 1000))
    assert notes and "1e+300 px" in notes[0] and max(map(len, notes[0].split())) < 40


def test_any_mpp_must_be_a_yes_or_no(tmp_path: Path) -> None:
    slide = tmp_path / "s.png"
    Image.new("RGB", (8, 8)).save(slide)
    line = error_line(invoke("info", slide, env={"HISTOLIB_ANY_MPP": "banana"}))
    assert "HISTOLIB_ANY_MPP must be 1 or 0" in line and "'banana'" in line
    assert invoke("info", slide, env={"HISTOLIB_ANY_MPP": "0"}).exit_code == 0


# ------------------------------------------------------------------------- plain-image slides


def test_a_plain_image_slide_over_the_pixel_limit_is_refused_from_its_header(
    tmp_path: Path,
) -> None:
    slide = tmp_path / "s.png"
    Image.new("RGB", (200, 100), "white").save(slide)
    out = tmp_path / "out"
    line = error_line(
        invoke("--max-slide-pixels", 10_000, "tile", slide, "--slide-mpp", 0.5, "--out", out)
    )
    assert "200 x 100 px" in line and "--max-slide-pixels" in line
    assert not out.exists()
    from histolib.core.limits import LIMITS

    assert LIMITS["slide_pixels"].default < 20_000 * 20_000  # the 1.2 MB PNG
