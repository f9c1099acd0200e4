"""Reading ASAP and Aperio ImageScope XML contours into the :class:`Annotation` objects of the
GeoJSON reader, and telling the three formats apart by content.

Formats (chosen by content, never by file name: :func:`annotation_format`):

- **ASAP XML** (CAMELYON16/17): root ``<ASAP_Annotations>``, then
  ``<Annotations><Annotation Name Type PartOfGroup Color><Coordinates><Coordinate Order X Y/>``.
  Points are sorted by ``Order`` (files list them out of order; a missing ``Order`` keeps the
  file order). ``Type`` ``Polygon`` and ``Spline`` become the polygon through their points (a
  spline is not interpolated), ``Rectangle`` the polygon of its 4 points; ``Dot``,
  ``PointSet`` and any other type are skipped with a counted note. ``PartOfGroup`` is the class
  (``"None"`` means unclassified); the group's colour under ``<AnnotationGroups>`` (``<Group>``
  or ``<AnnotationGroup>``) is the class colour, else the annotation's own ``Color``.
- **Aperio ImageScope XML**: root ``<Annotations>`` with ``<Region>`` descendants, then
  ``<Annotation Id Name LineColor><Attributes><Attribute Name Value/>...<Regions><Region Id Type
  NegativeROA Text><Vertices><Vertex X Y Z/>``. Region ``Type`` 0 (free hand / polygon) and 1
  (rectangle) are polygons through their vertices, 2 (ellipse) is given by 2 vertices, the
  corners of its bounding box, and becomes a 64-vertex polygon; 3 (arrow), 4 (ruler) and other
  types are skipped with a counted note. A ``NegativeROA="1"`` region is a hole: it is cut out
  of the regions of the same ``<Annotation>`` that it overlaps, and is not returned itself.
  The class is the ``<Annotation>``'s ``Name``, else its first ``<Attribute>``'s ``Value`` (or
  that attribute's ``Name`` unless it is ImageScope's default ``"Description"``), else the
  region's ``Text``. ``LineColor`` is a Windows COLORREF (``0x00BBGGRR``, decimal).

Coordinates are (x, y) level-0 (full-resolution) slide pixels in both dialects, as in the
GeoJSON reader. What was checked: for ASAP, the maintainers state that "annotations are always
stored with pixel coordinates at the highest resolution" (computationalpathologygroup/ASAP
issue #142). For ImageScope no Leica document was found in the reference search; the public
ImageScope-to-QuPath import scripts (QuPath issue #61 and the gists derived from it) and the
CAMELYON/TCGA tooling read ``Vertex`` X/Y as full-resolution image pixels with no scaling
(the root's ``MicronsPerPixel`` is the level-0 pixel size, kept in ``properties``).
Decimal commas (``X="1234,5"``, written by ASAP under some locales) are read as decimal
points; a number with both a comma and a point, or several commas, is not a coordinate.

CAMELYON16 convention (:func:`default_positive_classes`): in an ASAP file whose classes are
all among ``_0``, ``_1`` and ``_2`` (the training set's groups) or ``Tumor`` and ``Exclusion``
(the groups of the test set's lesion files, which the challenge's mask conversion maps to
tumour and to background: baidu-research/NCRF issue #40), groups ``_0``, ``_1`` and ``Tumor``
are tumour and ``_2`` and ``Exclusion`` are normal tissue inside a tumour that must be cut out.
Chosen so that the existing ``tumour_region(annotations, classes=...)`` needs no change: the
tumour geometries are returned *with the exclusion areas already subtracted*, and the
exclusion objects are returned with ``object_type="exclusion"`` (so that ``tumour_region``,
which only takes ``annotation`` objects, never unions them back in, and ``check_inside``
ignores them), geometry as drawn. ``tumour_region(annotations)`` and
``tumour_region(annotations, classes=("_0", "_1"))`` then both give the tumour without the
exclusions; :func:`default_positive_classes` returns the tumour groups (``("_0", "_1")`` for a
training-set file) for callers that record the positive classes.

Safety: files are parsed with :mod:`defusedxml` (any DTD, internal or external, entity
declarations and external entities are refused, so a "billion laughs" bomb fails at its
``<!DOCTYPE``, and nothing is ever fetched), and at
most :func:`annotation_bytes` are read (after gzip decompression, which is recognised by its magic
bytes). Every failure is one :class:`~histolib.errors.AnnotationError` line naming the file;
bad objects (non-numeric or non-finite coordinates, fewer than 3 points, nothing left after
repair) are skipped and counted in the notes.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

from histolib.annotations.model import (
    Annotation,
    AnnotationWarning,
    is_valid_bounded,
    make_valid,
)
from histolib.core.limits import current, read_at_most, too_large_message
from histolib.errors import AnnotationError

Format = Literal["geojson", "asap", "imagescope"]

#: Vertices of the polygon that approximates an ImageScope ellipse.
ELLIPSE_VERTICES = 64
#: File name endings of XML annotation files (for ``find_annotation_file``).
XML_SUFFIXES = (".xml", ".xml.gz")
#: CAMELYON16: tumour groups, and the group of normal tissue cut out of them.
CAMELYON16_POSITIVE = ("_0", "_1")
CAMELYON16_EXCLUSION = "_2"
#: The same roles in the CAMELYON16 test set's lesion files.
CAMELYON16_TEST_POSITIVE = ("Tumor",)
CAMELYON16_TEST_EXCLUSION = "Exclusion"
_CAMELYON16_TUMOUR = frozenset({*CAMELYON16_POSITIVE, *CAMELYON16_TEST_POSITIVE})
_CAMELYON16_EXCLUSIONS = frozenset({CAMELYON16_EXCLUSION, CAMELYON16_TEST_EXCLUSION})
#: ``object_type`` of the CAMELYON16 ``_2`` objects (not an ``annotation``: never a tumour).
EXCLUSION_TYPE = "exclusion"

_CHUNK = 1 << 20
_SNIFF_BYTES = 64 * 1024
_ASAP_REGION_TYPES = {"polygon": "Polygon", "spline": "Spline", "rectangle": "Rectangle"}
_IMAGESCOPE_TYPES = {"0": "polygon", "1": "rectangle", "2": "ellipse", "3": "arrow", "4": "ruler"}
_IMAGESCOPE_REGIONS = ("polygon", "rectangle", "ellipse")
# Elements of an ImageScope file; a root <Annotations> holding only these (and no <Region>) is
# an ImageScope file without regions, anything else is some other XML.
_IMAGESCOPE_TAGS = frozenset(
    {
        "Annotations",
        "Annotation",
        "Attributes",
        "Attribute",
        "Regions",
        "RegionAttributeHeaders",
        "AttributeHeader",
        "Region",
        "Vertices",
        "Vertex",
        "Plots",
    }
)


# --------------------------------------------------------------------------------------
# bounded reading and sniffing


@contextlib.contextmanager
def _stream(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes as a stream, gunzipped when it starts with the gzip magic bytes."""
    if not path.exists():
        raise AnnotationError("no such file", path=path)
    if path.is_dir():
        raise AnnotationError("is a folder, not an annotation file", path=path)
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as exc:
        raise AnnotationError(f"cannot read file ({exc.strerror or exc})", path=path) from exc
    with handle:
        magic = handle.read(2)
        handle.seek(0)
        if magic == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            if size > annotation_bytes():
                raise AnnotationError(too_large_message(size), path=path)
            yield handle


def annotation_bytes() -> int:
    """The largest annotation file read, after decompression (:mod:`histolib.core.limits`)."""
    return current().annotation_bytes


def _read(path: Path, limit: int) -> bytes | bytearray:
    """Up to ``limit`` bytes of the (gunzipped) file; an error when it holds more than
    :func:`annotation_bytes` and the whole file is asked for."""
    most = annotation_bytes()
    try:
        with _stream(path) as stream:
            data = read_at_most(stream, limit + 1 if limit >= most else limit)
    except AnnotationError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise AnnotationError(f"cannot read file ({exc})", path=path) from exc
    if len(data) > most:
        raise AnnotationError(too_large_message(), path=path)
    return data


def _looks_like_xml(head: bytes) -> bool:
    """Whether text starts with ``<`` after a byte-order mark and white space."""
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ):
        if head.startswith(bom):
            text = head[len(bom) :].decode(codec, errors="ignore")
            return text.lstrip().startswith("<")
    if head[:2] in (b"<\x00", b"\x00<"):  # UTF-16 without a byte-order mark
        return True
    return head.lstrip().startswith(b"<")


class _Decided(Exception):
    """Raised by the sniffing target to stop parsing once the dialect is known."""

    def __init__(self, dialect: str | None, root: str) -> None:
        super().__init__(dialect)
        self.dialect = dialect
        self.root = root


class _SniffTarget:
    """Parser target that decides the dialect from the first tags (see :func:`_dialect`)."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.foreign = False

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if self.root is None:
            self.root = tag
            if tag == "ASAP_Annotations":
                raise _Decided("asap", tag)
            if tag != "Annotations":
                raise _Decided(None, tag)
        elif tag == "Region":
            raise _Decided("imagescope", self.root)
        elif tag not in _IMAGESCOPE_TAGS:
            self.foreign = True

    def end(self, tag: str) -> None:
        return None

    def data(self, data: str) -> None:
        return None

    def close(self) -> None:
        return None


def _parser(target: Any = None) -> Any:
    from defusedxml.ElementTree import DefusedXMLParser

    return DefusedXMLParser(
        target=target, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )


def _xml_error(exc: BaseException, path: Path) -> AnnotationError:
    """The one-line error of a parse failure (defusedxml refusal, not well-formed, encoding)."""
    import defusedxml

    if isinstance(exc, defusedxml.DefusedXmlException):
        return AnnotationError(
            "refused XML: it has a DTD (<!DOCTYPE ...>), entities or an external entity "
            f"({type(exc).__name__}), which annotation files never need (entity-expansion "
            "bomb or external-entity attack?)",
            path=path,
        )
    position = getattr(exc, "position", None)
    where = f" at line {position[0]}, column {position[1] + 1}" if position else ""
    detail = str(exc).split(":")[0] if str(exc) else type(exc).__name__
    return AnnotationError(f"not well-formed XML{where} ({detail})", path=path)


_PARSE_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, SyntaxError)


def _sniff_xml(path: Path) -> str:
    """``asap`` or ``imagescope``, parsing only as far as needed; an error for other XML."""
    import defusedxml

    target = _SniffTarget()
    parser = _parser(target)
    total = 0
    most = annotation_bytes()
    try:
        with _stream(path) as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                if total > most:
                    raise AnnotationError(too_large_message(), path=path)
                parser.feed(chunk)
            parser.close()
    except _Decided as decided:
        if decided.dialect is None:
            raise _unknown_xml(decided.root, path) from None
        return decided.dialect
    except AnnotationError:
        raise
    except (defusedxml.DefusedXmlException, *_PARSE_ERRORS) as exc:
        raise _xml_error(exc, path) from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise AnnotationError(f"cannot read file ({exc})", path=path) from exc
    if target.root is None:
        raise AnnotationError("not well-formed XML (no element)", path=path)
    if target.foreign:
        raise _unknown_xml(target.root, path)
    return "imagescope"


def _unknown_xml(root: str, path: Path) -> AnnotationError:
    return AnnotationError(
        f"XML of an unknown kind (root element <{root[:60]}>): expected ASAP "
        "(<ASAP_Annotations>) or Aperio ImageScope (<Annotations> with <Region>s)",
        path=path,
    )


def annotation_format(path: str | Path) -> Format:
    """The format of an annotation file, from its content (the file name does not count).

    Parameters
    ----------
    path
        An annotation file, possibly gzip-compressed.

    Returns
    -------
    str
        ``"asap"`` (root ``<ASAP_Annotations>``), ``"imagescope"`` (root ``<Annotations>``
        with ``<Region>`` descendants, or holding only ImageScope elements) or ``"geojson"``
        (anything that does not start with ``<``; the GeoJSON reader judges it).

    Raises
    ------
    AnnotationError
        When the file is missing or unreadable, is XML that is not well-formed, refused
        (entities) or of another kind, or is larger than :func:`annotation_bytes`.
    """
    path = Path(path)
    head = _read(path, _SNIFF_BYTES)
    if not _looks_like_xml(head):
        return "geojson"
    return _sniff_xml(path)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# parsing


def _coordinate(text: str | None) -> float:
    """A finite coordinate; a decimal comma reads as a point. ``ValueError`` otherwise."""
    if text is None:
        raise ValueError("missing")
    value = text.strip()
    if "_" in value:  # float() would read "1_000" as 1000
        raise ValueError(value)
    if "," in value and "." not in value and value.count(",") == 1:
        value = value.replace(",", ".")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _hex_color(value: str | None) -> tuple[int, int, int] | None:
    if not value:
        return None
    text = value.strip().lstrip("#")
    if len(text) < 6:
        return None
    try:
        return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
    except ValueError:
        return None


def _colorref(value: str | None) -> tuple[int, int, int] | None:
    """(r, g, b) of a decimal Windows COLORREF ``0x00BBGGRR`` (ImageScope's ``LineColor``)."""
    if value is None:
        return None
    try:
        number = int(value.strip()) & 0xFFFFFF
    except ValueError:
        return None
    return (number & 0xFF, (number >> 8) & 0xFF, (number >> 16) & 0xFF)


class _Skip(Exception):
    """An object that is skipped; the message is the counted reason."""


def _polygon(points: Sequence[tuple[float, float]]) -> tuple[Any, bool]:
    """Valid polygonal geometry through the points, and whether it needed repair."""
    from shapely.geometry import Polygon

    if len(points) < 3:
        raise _Skip("with fewer than 3 points")
    geometry = Polygon(points)
    if not geometry.is_empty and is_valid_bounded(geometry):
        return geometry, False
    fixed = make_valid(geometry)
    if fixed is None or fixed.is_empty:
        raise _Skip("with an empty or degenerate geometry")
    return fixed, True


def _ellipse(points: Sequence[tuple[float, float]]) -> Any:
    """The 64-vertex polygon of the ellipse inscribed in the bounding box of the points."""
    import numpy as np
    from shapely.geometry import Polygon

    if len(points) < 2:
        raise _Skip("with fewer than 2 points (ellipse)")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    rx, ry = (max(xs) - min(xs)) / 2, (max(ys) - min(ys)) / 2
    if rx <= 0 or ry <= 0:
        raise _Skip("with an empty or degenerate geometry")
    angles = np.linspace(0.0, 2.0 * np.pi, ELLIPSE_VERTICES, endpoint=False)
    ring = np.column_stack((cx + rx * np.cos(angles), cy + ry * np.sin(angles)))
    return Polygon(ring)


def _asap_points(element: Any) -> list[tuple[float, float]]:
    keyed = []
    for index, coordinate in enumerate(element.findall("./Coordinates/Coordinate")):
        try:
            x = _coordinate(coordinate.get("X"))
            y = _coordinate(coordinate.get("Y"))
            order_text = coordinate.get("Order")
            order = index if order_text is None else _coordinate(order_text)
        except ValueError:
            raise _Skip("with non-numeric or non-finite coordinates") from None
        keyed.append((order, index, (x, y)))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [point for _, _, point in keyed]


def _vertices(element: Any) -> list[tuple[float, float]]:
    points = []
    for vertex in element.findall("./Vertices/Vertex"):
        try:
            points.append((_coordinate(vertex.get("X")), _coordinate(vertex.get("Y"))))
        except ValueError:
            raise _Skip("with non-numeric or non-finite coordinates") from None
    return points


def _none_if_blank(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _parse_asap(root: Any, counts: Counter[str]) -> tuple[list[Annotation], list[str]]:
    import shapely

    group_colors: dict[str, tuple[int, int, int] | None] = {}
    for group in root.findall("./AnnotationGroups/*"):
        name = _none_if_blank(group.get("Name"))
        if name is not None:
            group_colors[name] = _hex_color(group.get("Color"))
    out: list[Annotation] = []
    for element in root.findall("./Annotations/Annotation"):
        kind = (element.get("Type") or "").strip()
        label = _ASAP_REGION_TYPES.get(kind.casefold())
        if label is None:
            counts[f"of type {kind[:40] or '(none)'} (not a region)"] += 1
            continue
        try:
            geometry, repaired = _polygon(_asap_points(element))
        except _Skip as skip:
            counts[str(skip)] += 1
            continue
        counts["repaired"] += repaired
        group = _none_if_blank(element.get("PartOfGroup"))
        if group == "None":
            group = None
        color = group_colors.get(group) if group is not None else None
        properties: dict[str, Any] = {"format": "asap", **element.attrib}
        out.append(
            Annotation(
                geometry=geometry,
                object_type="annotation",
                class_name=group,
                name=_none_if_blank(element.get("Name")),
                properties=properties,
                color=color or _hex_color(element.get("Color")),
            )
        )
    notes: list[str] = []
    classes = {a.class_name for a in out}
    camelyon16 = bool(classes) and classes <= _CAMELYON16_TUMOUR | _CAMELYON16_EXCLUSIONS
    excluded = classes & _CAMELYON16_EXCLUSIONS
    if camelyon16 and excluded:
        holes = [a for a in out if a.class_name in excluded]
        cut = shapely.union_all([a.geometry for a in holes])
        shapely.prepare(cut)
        for annotation in holes:
            annotation.object_type = EXCLUSION_TYPE
        kept: list[Annotation] = []
        emptied = 0
        for annotation in out:
            if annotation.object_type == "annotation" and shapely.intersects(
                annotation.geometry, cut
            ):
                rest = make_valid(annotation.geometry.difference(cut))
                if rest is None or rest.is_empty or rest.area == 0:
                    emptied += 1
                    continue
                annotation.geometry = rest
            kept.append(annotation)
        out = kept
        tumour = sorted(classes & _CAMELYON16_TUMOUR) or CAMELYON16_POSITIVE
        notes.append(
            f"cut {len(holes)} exclusion region(s) (CAMELYON16 group {'/'.join(sorted(excluded))}) "
            f"out of the {'/'.join(tumour)} tumour contours"
        )
        if emptied:
            notes.append(f"dropped {emptied} tumour contour(s) lying wholly inside exclusions")
    return out, notes


def _imagescope_class(element: Any) -> str | None:
    name = _none_if_blank(element.get("Name"))
    if name is not None:
        return name
    attribute = element.find("./Attributes/Attribute")
    if attribute is not None:
        value = _none_if_blank(attribute.get("Value"))
        if value is not None:
            return value
        attribute_name = _none_if_blank(attribute.get("Name"))
        if attribute_name is not None and attribute_name != "Description":
            return attribute_name
    return None


def _cut_holes(positives: list[Annotation], holes: list[Any]) -> tuple[int, int]:
    """Cut the NegativeROA ``holes`` out of the regions of their layer that they overlap
    (in place); returns how many holes were cut and how many overlap no region.

    The overlaps are found with a spatial index and each region loses the union of its holes
    in one difference, so 20,000 holes cost seconds, not 20,000 x regions tests.
    """
    import numpy as np
    import shapely

    if not holes or not positives:
        return 0, len(holes)
    tree = shapely.STRtree([a.geometry for a in positives])
    hole_index, region_index = tree.query(np.asarray(holes, dtype=object), predicate="intersects")
    for region in np.unique(region_index):
        mine = [holes[i] for i in hole_index[region_index == region]]
        annotation = positives[int(region)]
        annotation.geometry = make_valid(annotation.geometry.difference(shapely.union_all(mine)))
    cut = len(np.unique(hole_index))
    return cut, len(holes) - cut


def _parse_imagescope(root: Any, counts: Counter[str]) -> tuple[list[Annotation], list[str]]:

    mpp = _none_if_blank(root.get("MicronsPerPixel"))
    out: list[Annotation] = []
    holes_cut = 0
    holes_outside = 0
    for layer in root.findall("./Annotation"):
        layer_class = _imagescope_class(layer)
        color = _colorref(layer.get("LineColor"))
        positives: list[Annotation] = []
        negatives: list[Any] = []
        for region in layer.findall("./Regions/Region"):
            code = (region.get("Type") or "").strip()
            kind = _IMAGESCOPE_TYPES.get(code)
            if kind not in _IMAGESCOPE_REGIONS:
                what = kind or f"type {code[:20] or '(none)'}"
                counts[f"of region {what} (not a region)"] += 1
                continue
            try:
                points = _vertices(region)
                if kind == "ellipse":
                    geometry, repaired = _ellipse(points), False
                elif kind == "rectangle" and len(points) == 2:
                    (x0, y0), (x1, y1) = points
                    geometry, repaired = _polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
                else:
                    geometry, repaired = _polygon(points)
            except _Skip as skip:
                counts[str(skip)] += 1
                continue
            counts["repaired"] += repaired
            if (region.get("NegativeROA") or "").strip() == "1":
                negatives.append(geometry)
                continue
            text = _none_if_blank(region.get("Text"))
            properties: dict[str, Any] = {
                "format": "imagescope",
                "annotation_id": layer.get("Id"),
                "region_type": kind,
                **region.attrib,
            }
            if mpp is not None:
                properties["MicronsPerPixel"] = mpp
            region_id = region.get("Id")
            positives.append(
                Annotation(
                    geometry=geometry,
                    object_type="annotation",
                    class_name=layer_class or text,
                    name=text or _none_if_blank(layer.get("Name")),
                    properties=properties,
                    color=color,
                    id=None if region_id is None else f"{layer.get('Id')}/{region_id}",
                )
            )
        cut, outside = _cut_holes(positives, negatives)
        holes_cut += cut
        holes_outside += outside
        for annotation in positives:
            if annotation.geometry is None or annotation.geometry.is_empty:
                counts["wholly inside negative regions (NegativeROA)"] += 1
            else:
                out.append(annotation)
    notes = []
    if holes_cut:
        notes.append(f"cut {holes_cut} negative region(s) (NegativeROA) out as holes")
    if holes_outside:
        notes.append(
            f"skipped {holes_outside} negative region(s) (NegativeROA) that overlap no region "
            "of their annotation"
        )
    return out, notes


def read_xml_annotations_report(path: str | Path) -> tuple[list[Annotation], list[str]]:
    """Read an ASAP or Aperio ImageScope XML file; returns ``(annotations, notes)``.

    Parameters
    ----------
    path
        The XML file (possibly gzip-compressed); its name does not matter.

    Returns
    -------
    annotations
        One :class:`Annotation` per polygonal object in file order, geometry valid, in
        level-0 px; ``object_type`` is ``annotation``, or ``exclusion`` for CAMELYON16 ``_2``
        objects (already cut out of the tumour ones; see the module docstring).
    notes
        One-line, counted descriptions of what was skipped, repaired or cut, as the GeoJSON
        reader's notes.

    Raises
    ------
    AnnotationError
        When the file is missing, larger than :func:`annotation_bytes`, not XML, not well-formed,
        refused (a DTD, entity declarations) or XML of another kind (one line naming the file).
    """
    import defusedxml
    import shapely

    path = Path(path)
    data = _read(path, annotation_bytes())
    if not _looks_like_xml(data[:_SNIFF_BYTES]):
        what = "empty file" if not data.strip() else "it does not start with '<': GeoJSON?"
        raise AnnotationError(f"not ASAP or ImageScope XML ({what})", path=path)
    parser = _parser()
    try:
        parser.feed(data)
        root = parser.close()
    except (defusedxml.DefusedXmlException, *_PARSE_ERRORS) as exc:
        raise _xml_error(exc, path) from exc
    finally:
        del data
    counts: Counter[str] = Counter()
    try:
        if root.tag == "ASAP_Annotations":
            annotations, notes = _parse_asap(root, counts)
        elif root.tag == "Annotations" and (
            root.find(".//Region") is not None or {e.tag for e in root.iter()} <= _IMAGESCOPE_TAGS
        ):
            annotations, notes = _parse_imagescope(root, counts)
        else:
            raise _unknown_xml(root.tag, path)
    except shapely.errors.GEOSException as exc:
        raise AnnotationError(f"unusable contour geometry ({exc})", path=path) from exc
    repaired = counts.pop("repaired", 0)
    head = [f"skipped {n} object(s) {reason}" for reason, n in sorted(counts.items()) if n]
    if repaired:
        head.append(f"repaired {repaired} invalid geometr{'y' if repaired == 1 else 'ies'}")
    return annotations, head + notes


def read_xml_annotations(path: str | Path) -> list[Annotation]:
    """Read an ASAP or ImageScope XML file; notes become one :class:`AnnotationWarning` each.

    See :func:`read_xml_annotations_report` for the result and errors.
    """
    annotations, notes = read_xml_annotations_report(path)
    for note in notes:
        warnings.warn(f"{path}: {note}", AnnotationWarning, stacklevel=2)
    return annotations


def default_positive_classes(annotations: Sequence[Annotation]) -> tuple[str, ...] | None:
    """The positive (tumour) classes a file implies by convention, or None when it has none.

    ``("_0", "_1")`` for annotations read from a CAMELYON16 training-set ASAP file (ASAP objects
    whose classes are all among ``_0``, ``_1``, ``_2``), the ``Tumor`` group for a test-set file
    (classes among ``Tumor``, ``Exclusion``, and the training groups); None otherwise (the
    caller's choice, or every annotation, applies).
    """
    if not annotations or not all(
        isinstance(a.properties, dict) and a.properties.get("format") == "asap" for a in annotations
    ):
        return None
    classes = {a.class_name for a in annotations}
    if classes <= {*CAMELYON16_POSITIVE, CAMELYON16_EXCLUSION}:
        return CAMELYON16_POSITIVE
    if classes <= _CAMELYON16_TUMOUR | _CAMELYON16_EXCLUSIONS:
        return tuple(sorted(classes & _CAMELYON16_TUMOUR)) or CAMELYON16_TEST_POSITIVE
    return None
