"""Contours are repaired in bounded time: the ``structure`` repair, the ``repair_crossings``
limit refusing a contour of random vertices in one line, and NegativeROA holes cut through a
spatial index (issue: a 1,000-vertex random contour kept ``histolib info`` busy for minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from histolib.annotations.model import count_crossing_candidates, make_valid
from histolib.annotations.reading import read_annotations_report
from histolib.core.limits import override_limits
from histolib.errors import AnnotationError
from tests.unit.annotations.test_xml import scope_file, scope_layer, scope_region, square


def _random_ring(n: int, seed: int = 0) -> list[list[float]]:
    xy = np.random.default_rng(seed).uniform(0, 10_000, (n, 2)).round(1)
    return [*xy.tolist(), xy[0].tolist()]


def _geojson(path: Path, ring: list[list[float]]) -> Path:
    feature = {
        "type": "Feature",
        "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def test_bowtie_is_repaired_into_its_two_lobes() -> None:
    fixed = make_valid(Polygon([(0, 0), (10, 10), (10, 0), (0, 10)]))
    assert fixed.geom_type == "MultiPolygon" and fixed.is_valid
    assert fixed.area == pytest.approx(50.0)


def test_a_sliver_collapsed_to_a_line_is_dropped() -> None:
    assert make_valid(Polygon([(0, 0), (10, 0), (20, 0)])) is None


def test_crossing_candidates_grow_with_the_crossings_and_stop_early() -> None:
    circle = shapely.Point(0, 0).buffer(100, quad_segs=256)
    assert count_crossing_candidates(circle, stop_after=10**6) <= 1  # its closing vertex
    random = Polygon(_random_ring(2000))
    assert count_crossing_candidates(random, stop_after=1000) > 1000
    assert count_crossing_candidates(random, stop_after=1000) < 10 * 1000 * 2000


def test_random_1000_vertex_contour_is_repaired_promptly(tmp_path: Path) -> None:
    """Was minutes with the default repair; a generous bound through the subprocess timeout."""
    path = _geojson(tmp_path / "random.geojson", _random_ring(1000))
    code = textwrap.dedent(
        f"""
        from histolib.annotations.reading import read_annotations_report
        items, notes = read_annotations_report({str(path)!r})
        assert len(items) == 1 and items[0].geometry.is_valid and items[0].geometry.area > 0
        print(notes)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "repaired 1 invalid geometry" in done.stdout


@pytest.mark.parametrize("fmt", ["geojson", "xml"])
def test_contour_over_the_repair_limit_is_one_line(tmp_path: Path, fmt: str) -> None:
    ring = _random_ring(3000, seed=1)
    if fmt == "geojson":
        path = _geojson(tmp_path / "random.geojson", ring)
    else:
        path = scope_file(tmp_path / "random.xml", [scope_layer([scope_region(ring[:-1])])])
    with pytest.raises(AnnotationError) as info:
        read_annotations_report(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "--max-repair-crossings" in message and "HISTOLIB_MAX_REPAIR_CROSSINGS" in message
    with override_limits(repair_crossings=10**4):  # the same limit for a small contour
        with pytest.raises(AnnotationError, match="max-repair-crossings"):
            read_annotations_report(_geojson(tmp_path / "small.geojson", _random_ring(300)))


def test_many_negative_regions_cut_through_the_index(tmp_path: Path) -> None:
    """2,000 holes over 20 regions (the 20,000-hole case is measured, not tested)."""
    regions = []
    for k in range(20):
        strip = [(0, k * 200), (10_000, k * 200), (10_000, k * 200 + 100), (0, k * 200 + 100)]
        regions.append(scope_region(strip, region_id=len(regions)))
        regions += [
            scope_region(square(i * 100 + 10, k * 200 + 10, 20), negative=True, region_id=i)
            for i in range(100)
        ]
    regions.append(scope_region(square(-500, -500, 50), negative=True))  # overlaps nothing
    path = scope_file(tmp_path / "holes.xml", [scope_layer(regions)])
    items, notes = read_annotations_report(path)
    assert len(items) == 20
    assert all(len(a.geometry.interiors) == 100 for a in items)
    assert sum(a.geometry.area for a in items) == pytest.approx(20 * 10_000 * 100 - 2000 * 400)
    assert "cut 2000 negative region(s) (NegativeROA) out as holes" in notes
    assert any("skipped 1 negative region(s)" in note for note in notes)
