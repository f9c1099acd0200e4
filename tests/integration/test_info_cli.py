"""``histolib info``: slide facts and what an annotation file holds, as tables and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from histolib.synthetic.slides import make_slide
from histolib_cli.main import app
from tests.helpers_qupath import feature, polygon, write_json

runner = CliRunner()


def test_info_real_slide_json_and_table(shared_data: Path) -> None:
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    res = runner.invoke(app, ["info", str(slide), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["vendor"] == "aperio"
    assert info["dimensions"] == [2220, 2967]
    assert info["level_count"] == 1 and info["level_downsamples"] == [1.0]
    assert abs(info["mpp"] - 0.499) < 1e-6 and info["objective_power"] == 20
    assert set(info["associated_images"]) >= {"label", "macro", "thumbnail"}
    res = runner.invoke(app, ["info", str(slide)])
    assert res.exit_code == 0
    for text in ("aperio", "2220 x 2967", "0.499", "20x", "macro", "levels"):
        assert text in res.output


def test_info_with_annotations(shared_data: Path, tmp_path: Path) -> None:
    slide = make_slide(tmp_path, name="syn.a", width=1024, height=768, seed=3)
    res = runner.invoke(
        app, ["info", str(slide.slide_path), "--annotations", str(slide.annotations_path), "--json"]
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["slide_id"] == "syn.a" and info["dimensions"] == [1024, 768]
    ann = info["annotations"]
    assert ann["by_class"] == {"Tumor": ann["count"]} and ann["count"] >= 1
    assert ann["inside"] is True and ann["outside"] == 0

    # real QuPath export with points, drawn for a larger slide: partly outside this one
    real = shared_data / "annotations" / "annotated_regions_Qupath.geojson"
    res = runner.invoke(
        app,
        [
            "info",
            str(shared_data / "slides" / "CMU-1-Small-Region.svs"),
            "--annotations",
            str(real),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "3 Point, 2 Polygon" in res.output
    assert "1 object(s) lie outside the slide" in res.output

    mixed = write_json(
        tmp_path / "m.geojson",
        [
            feature(polygon(10, 10, 20, 20), objectType="detection", classification="cancer"),
            feature(polygon(10, 10, 20, 20), objectType="detection", classification="cancer"),
            feature(polygon(30, 30, 90, 90), objectType="annotation", classification="Tumor"),
        ],
    )
    res = runner.invoke(app, ["info", str(slide.slide_path), "--annotations", str(mixed)])
    assert res.exit_code == 0, res.output
    assert "detection" in res.output and "inside the slide" in res.output

    # a synthetic slide records no objective power: "unknown", not "unknownx"
    res = runner.invoke(app, ["info", str(slide.slide_path)])
    assert res.exit_code == 0, res.output
    line = next(li for li in res.output.splitlines() if "objective" in li)
    assert "unknown" in line and "unknownx" not in line


def test_info_errors(shared_data: Path, tmp_path: Path) -> None:
    broken = shared_data / "slides" / "broken.svs"
    res = runner.invoke(app, ["info", str(broken)])
    assert res.exit_code == 1 and f"error: {broken}:" in res.output
    png = tmp_path / "tile.png"
    from PIL import Image

    Image.new("RGB", (32, 16), "white").save(png)
    res = runner.invoke(app, ["info", str(png)])  # described, its mpp unknown
    assert res.exit_code == 0 and "unknown" in res.output and "--slide-mpp" in res.output
    res = runner.invoke(app, ["info", str(png), "--slide-mpp", "0.25", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["mpp"] == 0.25
    text = tmp_path / "notes.geojson"
    text.write_text("hello")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "histolib_cli.main",
            "info",
            str(png),
            "--slide-mpp",
            "0.25",
            "--annotations",
            str(text),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"error: {text}: not GeoJSON")
    assert "Traceback" not in done.stderr
