"""Make a small stand-in for the CAMELYON16 data folder: synthetic slides, ASAP XML contours.

    python examples/camelyon16/make_synthetic.py DATA [--tumour-slides 3] [--side 2048]

Writes the layout of the CAMELYON16 download (see README.md beside this file), so that
``run_study.sh`` runs on it exactly as on the real data:

    DATA/images/tumor_001.tif ...   H&E, 0.25 um/px (CAMELYON16 is scanned at 40x, about
                                    0.24 um/px), pyramidal TIFF as the challenge ships them
    DATA/images/normal_001.tif      an H&E slide without metastases (no XML, as in CAMELYON16)
    DATA/annotations/tumor_001.xml  ASAP XML written the way CAMELYON16's files are: groups
                                    ``_0`` and ``_1`` (tumour) and ``_2`` (normal tissue inside
                                    a tumour, cut out of it), decimal coordinates, the points
                                    listed out of ``Order``
    DATA/ihc/ihc_001.tif ...        IHC slides (cytokeratin-like DAB in cancer cells):
                                    CAMELYON16 has none, the study brings its own

The tumours of each slide come from the synthetic generator's own contours (its GeoJSON,
class ``Tumor``), rewritten as ASAP polygons; the first tumour of the first slide gets a
``_2`` exclusion around its centre. Re-running keeps the slides already there.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

#: CAMELYON16 scans at 40x; the synthetic slides are made at this level-0 resolution.
SLIDE_MPP = 0.25


def _asap_annotation(index: int, group: str, ring: list[list[float]], rng: random.Random) -> str:
    """One ``<Annotation>``: the ring's points with their ``Order``, listed shuffled."""
    points = ring[:-1] if ring[0] == ring[-1] else ring  # ASAP does not repeat the first point
    ordered = list(enumerate(points))
    rng.shuffle(ordered)
    coordinates = "\n".join(
        f'\t\t\t\t<Coordinate Order="{order}" X="{x:.4f}" Y="{y:.4f}" />'
        for order, (x, y) in ordered
    )
    return (
        f'\t\t<Annotation Name="Annotation {index}" Type="Polygon" PartOfGroup="{group}" '
        f'Color="#F4FA58">\n\t\t\t<Coordinates>\n{coordinates}\n\t\t\t</Coordinates>\n'
        "\t\t</Annotation>"
    )


def write_asap(path: Path, annotations: list[tuple[str, list[list[float]]]], seed: int) -> Path:
    """Write ``(group, ring)`` pairs as a CAMELYON16-style ASAP XML file."""
    rng = random.Random(seed)
    body = "\n".join(
        _asap_annotation(i, group, ring, rng) for i, (group, ring) in enumerate(annotations)
    )
    groups = "\n".join(
        f'\t\t<Group Name="{name}" PartOfGroup="None" Color="#FF0000">\n'
        "\t\t\t<Attributes />\n\t\t</Group>"
        for name in ("_0", "_1", "_2")
    )
    path.write_text(
        '<?xml version="1.0"?>\n<ASAP_Annotations>\n\t<Annotations>\n'
        f"{body}\n\t</Annotations>\n\t<AnnotationGroups>\n{groups}\n"
        "\t</AnnotationGroups>\n</ASAP_Annotations>\n",
        encoding="utf-8",
    )
    return path


def _exclusion_ring(ring: list[list[float]]) -> list[list[float]]:
    """A square of a third of the tumour's width around its centroid (a ``_2`` region)."""
    from shapely.geometry import Polygon

    tumour = Polygon(ring)
    centre = tumour.centroid
    minx, _, maxx, _ = tumour.bounds
    half = (maxx - minx) / 6
    x, y = centre.x, centre.y
    return [[x - half, y - half], [x + half, y - half], [x + half, y + half], [x - half, y + half]]


def contours_as_asap(geojson: Path, xml: Path, *, with_exclusion: bool, seed: int) -> int:
    """Rewrite the generator's tumour contours as ASAP XML; returns the number of tumours.

    Tumours alternate between groups ``_0`` and ``_1`` (CAMELYON16 uses both for tumour);
    with ``with_exclusion`` the first tumour gets a ``_2`` region inside it.
    """
    features = json.loads(geojson.read_text(encoding="utf-8"))["features"]
    annotations: list[tuple[str, list[list[float]]]] = []
    for i, feature in enumerate(features):
        ring = feature["geometry"]["coordinates"][0]
        annotations.append(("_0" if i % 2 == 0 else "_1", ring))
    if with_exclusion and annotations:
        annotations.append(("_2", _exclusion_ring(annotations[0][1])))
    write_asap(xml, annotations, seed)
    return len(features)


def _render(folder: Path, name: str, stain: str, seed: int, **options: object) -> Path | None:
    """Render one slide unless it is there; returns its generator contours (None if kept)."""
    from histolib.synthetic import make_slide

    if (folder / f"{name}.tif").is_file():
        print(f"{folder / f'{name}.tif'} (kept)")
        return None
    slide = make_slide(folder, name=name, stain=stain, seed=seed, **options)
    slide.cells_path.unlink()  # CAMELYON16 ships slides and XML only
    print(f"{slide.slide_path}")
    return slide.annotations_path


def make_data(data: Path, *, tumour_slides: int = 3, ihc_slides: int = 2, side: int = 2048) -> None:
    """Write the synthetic CAMELYON16-style folder ``data`` (see the module docstring)."""
    images, annotations, ihc = data / "images", data / "annotations", data / "ihc"
    annotations.mkdir(parents=True, exist_ok=True)
    common = {"width": side, "height": side, "mpp": SLIDE_MPP}
    for i in range(1, tumour_slides + 1):
        name = f"tumor_{i:03d}"
        geojson = _render(images, name, "he", i, **common)
        if geojson is not None:
            xml = annotations / f"{name}.xml"
            n = contours_as_asap(geojson, xml, with_exclusion=i == 1, seed=i)
            geojson.unlink()
            print(f"  {xml}: {n} tumour contours" + (" and a _2 exclusion" if i == 1 else ""))
    geojson = _render(images, "normal_001", "he", 100, n_tumours=0, **common)
    if geojson is not None:
        geojson.unlink()  # no metastases: CAMELYON16 gives normal slides no XML
    for i in range(1, ihc_slides + 1):
        geojson = _render(ihc, f"ihc_{i:03d}", "ihc", 200 + i, **common)
        if geojson is not None:
            geojson.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="Folder to write (created).")
    parser.add_argument("--tumour-slides", type=int, default=3, help="H&E slides with XML.")
    parser.add_argument("--ihc-slides", type=int, default=2, help="IHC slides.")
    parser.add_argument("--side", type=int, default=2048, help="Slide side in px at 0.25 um/px.")
    args = parser.parse_args()
    make_data(
        args.data, tumour_slides=args.tumour_slides, ihc_slides=args.ihc_slides, side=args.side
    )


if __name__ == "__main__":
    main()
