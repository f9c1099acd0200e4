"""The layout of a synthetic slide: everything true about it, drawn from a seed.

A *layout* (:func:`make_layout`) holds tissue pieces and tumour contours as shapely polygons,
vessel lumens and fat cells as holes in the tissue, red blood cells, and every nucleated cell
(centre, class, nucleus shape) in level-0 pixels: tumour nests of large pale cancer nuclei
with a rim and nucleoli, spindle stromal nuclei, lymphocytes scattered and in dense
aggregates, endothelial nuclei along the vessels. It depends only on the seed, the size and
the mpp, never on the stain, so the H&E and the IHC renderings of one layout form a
registered pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from histolib.errors import ConfigError
from histolib.synthetic.noise import value_noise_points
from histolib.synthetic.nuclei import (
    KIND_CANCER,
    KIND_ENDOTHELIAL,
    KIND_LYMPHOCYTE,
    KIND_STROMAL,
    ORIENTATIONS,
    Sprite,
    sprite_banks,
)
from histolib.synthetic.tissue import (
    endothelium,
    hex_points,
    make_fat,
    make_tissue,
    make_tumours,
    make_vessels,
    poisson_points,
)


@dataclass(frozen=True, eq=False)
class Layout:
    """Everything true about a synthetic slide; see :func:`make_layout`.

    Coordinates are level-0 px, (x, y). Cell centres lie on pixel centres (``k + 0.5``).

    ``tissue`` and ``tumours`` are shapely polygons; ``holes`` are empty spaces inside the
    tissue (vessel lumens, fat cells), ``walls`` the vessel walls (lumen grown by the wall
    thickness); ``rbc`` holds red blood cells in the lumens as rows ``(x, y, sprite)``. The
    nucleated cells (arrays ``x, y, kind, ...``) are those of the cells CSV.
    """

    width: int
    height: int
    mpp: float
    seed: int
    tissue: tuple[Any, ...]
    tumours: tuple[Any, ...]
    x: np.ndarray
    y: np.ndarray
    kind: np.ndarray
    sprite: np.ndarray
    transform: np.ndarray
    shade: np.ndarray
    radius: np.ndarray
    sprites: tuple[tuple[Sprite, ...], ...]
    holes: tuple[Any, ...] = ()
    walls: tuple[Any, ...] = ()
    rbc: np.ndarray = field(default_factory=lambda: np.empty((0, 3)), repr=False)
    rbc_sprites: tuple[np.ndarray, ...] = field(default=(), repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    _maps: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}  # a cache, rebuilt where the layout is used
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def sprite_maps(self, i: int) -> tuple[Sprite, np.ndarray, np.ndarray, np.ndarray | None]:
        """Cell ``i``'s sprite and its density, nucleus and cytoplasm maps, as drawn (cached)."""
        k = (int(self.kind[i]), int(self.sprite[i]), int(self.transform[i]))
        found = self._maps.get(k)
        if found is None:
            sp = self.sprites[k[0]][k[1]]
            t = k[2]

            def tf(a: np.ndarray) -> np.ndarray:
                a = np.rot90(a, t % 4)
                return np.ascontiguousarray(a[:, ::-1] if t >= 4 else a)

            found = (
                sp,
                tf(sp.density),
                tf(sp.inside),
                None if sp.cytoplasm is None else tf(sp.cytoplasm),
            )
            self._maps[k] = found
        return found

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.x)

    @property
    def is_cancer(self) -> np.ndarray:
        """Boolean array, True for cancer cells."""
        return self.kind == KIND_CANCER

    @property
    def labels(self) -> np.ndarray:
        """Array of ``"cancer"`` / ``"normal"`` per cell."""
        return np.where(self.is_cancer, "cancer", "normal")

    @property
    def tumour_region(self) -> Any:
        """Union of the tumour contours (a shapely geometry, possibly empty)."""
        import shapely

        return shapely.union_all(list(self.tumours))

    @property
    def tissue_region(self) -> Any:
        """Union of the tissue pieces less the holes (a shapely geometry)."""
        import shapely

        region = shapely.union_all(list(self.tissue))
        return region.difference(shapely.union_all(list(self.holes))) if self.holes else region

    def polygon_bounds(self, name: str) -> np.ndarray:
        """Bounds ``(n, 4)`` of the polygons of attribute ``name`` (cached)."""
        import shapely

        key = ("bounds", name)
        if key not in self._maps:
            polys = getattr(self, name)
            self._maps[key] = (
                shapely.bounds(np.asarray(polys, dtype=object)) if polys else np.empty((0, 4))
            )
        return self._maps[key]

    def cells_in(
        self, x0: float, y0: float, w: float, h: float, *, margin: float = 0
    ) -> np.ndarray:
        """Indices of the cells whose centre lies in the box (level-0 px), grown by ``margin``."""
        sel = (
            (self.x >= x0 - margin)
            & (self.x < x0 + w + margin)
            & (self.y >= y0 - margin)
            & (self.y < y0 + h + margin)
        )
        return np.flatnonzero(sel)


def check_size(width: int, height: int, mpp: float) -> None:
    """Raise :class:`ConfigError` unless the slide is at least 64 px square with a valid mpp."""
    if int(width) < 64 or int(height) < 64:
        raise ConfigError(f"slide size must be at least 64 x 64 px, not {width} x {height}")
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ConfigError(f"mpp must be a positive number, not {mpp}")


def _check_options(
    n_tumours: int | None,
    tumour_fraction: float,
    cell_density: float,
    cancer_radius_um: tuple[float, float],
    cancer_texture: float,
) -> tuple[float, float]:
    """Validate the layout options; returns the cancer radius range as floats."""
    if n_tumours is not None and n_tumours < 0:
        raise ConfigError(f"n_tumours must be >= 0, not {n_tumours}")
    if not 0 <= tumour_fraction <= 0.9:
        raise ConfigError(f"tumour_fraction must be in [0, 0.9], not {tumour_fraction}")
    if not cell_density >= 0:
        raise ConfigError(f"cell_density must be >= 0, not {cell_density}")
    lo, hi = (float(v) for v in cancer_radius_um)
    if not 0 < lo <= hi:
        raise ConfigError(
            f"cancer_radius_um must be (low, high) with 0 < low <= high, not {cancer_radius_um}"
        )
    if not 0 <= cancer_texture <= 1:
        raise ConfigError(f"cancer_texture must be in [0, 1], not {cancer_texture}")
    return lo, hi


def _spaces(
    rng: np.random.Generator, tissue_union: Any, tumour_union: Any, px_um: float, short_px: float
) -> tuple[list[Any], list[Any], list[Any]]:
    """Fat lobules and small vessels away from the tumours: (lumens, fat cells, vessel walls)."""
    import shapely

    avoid = tumour_union.buffer(40 * px_um)
    lobules, fat_cells = make_fat(rng, tissue_union, avoid, px_um, short_px)
    if lobules:
        avoid = avoid.union(shapely.union_all(lobules).buffer(20 * px_um))
    lumens, walls = make_vessels(rng, tissue_union, avoid, px_um)
    return lumens, fat_cells, walls


def _red_cells(
    rng: np.random.Generator, lumens: list[Any], px_um: float, n_sprites: int
) -> np.ndarray:
    """Red blood cells filling each lumen partly: rows ``(x, y, sprite)``."""
    rbc_pts = [np.empty((0, 2))]
    for lumen in lumens:
        fill = rng.uniform(0, 0.8)
        rbc_pts.append(
            poisson_points(rng, lumen.buffer(-2.5 * px_um), fill / (math.pi * (3.6 * px_um) ** 2))
        )
    rbc_xy = np.floor(np.concatenate(rbc_pts)) + 0.5
    return np.column_stack([rbc_xy, rng.integers(0, n_sprites, len(rbc_xy))])


def _cancer_points(
    rng: np.random.Generator,
    tumours: list[Any],
    cancer_sprites: tuple[Sprite, ...],
    px_um: float,
    seed: int,
) -> np.ndarray:
    """Cancer cell centres: a jittered hexagonal packing inside each tumour, broken into nests."""
    import shapely

    radii = np.array([s.radius for s in cancer_sprites])
    cytoplasm = radii * 1.75
    spacing = 2 * float(cytoplasm.mean()) * 0.95
    cancer_pts = []
    for poly in tumours:
        inner = poly.buffer(-float(radii.max()) - 2)
        if inner.is_empty:
            continue
        pts = hex_points(rng, inner.bounds, spacing)
        pts = pts[shapely.contains_xy(inner, pts[:, 0], pts[:, 1])]
        nests = value_noise_points(pts[:, 0], pts[:, 1], cell=70 * px_um, key=seed * 7 + 1)
        cancer_pts.append(pts[nests > 0.2])
    return np.concatenate(cancer_pts) if cancer_pts else np.empty((0, 2))


def _lymphocyte_points(
    rng: np.random.Generator,
    tissue_union: Any,
    tumour_union: Any,
    px_um: float,
    cell_density: float,
) -> np.ndarray:
    """Lymphocyte centres: dense aggregates outside the tumours, and scattered everywhere."""
    import shapely

    um2 = px_um * px_um  # px^2 per um^2
    tissue_mm2 = tissue_union.area / um2 / 1e6
    lymph_pts = []
    outside = tissue_union.difference(tumour_union.buffer(40 * px_um))
    n_aggr = rng.poisson(max(tissue_mm2, 0.3) * 0.8 * cell_density)
    for _ in range(n_aggr):
        centre = poisson_points(rng, outside, 5e-5 / um2)
        if len(centre) == 0:
            continue
        n = int(rng.uniform(40, 250))
        sigma = rng.uniform(18, 30) * px_um * math.sqrt(n / 100)
        lymph_pts.append(centre[0] + rng.normal(0, sigma, (n, 2)))
    lymph_pts.append(poisson_points(rng, tissue_union, 220e-6 / um2 * cell_density))
    lymph = np.concatenate(lymph_pts)
    return lymph[shapely.contains_xy(tissue_union, lymph[:, 0], lymph[:, 1])]


def _assign_sprites(
    rng: np.random.Generator,
    kind: np.ndarray,
    endo_angle: np.ndarray,
    sprites: tuple[tuple[Sprite, ...], ...],
) -> tuple[np.ndarray, np.ndarray]:
    """A random sprite per cell (endothelial ones along their wall) and its nucleus radius."""
    sprite = np.empty(len(kind), np.int16)
    for k in (KIND_LYMPHOCYTE, KIND_STROMAL, KIND_CANCER):
        sel = kind == k
        sprite[sel] = rng.integers(0, len(sprites[k]), int(sel.sum()))
    orient = np.round(endo_angle / (math.pi / ORIENTATIONS)).astype(int) % ORIENTATIONS
    sprite[kind == KIND_ENDOTHELIAL] = orient + ORIENTATIONS * rng.integers(0, 3, len(endo_angle))
    radius = np.array([sprites[k][s].radius for k, s in zip(kind, sprite, strict=True)], np.float32)
    return sprite, radius


def _thin(
    points: np.ndarray, extent: np.ndarray, factor: np.ndarray, core: np.ndarray
) -> np.ndarray:
    """Greedy removal of overlapping cells, earlier cells first; returns the kept mask.

    Cells ``i`` and ``j`` overlap when closer than ``(extent_i + extent_j) * min(factor)``,
    or, when both have a ``core`` > 0, closer than ``core_i + core_j``.
    """
    from scipy.spatial import cKDTree

    keep = np.ones(len(points), bool)
    if len(points) < 2:
        return keep
    pairs = cKDTree(points).query_pairs(r=2 * float(extent.max()), output_type="ndarray")
    if len(pairs) == 0:
        return keep
    i, j = pairs[:, 0], pairs[:, 1]
    dist = np.hypot(*(points[i] - points[j]).T)
    need = (extent[i] + extent[j]) * np.minimum(factor[i], factor[j])
    # two cells that both have a core extent (cancer cells) may share cytoplasm
    both = (core[i] > 0) & (core[j] > 0)
    need[both] = core[i][both] + core[j][both]
    bad = pairs[dist < need]
    bad.sort(axis=1)
    bad = bad[np.lexsort((bad[:, 1], bad[:, 0]))]
    for a, b in bad.tolist():
        if keep[a] and keep[b]:
            keep[b] = False
    return keep


def _keep_cells(
    pts: np.ndarray,
    kind: np.ndarray,
    radius: np.ndarray,
    holes: list[Any],
    width: int,
    height: int,
) -> np.ndarray:
    """Mask of the cells kept: not overlapping earlier ones, inside the frame, not in a hole."""
    import shapely

    extent = np.where(kind == KIND_CANCER, 1.75 * radius, radius)
    extent = np.where(kind == KIND_STROMAL, 1.1 * radius, extent)
    factor = np.where(kind == KIND_LYMPHOCYTE, 0.9, 1.05)
    inside_frame = (pts[:, 0] > 0) & (pts[:, 0] < width) & (pts[:, 1] > 0) & (pts[:, 1] < height)
    core = np.where(kind == KIND_CANCER, 1.2 * radius, 0.0)
    keep = _thin(pts, extent, factor, core) & inside_frame
    if holes:
        keep &= ~shapely.contains_xy(shapely.union_all(holes), pts[:, 0], pts[:, 1])
    return keep


def _cells(
    rng: np.random.Generator,
    groups: dict[int, np.ndarray],
    endo_angle: np.ndarray,
    sprites: tuple[tuple[Sprite, ...], ...],
    holes: list[Any],
    size: tuple[int, int],
) -> dict[str, np.ndarray]:
    """The nucleated cells of a layout from candidate centres per kind (earlier kinds win).

    Returns the :class:`Layout` cell arrays ``x, y, kind, sprite, transform, shade, radius``.
    """
    pts = np.concatenate(list(groups.values()))
    kind = np.concatenate([np.full(len(p), k, np.int8) for k, p in groups.items()])
    sprite, radius = _assign_sprites(rng, kind, endo_angle, sprites)
    pts = np.floor(pts) + 0.5
    keep = _keep_cells(pts, kind, radius, holes, *size)
    pts, kind, sprite, radius = pts[keep], kind[keep], sprite[keep], radius[keep]
    n = len(pts)
    transform = rng.integers(0, 8, n).astype(np.int8)
    transform[kind == KIND_ENDOTHELIAL] = 0  # drawn along the wall already
    shade = np.where(
        kind == KIND_CANCER, rng.uniform(0.85, 1.15, n), rng.uniform(0.85, 1.08, n)
    ).astype(np.float32)
    return {
        "x": pts[:, 0].copy(),
        "y": pts[:, 1].copy(),
        "kind": kind,
        "sprite": sprite,
        "transform": transform,
        "shade": shade,
        "radius": radius,
    }


def make_layout(
    width: int = 4096,
    height: int = 4096,
    *,
    mpp: float = 0.5,
    seed: int = 0,
    n_tumours: int | None = None,
    tumour_fraction: float = 0.25,
    cell_density: float = 1.0,
    cancer_radius_um: tuple[float, float] = (6.0, 7.5),
    cancer_texture: float = 1.0,
) -> Layout:
    """Draw the tissue, tumours and cells of a synthetic slide.

    The result depends only on the arguments (never on a stain), so renderings of one layout
    in H&E and IHC are registered.

    Parameters
    ----------
    width, height
        Level-0 size in px.
    mpp
        Microns per pixel at level 0; every size is drawn in microns and scales with it.
    seed
        Random seed.
    n_tumours
        Number of tumour nests; None chooses as many as cover about ``tumour_fraction`` of
        the tissue. Fewer are placed when the tissue has no room for more.
    tumour_fraction
        Target fraction of the tissue area inside tumour contours when ``n_tumours`` is None.
    cell_density
        Multiplier of the stromal and lymphocyte densities.
    cancer_radius_um
        Range of cancer nucleus radii in microns (normal nuclei: about 2.4-3.1 um
        lymphocytes, 4-6 x 1.4-2 um spindle cells).
    cancer_texture
        0..1, how much cancer nuclei differ from normal ones besides size (see
        :func:`~histolib.synthetic.nuclei.nucleus_sprite`); lower values make a harder
        detection task.

    Returns
    -------
    Layout
    """
    import shapely

    check_size(width, height, mpp)
    lo, hi = _check_options(
        n_tumours, tumour_fraction, cell_density, cancer_radius_um, cancer_texture
    )
    px_um = 1.0 / mpp
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5E17])
    tissue = make_tissue(rng, width, height, px_um)
    tumours = make_tumours(rng, tissue, n_tumours, tumour_fraction, px_um, width, height)
    sprites, rbc_sprites = sprite_banks(
        rng, px_um, cancer_radius_um=(lo, hi), cancer_texture=cancer_texture
    )
    tissue_union = shapely.union_all(tissue)
    tumour_union = shapely.union_all(tumours) if tumours else shapely.Polygon()
    lumens, fat_cells, walls = _spaces(rng, tissue_union, tumour_union, px_um, min(width, height))
    endo, endo_angle = endothelium(rng, lumens, px_um)
    holes = lumens + fat_cells
    rbc = _red_cells(rng, lumens, px_um, len(rbc_sprites))
    groups = {KIND_CANCER: _cancer_points(rng, tumours, sprites[KIND_CANCER], px_um, seed)}
    groups[KIND_ENDOTHELIAL] = endo
    groups[KIND_LYMPHOCYTE] = _lymphocyte_points(
        rng, tissue_union, tumour_union, px_um, cell_density
    )
    stromal_density = 900e-6 / (px_um * px_um) * cell_density
    groups[KIND_STROMAL] = poisson_points(rng, tissue_union, stromal_density)
    cells = _cells(rng, groups, endo_angle, sprites, holes, (width, height))
    return Layout(
        width=int(width),
        height=int(height),
        mpp=float(mpp),
        seed=int(seed),
        tissue=tuple(tissue),
        tumours=tuple(tumours),
        **cells,
        sprites=sprites,
        holes=tuple(holes),
        walls=tuple(walls),
        rbc=rbc,
        rbc_sprites=rbc_sprites,
        params={
            "width": int(width),
            "height": int(height),
            "mpp": float(mpp),
            "seed": int(seed),
            "n_tumours": n_tumours,
            "tumour_fraction": float(tumour_fraction),
            "cell_density": float(cell_density),
            "cancer_radius_um": [lo, hi],
            "cancer_texture": float(cancer_texture),
        },
    )
