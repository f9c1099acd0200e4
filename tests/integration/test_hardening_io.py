"""Issue 14: outputs that would replace their input, interrupted transfers, slides without
scale, and QuPath ids that stay the same from one export to the next. Each test failed before
the fix."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from histolib.library.cellio import read_library, write_library
from histolib.qupath.features import object_id, qupath_feature
from histolib_cli.main import app
from tests.helpers_qupath import (
    feature,
    library_from_manifest,
    polygon,
    write_json,
    write_manifest_for,
)

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# ------------------------------------------------------------------ 6. source overwritten


@pytest.fixture(scope="module")
def transfer_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("torch")
    from tests.helpers_transfer import textured_slide, tiny_checkpoint

    root = tmp_path_factory.mktemp("transfer")
    return tiny_checkpoint(root / "tiny.pt"), textured_slide(root / "x.tif", width=256, height=192)


def test_transfer_refuses_to_overwrite_its_slide(transfer_inputs, tmp_path: Path) -> None:
    checkpoint, source = transfer_inputs
    slide = tmp_path / "x.tif"
    slide.write_bytes(source.read_bytes())
    before = slide.read_bytes()
    link = tmp_path / "link.tif"
    link.symlink_to(slide)
    for out, given in ((slide, slide), (link, slide), (slide, link)):
        result = invoke("transfer", checkpoint, given, "--out", out, "--overwrite")
        assert result.exit_code == 1
        line = error_line(result)
        assert "would overwrite the input" in line and "another --out" in line
    assert slide.read_bytes() == before and link.is_symlink()
    thumb_source = tmp_path / "y.thumbnail.png"  # the thumbnail may not replace it either
    thumb_source.write_bytes(before)
    result = invoke("transfer", checkpoint, thumb_source, "--out", tmp_path / "y.tif")
    assert result.exit_code == 1 and "would overwrite the input" in error_line(result)


def test_transfer_refuses_magnification_given_as_mpp(transfer_inputs, tmp_path: Path) -> None:
    from histolib.errors import SlideError
    from histolib_train.transfer.slide import transfer_slide
    from tests.helpers_transfer import identity_generator

    _, slide = transfer_inputs
    with pytest.raises(SlideError, match="enlarges it 40x"):
        transfer_slide(slide, identity_generator, out=tmp_path / "v.tif", mpp=0.5, slide_mpp=20)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_says_it_restarts(transfer_inputs, tmp_path, monkeypatch) -> None:
    checkpoint, slide = transfer_inputs
    import histolib_train.transfer.slide as transfer_module

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(transfer_module, "transfer_slide", interrupted)
    out = tmp_path / "v.tif"
    stale = tmp_path / ".tmp-v-k1ll3d_x.tif"  # what a killed run left
    stale.write_bytes(b"half a slide")
    stale_thumb = tmp_path / ".tmp-v.thumbnail-k1ll3d_x.png"
    stale_thumb.write_bytes(b"half a picture")
    result = invoke("transfer", checkpoint, slide, "--out", out)
    assert result.exit_code == 130
    assert "restains the slide from the start" in result.output
    assert "resumes" not in result.output
    assert not stale.exists() and not stale_thumb.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 8. info without mpp


def test_info_describes_a_slide_without_mpp(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from tests.helpers_tile import placeholder_tiff

    png = tmp_path / "scan.png"
    Image.fromarray(np.full((60, 80, 3), 230, np.uint8)).save(png)
    result = invoke("info", png, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output[result.output.index("{") :])
    assert info["mpp"] is None and info["dimensions"] == [80, 60]
    text = invoke("info", png)
    assert text.exit_code == 0 and "unknown" in text.output and "--slide-mpp" in text.output
    odd = invoke("info", placeholder_tiff(tmp_path / "dpi.tif"))
    assert odd.exit_code == 0 and "352.8" in odd.output and "plausible range" in odd.output


# ------------------------------------------------------------------ 9. QuPath ids


def _ids(path: Path) -> list[str]:
    return [f["id"] for f in json.loads(path.read_text())["features"]]


def test_export_ids_are_the_same_in_every_export(tmp_path: Path) -> None:
    manifest = write_manifest_for(tmp_path)
    library = write_library(library_from_manifest(manifest), tmp_path / "lib.parquet", params={})
    drawn = str(uuid.uuid4())
    contours = write_json(
        tmp_path / "slide1.geojson",
        {
            "type": "FeatureCollection",
            "features": [
                {**feature(polygon(1000, 500, 1400, 900), objectType="annotation"), "id": drawn},
                feature(polygon(1500, 500, 1900, 900), objectType="annotation"),
                feature(polygon(1500, 500, 1900, 900), objectType="annotation"),
            ],
        },
    )
    args = ["export", "qupath", manifest, library, "--annotations", contours, "--cells", "cell"]
    first = invoke(*args, "--out", tmp_path / "a")
    second = invoke(*args, "--out", tmp_path / "b")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    ids_a, ids_b = _ids(tmp_path / "a" / "slide1.geojson"), _ids(tmp_path / "b" / "slide1.geojson")
    assert ids_a == ids_b and len(set(ids_a)) == len(ids_a)
    assert all(str(uuid.UUID(i)) == i for i in ids_a)
    assert drawn in ids_a  # the contour drawn in QuPath keeps its id


def test_imported_objects_keep_their_qupath_ids(tmp_path: Path) -> None:
    manifest = write_manifest_for(tmp_path)
    library = write_library(library_from_manifest(manifest), tmp_path / "lib.parquet", params={})
    assert invoke("export", "qupath", manifest, library, "--out", tmp_path / "q").exit_code == 0
    exported = json.loads((tmp_path / "q" / "slide1.geojson").read_text())["features"]
    cells = [f for f in exported if f["properties"]["objectType"] == "detection"]
    qupath_ids = [str(uuid.uuid4()) for _ in cells]  # as QuPath would have them
    for cell, qid in zip(cells, qupath_ids, strict=True):
        cell["id"] = qid
    edited = write_json(tmp_path / "slide1.json", cells)
    curated = tmp_path / "curated.parquet"
    result = invoke("import", "qupath", edited, "--tiles", manifest, "--out", curated)
    assert result.exit_code == 0, result.output
    gdf, _ = read_library(curated)
    assert set(gdf["object_id"]) == set(qupath_ids)
    again = invoke("export", "qupath", curated, "--out", tmp_path / "q2")
    assert again.exit_code == 0, again.output
    assert set(_ids(tmp_path / "q2" / "slide1.geojson")) == set(qupath_ids)


def test_object_id_rules() -> None:
    known = str(uuid.uuid4())
    assert object_id("tile:a", known) == known
    assert object_id("tile:a", known.upper()) == known
    assert object_id("tile:a") == object_id("tile:a") != object_id("tile:b")
    assert object_id("tile:a", "PathAnnotationObject-7") == object_id("x", "PathAnnotationObject-7")
    one = qupath_feature(box(0, 0, 1, 1), object_type="annotation", class_name="Tumor")
    two = qupath_feature(box(0, 0, 1, 1), object_type="annotation", class_name="Tumor")
    assert one["id"] == two["id"]
    assert "nucleusGeometry" not in one["properties"]
