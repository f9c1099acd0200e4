"""Nucleus and red-blood-cell sprites of synthetic slides: small pre-rendered density maps.

Sizes are drawn in microns and scale with the mpp. At 0.5 um/px normal nuclei (lymphocytes,
spindle stromal cells) have radii of about 5-7 px, cancer nuclei about 12-15 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Cell kinds of a layout (``Layout.kind``); lymphocytes and stromal cells are "normal".
KIND_LYMPHOCYTE, KIND_STROMAL, KIND_CANCER, KIND_ENDOTHELIAL = 0, 1, 2, 3
#: Orientations of the endothelial nucleus sprites (over 180 degrees).
ORIENTATIONS = 16
#: Sprites drawn per cell kind, and red blood cell sprites.
_SPRITES_PER_KIND = 48
_RBC_SPRITES = 12


@dataclass(frozen=True, eq=False)
class Sprite:
    """One pre-rendered nucleus shape (arrays are (row, col), centred on the nucleus centre).

    Attributes
    ----------
    density
        Hematoxylin density of the nucleus in [0, 1].
    inside
        Soft mask of the nucleus in [0, 1] (DAB is kept out of it).
    cytoplasm
        Soft mask of the cell's cytoplasm in [0, 1] (cancer cells), else None.
    radius
        Equivalent nucleus radius in px (radius of the disc of the same area).
    half
        The arrays are ``2 * half + 1`` px square.
    """

    density: np.ndarray
    inside: np.ndarray
    cytoplasm: np.ndarray | None
    radius: float
    half: int


def nucleus_sprite(
    rng: np.random.Generator,
    kind: int,
    px_um: float,
    *,
    cancer_radius_um: tuple[float, float] = (6.0, 7.5),
    cancer_texture: float = 1.0,
    phi: float | None = None,
) -> Sprite:
    """Render one nucleus (and, for cancer cells, its cytoplasm) as small arrays.

    ``cancer_texture`` in [0, 1] scales what tells a cancer nucleus apart besides its size:
    1 = pale vesicular chromatin, dark rim and nucleoli; 0 = as dense and plain as a normal
    nucleus. The random draws do not depend on it, so only the appearance changes. ``phi``
    fixes the orientation of the long axis (endothelial cells lie along the vessel wall).
    """
    from scipy import ndimage

    if kind == KIND_LYMPHOCYTE:
        r = rng.uniform(2.4, 3.1) * px_um
        aspect = rng.uniform(1.0, 1.15)
        a, b, rough, taper = r * math.sqrt(aspect), r / math.sqrt(aspect), 0.04, 0.0
    elif kind == KIND_STROMAL:
        a, b = rng.uniform(4.0, 6.0) * px_um, rng.uniform(1.4, 2.0) * px_um
        rough, taper = 0.03, 0.35
    elif kind == KIND_ENDOTHELIAL:
        a, b = rng.uniform(4.5, 6.5) * px_um, rng.uniform(1.1, 1.5) * px_um
        rough, taper = 0.02, 0.3
    else:
        r = rng.uniform(*cancer_radius_um) * px_um
        aspect = rng.uniform(1.0, 1.3)
        a, b, rough, taper = r * math.sqrt(aspect), r / math.sqrt(aspect), 0.07, 0.0
    cyt_r = rng.uniform(1.6, 1.9) * math.sqrt(a * b) if kind == KIND_CANCER else 0.0
    offset = rng.uniform(0, 0.2) * math.sqrt(a * b) if kind == KIND_CANCER else 0.0
    half = math.ceil(max(a * 1.25, cyt_r * 1.2 + offset)) + 2
    v, u = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    drawn = rng.uniform(0, np.pi)
    phi = drawn if phi is None else phi
    p = u * math.cos(phi) + v * math.sin(phi)
    q = -u * math.sin(phi) + v * math.cos(phi)
    b_eff = b * np.clip(1 - taper * (p / a) ** 2, 0.3, 1)
    theta = np.arctan2(q / b, p / a)
    scale = np.ones_like(theta)
    for k in range(2, 7):
        scale += rng.normal(0, rough / k**0.8) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    d = np.sqrt((p / a) ** 2 + (q / b_eff) ** 2) / scale
    r_eq = math.sqrt(a * b)
    inside = np.clip((1 - d) * r_eq / 1.0 + 0.5, 0, 1)
    radius = math.sqrt(float(inside.sum()) / math.pi)
    grain = ndimage.gaussian_filter(rng.standard_normal(d.shape), 0.8 * px_um / 2)
    grain /= grain.std() + 1e-9
    if kind != KIND_CANCER:
        level = rng.uniform(0.85, 1.0) if kind == KIND_LYMPHOCYTE else rng.uniform(0.72, 0.92)
        density = inside * level * np.clip(1 + 0.08 * grain, 0, 1.2)
        cytoplasm = None
    else:
        t = float(cancer_texture)
        pale = rng.uniform(0.38, 0.5)
        solid = rng.uniform(0.75, 0.9)
        interior = ((1 - t) * solid + t * pale) * np.clip(1 + (0.08 + 0.14 * t) * grain, 0.3, 2)
        rim_width = 0.6 * px_um
        rim = 0.72 * t * np.exp(-(((1 - d) * r_eq / rim_width) ** 2))
        nucleoli = np.zeros_like(d)
        for _ in range(int(rng.integers(1, 3))):
            ang, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.45) * r_eq
            nr = rng.uniform(0.6, 0.9) * px_um
            nucleoli = np.maximum(
                nucleoli,
                0.95
                * t
                * np.exp(-((u - rr * math.cos(ang)) ** 2 + (v - rr * math.sin(ang)) ** 2) / nr**2),
            )
        density = inside * np.clip(np.maximum(np.maximum(interior, rim), nucleoli), 0, 1)
        ang = rng.uniform(0, 2 * np.pi)
        cu, cv = u - offset * math.cos(ang), v - offset * math.sin(ang)
        ctheta = np.arctan2(cv, cu)
        cscale = np.ones_like(ctheta)
        for k in range(2, 8):
            cscale += rng.normal(0, 0.1 / k**0.7) * np.cos(k * ctheta + rng.uniform(0, 2 * np.pi))
        dc = np.hypot(cu, cv) / (cyt_r * cscale)
        cytoplasm = np.clip((1 - dc) * cyt_r / 1.5 + 0.5, 0, 1).astype(np.float32)
    return Sprite(
        density=density.astype(np.float32),
        inside=inside.astype(np.float32),
        cytoplasm=cytoplasm,
        radius=radius,
        half=half,
    )


def rbc_sprite(rng: np.random.Generator, px_um: float) -> np.ndarray:
    """A red blood cell seen flat: a biconcave disc of eosin density (rim 1, centre ~0.55)."""
    r = rng.uniform(3.2, 3.9) * px_um
    aspect = rng.uniform(1.0, 1.2)
    half = math.ceil(r * 1.2) + 2
    v, u = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    phi = rng.uniform(0, np.pi)
    p = u * math.cos(phi) + v * math.sin(phi)
    q = -u * math.sin(phi) + v * math.cos(phi)
    d = np.hypot(p * math.sqrt(aspect), q / math.sqrt(aspect)) / r
    edge = np.clip((1 - d) * r / 0.8 + 0.5, 0, 1)
    return (edge * (0.55 + 0.45 * np.clip(d, 0, 1) ** 2)).astype(np.float32)


def sprite_banks(
    rng: np.random.Generator,
    px_um: float,
    *,
    cancer_radius_um: tuple[float, float],
    cancer_texture: float,
) -> tuple[tuple[tuple[Sprite, ...], ...], tuple[np.ndarray, ...]]:
    """The nucleus sprites of every kind (indexed by ``KIND_*``) and the red blood cells.

    Endothelial sprite ``j`` lies along the angle ``(j % ORIENTATIONS) * pi / ORIENTATIONS``.
    """
    banks = tuple(
        tuple(
            nucleus_sprite(
                rng,
                kind,
                px_um,
                cancer_radius_um=cancer_radius_um,
                cancer_texture=cancer_texture,
            )
            for _ in range(_SPRITES_PER_KIND)
        )
        for kind in range(3)
    )
    endothelial = tuple(
        nucleus_sprite(
            rng, KIND_ENDOTHELIAL, px_um, phi=(j % ORIENTATIONS) * math.pi / ORIENTATIONS
        )
        for j in range(_SPRITES_PER_KIND)
    )
    rbc = tuple(rbc_sprite(rng, px_um) for _ in range(_RBC_SPRITES))
    return (*banks, endothelial), rbc
