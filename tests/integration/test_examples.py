"""Every example in examples/ runs, as a user runs it (a subprocess), on synthetic data with
tiny settings, and makes the files it promises.

- ``examples/camelyon16/run_study.sh --synthetic``: the CAMELYON16 study on synthetic slides
  with CAMELYON16-style ASAP XML (the same commands as on the real data);
- ``examples/python_api.py``: the Python API on one synthetic slide;
- ``examples/qupath_curation.md``: its ``bash`` blocks, in order, with the QuPath step done by
  a script (a cell reclassified, one deleted, one drawn);
- ``examples/README.md`` lists them all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: Appended to the `histolib train` commands of the QuPath walk-through (the last value of an
#: option wins): a few steps of a small network instead of the authors' preset.
TINY_TRAIN = (
    " --epochs 1 --steps-per-epoch 2 --batch-size 2 --n-blocks 1 --ngf 8 --ndf 8"
    " --workers 0 --device cpu"
)


def example_env() -> dict[str, str]:
    """The environment of a user who installed histolib: ``histolib`` and ``python3`` on the
    PATH (this interpreter's), one thread per process, no display."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


def run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=cwd, env=example_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module", autouse=True)
def histolib_on_path() -> None:
    if shutil.which("histolib", path=example_env()["PATH"]) is None:
        pytest.fail("the histolib command is not installed beside this Python (pip install -e .)")


# ---------------------------------------------------------------------------------------------
# examples/camelyon16


def test_camelyon16_study_on_synthetic_data(tmp_path: Path) -> None:
    import geopandas as gpd
    import shapely

    from histolib.annotations.reading import read_annotations_report
    from histolib.tileset.manifest import read_manifest

    data, out = tmp_path / "CAMELYON16", tmp_path / "study"
    script = EXAMPLES / "camelyon16" / "run_study.sh"
    result = run(["bash", str(script), "--synthetic", str(data), str(out)], cwd=tmp_path)
    assert f"study done: {out}" in result.stdout
    # The synthetic data folder has CAMELYON16's layout and XML.
    assert sorted(p.name for p in (data / "annotations").iterdir()) == [
        "tumor_001.xml", "tumor_002.xml", "tumor_003.xml"
    ]  # fmt: skip
    assert (data / "images" / "normal_001.tif").is_file()
    assert "<ASAP_Annotations>" in (data / "annotations" / "tumor_001.xml").read_text()
    # 1-3: tiles of the slides with XML (contours recorded), IHC tiles, the split column.
    he, meta = read_manifest(out / "he" / "tiles.parquet")
    assert set(he["slide_id"]) == {"tumor_001", "tumor_002", "tumor_003"}
    assert {"positive", "negative"} <= set(he["label"])
    assert set(he["split"]) == {"train", "val", "test"}
    recorded = {info["annotation_path"] for info in meta["params"]["slides"].values()}
    assert all(path.endswith(".xml") for path in recorded)
    ihc, _ = read_manifest(out / "ihc" / "tiles.parquet")
    assert set(ihc["stain"]) == {"ihc"} and len(ihc) > 0
    for slide_id in ("tumor_001", "tumor_002", "tumor_003"):
        assert (out / "he" / "qc" / f"{slide_id}.png").is_file()
    # 4: both libraries; no cancer cell inside the _2 exclusion of tumor_001.
    library = gpd.read_parquet(out / "library_he.parquet")
    assert set(library["label"]) == {"cancer", "normal"}
    exclusion = [
        a.geometry
        for a in read_annotations_report(data / "annotations" / "tumor_001.xml")[0]
        if a.class_name == "_2"
    ]
    cancer = library[(library["label"] == "cancer") & (library["slide_id"] == "tumor_001")]
    assert len(exclusion) == 1 and len(cancer) > 0
    assert not shapely.contains_xy(exclusion[0], cancer["x"], cancer["y"]).any()
    assert set(gpd.read_parquet(out / "library_ihc.parquet")["label"]) <= {"cancer", "normal"}
    # 5: QuPath files; the XML contours with the exclusion as its own class, the tumour holed.
    exported = json.loads((out / "qupath" / "tumor_001.geojson").read_text())
    contours = [
        (f["properties"]["classification"]["name"], f["geometry"])
        for f in exported["features"]
        if f["properties"]["objectType"] == "annotation"
    ]
    assert {name for name, _ in contours} == {"_0", "_1", "_2"}
    assert any(name == "_0" and len(g["coordinates"]) > 1 for name, g in contours)  # holed
    assert (out / "qupath" / "ihc_001.geojson").is_file()
    # 6-8: the run, its evaluation, the grid.
    assert (out / "runs" / "roi" / "checkpoints" / "latest.pt").is_file()
    for name in ("table.md", "summary.json", "tiles.csv", "panel.png"):
        assert (out / "evaluation" / name).is_file()
    for name in ("table.md", "results.csv", "summary.json", "panel.png"):
        assert (out / "experiment" / name).is_file()
    assert len(list((out / "experiment" / "runs").iterdir())) == 4
    assert "paper_grid.yaml" in (out / "grid.yaml").read_text()


def test_camelyon16_study_usage_and_missing_xml(tmp_path: Path) -> None:
    script = str(EXAMPLES / "camelyon16" / "run_study.sh")
    env = example_env()
    usage = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    (tmp_path / "empty" / "annotations").mkdir(parents=True)
    empty = subprocess.run(
        ["bash", script, str(tmp_path / "empty"), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 1 and "no <slide>.xml" in empty.stderr


def test_study_grid_is_the_papers_grid_on_the_study(tmp_path: Path) -> None:
    import yaml

    from histolib_train.experiment.grid import read_grid

    script = EXAMPLES / "camelyon16" / "study_grid.py"
    full = run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path).stdout
    (tmp_path / "grid.yaml").write_text(full)
    paper = yaml.safe_load((EXAMPLES / "paper_grid.yaml").read_text())
    grid = yaml.safe_load(full)
    assert grid["grid"] == paper["grid"]
    assert (grid.get("preset"), grid.get("epochs")) == (paper.get("preset"), paper.get("epochs"))
    assert grid["he"] == str(tmp_path.resolve() / "he" / "tiles.parquet")
    assert grid["evaluation"]["n_tiles"] == 500
    runs = read_grid(tmp_path / "grid.yaml").runs
    assert [r.name for r in runs] == [r.name for r in read_grid(EXAMPLES / "paper_grid.yaml").runs]
    assert len(runs) >= 30


# ---------------------------------------------------------------------------------------------
# examples/python_api.py


def test_python_api_on_a_synthetic_slide(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "api"
    script = EXAMPLES / "python_api.py"
    result = run(
        [sys.executable, str(script), "--out", str(out), "--steps", "2", "--device", "cpu",
         "--side", "1536"],
        cwd=tmp_path,
    )  # fmt: skip
    assert "virtual IHC slide" in result.stdout
    for name in ("qc.png", "library_overlay.png", "virtual_ihc.png", "figure.png"):
        with Image.open(out / name) as image:
            assert image.width > 100 and image.height > 100
    assert (out / "virtual_ihc.tif").is_file() and (out / "qupath" / "case1.geojson").is_file()
    assert (out / "run" / "checkpoints" / "latest.pt").is_file()


def test_python_api_asks_for_the_contours_of_a_real_slide(
    tmp_path: Path, shared_data: Path
) -> None:
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api.py"), str(slide), "--out", str(tmp_path)],
        env=example_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "needs --annotations" in result.stderr


# ---------------------------------------------------------------------------------------------
# examples/qupath_curation.md


def bash_blocks(markdown: Path) -> list[str]:
    """The ```bash blocks of a markdown file, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown.read_text(encoding="utf-8"), re.S)
    return [re.sub(r"\\\n\s*", "", block) for block in blocks]


def curate_in_qupath_by_script(exported: Path, curated: Path) -> dict[str, int]:
    """What a person does in QuPath: one Tumor cell set to Normal, one Normal cell deleted, one
    Tumor cell drawn; the objects exported again (QuPath's own layout: no histolib ids)."""
    data = json.loads(exported.read_text(encoding="utf-8"))
    features = data["features"]
    cells = [f for f in features if f["properties"]["objectType"] == "detection"]
    tumour = [f for f in cells if f["properties"]["classification"]["name"] == "Tumor"]
    normal = [f for f in cells if f["properties"]["classification"]["name"] == "Normal"]
    assert tumour and len(normal) >= 1
    tumour[0]["properties"]["classification"] = {"name": "Normal", "color": [0, 0, 200]}
    features.remove(normal[0])
    ring = tumour[-1]["geometry"]["coordinates"][0]
    x0, y0 = min(x for x, _ in ring), min(y for _, y in ring)  # a box inside that cell's tile
    drawn = [[x0 + 2, y0 + 2], [x0 + 42, y0 + 2], [x0 + 42, y0 + 42], [x0 + 2, y0 + 42]]
    features.append(
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[*drawn, drawn[0]]]},
            "properties": {
                "objectType": "detection",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
            },
        }
    )
    curated.parent.mkdir(parents=True, exist_ok=True)
    curated.write_text(json.dumps(data), encoding="utf-8")
    # Tumor: one moved to Normal, one drawn; Normal: one deleted, one moved in.
    return {"cancer": len(tumour), "normal": len(normal)}


def test_qupath_curation_walkthrough(tmp_path: Path) -> None:
    import geopandas as gpd

    blocks = bash_blocks(EXAMPLES / "qupath_curation.md")
    assert len(blocks) == 4, "synth, export, import, train"
    synth, export, import_back, train = blocks
    run(["bash", "-euo", "pipefail", "-c", synth], cwd=tmp_path)
    run(["bash", "-euo", "pipefail", "-c", export], cwd=tmp_path)
    exported = tmp_path / "qupath" / "case1_he.geojson"
    assert exported.is_file()
    expected = curate_in_qupath_by_script(exported, tmp_path / "curated" / "case1_he.geojson")
    run(["bash", "-euo", "pipefail", "-c", import_back], cwd=tmp_path)
    curated = gpd.read_parquet(tmp_path / "library_he_curated.parquet")
    assert curated["label"].value_counts().to_dict() == expected
    assert "qupath" in set(curated["pass"])  # the drawn cell
    tiny = re.sub(r"(histolib train[^\n]*)", r"\1" + TINY_TRAIN, train)
    assert tiny != train
    run(["bash", "-euo", "pipefail", "-c", tiny], cwd=tmp_path)
    assert (tmp_path / "runs" / "curated" / "checkpoints" / "latest.pt").is_file()


# ---------------------------------------------------------------------------------------------
# examples/README.md


def test_examples_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    examples = [
        p.relative_to(EXAMPLES).as_posix()
        for p in EXAMPLES.iterdir()
        if p.name != "README.md" and not p.name.startswith((".", "__"))
    ]
    assert sorted(examples) == ["camelyon16", "paper_grid.yaml", "python_api.py",
                                "qupath_curation.md"]  # fmt: skip
    for name in examples:
        assert f"`{name}" in readme, name
    assert (EXAMPLES / "camelyon16" / "README.md").is_file()
