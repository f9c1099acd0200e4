"""``histolib transfer --scheduler``: the slide restained by a Dask worker, as here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from histolib_cli.main import app
from tests.helpers_cluster import dies_once
from tests.helpers_transfer import textured_slide, tiny_checkpoint

pytest.importorskip("torch")
pytest.importorskip("distributed")
openslide = pytest.importorskip("openslide")
pytestmark = [pytest.mark.cluster, pytest.mark.torch]
runner = CliRunner()


def _pixels(path: Path) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as handle:
        return np.asarray(handle.read_region((0, 0), 0, handle.dimensions))


def test_a_slide_restained_on_the_cluster_equals_the_local_run_despite_a_killed_worker(
    dask_cluster, tmp_path, monkeypatch
) -> None:
    from histolib_train.transfer import cluster

    checkpoint = tiny_checkpoint(tmp_path / "roi.pt")
    slide = textured_slide(tmp_path / "he.tif", width=600, height=400, mpp=0.25)
    args = ["transfer", str(checkpoint), str(slide), "--no-tissue", "--overlap", "8"]
    local = runner.invoke(app, [*args, "--out", str(tmp_path / "local.tif")])
    assert local.exit_code == 0, local.output
    marker = tmp_path / "killed"
    monkeypatch.setattr(cluster, "restain_task", dies_once(marker, cluster.restain_task))
    remote_out = tmp_path / "remote" / "v.tif"
    remote = runner.invoke(
        app, [*args, "--out", str(remote_out), "--scheduler", dask_cluster.scheduler_address]
    )
    assert remote.exit_code == 0, remote.output
    assert marker.is_file()  # the first worker died; the slide was restained by another
    assert f"wrote {remote_out} (300 x 200 px at 0.5 um/px" in remote.output
    np.testing.assert_array_equal(_pixels(remote_out), _pixels(tmp_path / "local.tif"))
    assert sorted(p.name for p in remote_out.parent.iterdir()) == ["v.thumbnail.png", "v.tif"]
    again = runner.invoke(
        app, [*args, "--out", str(remote_out), "--scheduler", str(dask_cluster.scheduler_file_path)]
    )
    assert again.exit_code == 0 and "kept" in again.output


def test_transfer_scheduler_errors_are_one_line(dask_cluster, tmp_path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "roi.pt")
    slide = textured_slide(tmp_path / "he.tif", width=200, height=160)
    address = dask_cluster.scheduler_address
    cases = [
        ([str(checkpoint), "--images", str(tmp_path)], "--scheduler restains a SLIDE"),
        ([str(checkpoint), str(tmp_path / "none.tif")], "none.tif: no such slide file"),
        ([str(tmp_path / "none.pt"), str(slide)], "none.pt: no such checkpoint"),
        ([str(checkpoint), str(slide), "--tile-size", "30"], "--tile-size must be a multiple"),
    ]
    for given, message in cases:
        out = tmp_path / "o" / "v.tif"
        result = runner.invoke(app, ["transfer", *given, "--out", str(out), "--scheduler", address])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not out.exists()
