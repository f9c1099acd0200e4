"""Parameters of the cell-library pipeline, with the authors' defaults and the paper preset.

Every distance is in pixels **at** ``mpp`` (default 0.5 um/px, 20x): microns are the true unit.
When tiles are at another resolution, :meth:`LibraryParams.for_tile_mpp` scales every distance
by ``mpp / tile_mpp`` (a 40x tile at 0.25 um/px doubles them: graph distance 35 -> 70 px, box
48 -> 96 px). LoG thresholds are scale-normalised (``sigma**2``) and do not scale.

Presets: ``authors`` (the defaults: what the authors' code computed, docs/fidelity.md) and
``paper`` (the paper's text where it differs: healthy-cell graph edges under 25 px).
Parameter files are TOML or YAML with the field names below as keys (flat), e.g.::

    graph_distance = 25
    he_cancer_threshold = 0.02
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from histolib.core.options import (
    build_options,
    check_ranges,
    count_option,
    non_negative_option,
    option,
)
from histolib.errors import ConfigError
from histolib.slide.mpp import MAX_ANY_MPP

#: Upper bounds, in px of the tiles the detectors run on (256 px at 0.5 um/px; a value
#: scaled for 40x tiles doubles): a LoG sigma or Gaussian at most a quarter tile, a disk
#: (hull growth, DAB closing) at most half a tile, a box or graph edge at most a tile.
MAX_SIGMA_PX = 64.0
MAX_RADIUS_PX = 128.0
MAX_DISTANCE_PX = 256
MAX_NUM_SIGMA = 64
MAX_CLUSTER_SIZE = 10_000

PRESETS: dict[str, dict[str, Any]] = {"authors": {}, "paper": {"graph_distance": 25.0}}

#: Fields that are distances in px at ``mpp`` (scaled for tiles at another mpp).
DISTANCE_FIELDS = (
    "he_normal_gauss_sigma",
    "he_normal_min_sigma",
    "he_normal_max_sigma",
    "he_cancer_gauss_sigma",
    "he_cancer_min_sigma",
    "he_cancer_max_sigma",
    "ihc_normal_gauss_sigma",
    "ihc_normal_min_sigma",
    "ihc_normal_max_sigma",
    "ihc_cancer_gauss_sigma",
    "ihc_cancer_min_sigma",
    "ihc_cancer_max_sigma",
    "graph_distance",
    "dilation_radius",
    "dab_sigma",
    "dab_closing_radius",
    "box_size",
)

PASSES = ("he_normal", "he_cancer", "ihc_normal", "ihc_cancer")


@dataclass(frozen=True)
class DetectorParams:
    """One LoG detector pass (the authors' ``get_cells`` arguments)."""

    gauss_sigma: float
    min_sigma: float
    max_sigma: float
    threshold: float
    num_sigma: int
    overlap: float


@dataclass(frozen=True)
class LibraryParams:
    """All parameters of ``histolib build-library``; defaults = the authors' code.

    Attributes
    ----------
    mpp
        Microns per pixel at which the pixel values below are given (0.5 = 20x).
    he_normal_*
        H&E healthy nuclei on the H image: Gaussian 2, LoG sigma 1..2, threshold 0.1.
    he_cancer_*
        H&E cancer nuclei on the H image: Gaussian 1, sigma 10..12, threshold 0.01.
    ihc_normal_*
        IHC healthy nuclei on the H image: Gaussian 2, sigma 1..3, threshold 0.08.
    ihc_cancer_*
        IHC cancer nuclei on ``1 - DAB``: Gaussian 2, sigma 7..10, threshold 0.02.
    num_sigma, overlap
        ``blob_log``'s scale count and overlap pruning (all passes).
    graph_distance
        Healthy cells at most this far apart are connected (authors 35, paper 25).
    min_cluster_size
        Components of at least this many cells are clusters (3).
    dilation_radius
        The cluster hulls (and isolated cells) are grown by a disk of this radius (10).
    dab_sigma, dab_closing_radius, dab_no_stain_mean, dab_threshold
        The IHC DAB mask (:func:`histolib.stain.dab_mask`); ``dab_threshold`` None = Otsu.
    box_size
        Side of the square box centred on each nucleus (48); boxes that would leave the tile
        are dropped (centres closer than ``box_size // 2`` to an edge).
    detector
        ``fast`` (FFT scale space, identical results) or ``skimage`` (``blob_log``).
    """

    mpp: float = option(0.5, gt=0, le=MAX_ANY_MPP)
    he_normal_gauss_sigma: float = non_negative_option(2.0, le=MAX_SIGMA_PX)
    he_normal_min_sigma: float = option(1.0, gt=0, le=MAX_SIGMA_PX)
    he_normal_max_sigma: float = option(2.0, gt=0, le=MAX_SIGMA_PX)
    he_normal_threshold: float = option(0.1, gt=0)
    he_cancer_gauss_sigma: float = non_negative_option(1.0, le=MAX_SIGMA_PX)
    he_cancer_min_sigma: float = option(10.0, gt=0, le=MAX_SIGMA_PX)
    he_cancer_max_sigma: float = option(12.0, gt=0, le=MAX_SIGMA_PX)
    he_cancer_threshold: float = option(0.01, gt=0)
    ihc_normal_gauss_sigma: float = non_negative_option(2.0, le=MAX_SIGMA_PX)
    ihc_normal_min_sigma: float = option(1.0, gt=0, le=MAX_SIGMA_PX)
    ihc_normal_max_sigma: float = option(3.0, gt=0, le=MAX_SIGMA_PX)
    ihc_normal_threshold: float = option(0.08, gt=0)
    ihc_cancer_gauss_sigma: float = non_negative_option(2.0, le=MAX_SIGMA_PX)
    ihc_cancer_min_sigma: float = option(7.0, gt=0, le=MAX_SIGMA_PX)
    ihc_cancer_max_sigma: float = option(10.0, gt=0, le=MAX_SIGMA_PX)
    ihc_cancer_threshold: float = option(0.02, gt=0)
    num_sigma: int = count_option(10, le=MAX_NUM_SIGMA)
    overlap: float = non_negative_option(0.5, le=1)
    graph_distance: float = non_negative_option(
        35.0,
        help="Healthy-cell graph edge length, px (authors 35, paper 25).",
        cli="--graph-distance",
        le=MAX_DISTANCE_PX,
    )
    min_cluster_size: int = count_option(3, le=MAX_CLUSTER_SIZE)
    dilation_radius: float = non_negative_option(
        10.0, help="Growth of the cluster hulls, px.", cli="--dilation-radius", le=MAX_RADIUS_PX
    )
    dab_sigma: float = non_negative_option(1.0, le=MAX_SIGMA_PX)
    dab_closing_radius: float = non_negative_option(9.0, le=MAX_RADIUS_PX)
    dab_no_stain_mean: float = 0.85
    dab_threshold: float | None = option(None, aliases={"otsu": None})
    box_size: int = option(48, help="Box side, px.", cli="--box-size", ge=2, le=MAX_DISTANCE_PX)
    detector: Literal["fast", "skimage"] = option(
        "fast",
        help="fast (FFT scale space, identical results) or skimage (blob_log).",
        cli="--detector",
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        for p in PASSES:
            d = self.detector_params(p)
            if d.min_sigma > d.max_sigma:
                raise ConfigError(
                    f"{p}_min_sigma ({d.min_sigma:g}) must be <= {p}_max_sigma ({d.max_sigma:g})"
                )

    def detector_params(self, name: str) -> DetectorParams:
        """The :class:`DetectorParams` of pass ``name`` (``he_normal``, ``ihc_cancer``...)."""
        if name not in PASSES:
            raise ConfigError(f"unknown detector pass {name!r}; one of {', '.join(PASSES)}")
        return DetectorParams(
            gauss_sigma=getattr(self, f"{name}_gauss_sigma"),
            min_sigma=getattr(self, f"{name}_min_sigma"),
            max_sigma=getattr(self, f"{name}_max_sigma"),
            threshold=getattr(self, f"{name}_threshold"),
            num_sigma=self.num_sigma,
            overlap=self.overlap,
        )

    def for_tile_mpp(self, tile_mpp: float | None) -> LibraryParams:
        """These parameters with every distance scaled to tiles at ``tile_mpp`` um/px.

        Factor ``mpp / tile_mpp``; the box size is rounded to an even number of px.
        ``None`` or an mpp within 1e-6 of ``mpp`` returns ``self`` unchanged.
        """
        if tile_mpp is None or abs(tile_mpp - self.mpp) <= 1e-6:
            return self
        if tile_mpp <= 0:
            raise ConfigError(f"tile mpp must be positive, not {tile_mpp}")
        factor = self.mpp / tile_mpp
        changes: dict[str, Any] = {"mpp": float(tile_mpp)}
        for name in DISTANCE_FIELDS:
            value = getattr(self, name) * factor
            if name == "box_size":
                value = max(2, 2 * round(value / 2))
            changes[name] = value
        try:
            return dataclasses.replace(self, **changes)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} (the parameters scaled x{factor:.3g} for tiles at {tile_mpp:g} um/px)"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (for metadata and hashing)."""
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short stable hash of the parameters (cache keys)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


FIELD_NAMES = tuple(f.name for f in fields(LibraryParams))


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) parameter file into a flat dict.

    A nested table is flattened with ``_`` (``[he_cancer] threshold = 0.02`` is
    ``he_cancer_threshold``). Unknown keys are an error naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("parameter file not found", path=path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("parameter file is not UTF-8 text", path=path) from None
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError("parameter file must end in .toml, .yaml or .yml", path=path)
    except ConfigError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot parse parameters: {first}", path=path) from None
    if not isinstance(data, dict):
        raise ConfigError("parameter file must hold a table of key = value", path=path)
    flat: dict[str, Any] = {}

    def walk(prefix: str, table: dict[str, Any]) -> None:
        for key, value in table.items():
            name = f"{prefix}_{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(name, value)
            else:
                flat[name] = value

    walk("", data)
    return flat


def resolve_params(
    *,
    preset: str = "authors",
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> LibraryParams:
    """Build :class:`LibraryParams`: preset, then the file's values, then ``overrides``.

    Raises
    ------
    ConfigError
        For an unknown preset or key, or a value of the wrong kind.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    layers: list[dict[str, Any]] = [PRESETS[preset]]
    sources: list[str | None] = [None]
    if file is not None:
        layers.append(load_params_file(file))
        sources.append(str(file))
    if overrides:
        layers.append(dict(overrides))
        sources.append(None)  # a call or the command line: errors name the flag
    return build_options(
        LibraryParams, *layers, sources=tuple(sources), unknown="unknown parameter"
    )


def params_from_dict(data: dict[str, Any]) -> LibraryParams:
    """Rebuild :class:`LibraryParams` from :meth:`LibraryParams.to_dict` output."""
    return LibraryParams(**{k: v for k, v in data.items() if k in FIELD_NAMES})
