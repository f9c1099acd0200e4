"""Sample sheets written during training: ``samples/step_N.png``.

One row a tile: the real tile, its translation, its reconstruction (translated back), each with
the sampled cell boxes drawn (cancer red, normal green). H&E rows first (H&E, virtual IHC,
reconstructed H&E), then IHC rows (IHC, virtual H&E, reconstructed IHC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from histolib.core.atomic import atomic_path

BOX_COLOURS = {0: (0, 200, 0), 1: (220, 0, 0)}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` in [-1, 1] to uint8 in [0, 255] (on the CPU)."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def draw_boxes(
    image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, *, width: int = 1
) -> torch.Tensor:
    """Draw ``(K, 4)`` tile-px boxes on a uint8 ``(3, H, W)`` image, coloured by class."""
    from torchvision.utils import draw_bounding_boxes

    if len(boxes) == 0:
        return image
    colours = [BOX_COLOURS[int(c)] for c in labels]
    return draw_bounding_boxes(image, boxes.float(), colors=colours, width=width)


def sample_sheet(
    batches: dict[str, dict[str, torch.Tensor]],
    translated: dict[str, torch.Tensor],
    reconstructed: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Assemble the sheet as a uint8 ``(3, H, W)`` tensor (see the module docstring)."""
    from torchvision.utils import make_grid

    cells: list[torch.Tensor] = []
    for domain in ("he", "ihc"):
        batch = batches[domain]
        rows = [
            to_uint8(batch["image"]),
            to_uint8(translated[domain]),
            to_uint8(reconstructed[domain]),
        ]
        size = batch["image"].shape[-1]
        width = max(1, size // 128)
        for i in range(batch["image"].shape[0]):
            mine = batch["boxes"][:, 0] == i
            boxes, labels = batch["boxes"][mine, 1:], batch["box_labels"][mine]
            for row in rows:
                cells.append(draw_boxes(row[i], boxes, labels, width=width))
    return make_grid(torch.stack(cells), nrow=3, padding=2, pad_value=255)


def write_sheet(sheet: torch.Tensor, path: str | Path) -> Path:
    """Save a uint8 ``(3, H, W)`` sheet as PNG, atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(sheet.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
    return path


def render_samples(
    nets: dict[str, torch.nn.Module],
    batches: dict[str, dict[str, Any]],
    *,
    device: torch.device,
    autocast: Any,
) -> torch.Tensor:
    """Translate and reconstruct the sample batches with the generators (no gradients)."""
    g_ab, g_ba = nets["G_he2ihc"], nets["G_ihc2he"]
    was_training = g_ab.training, g_ba.training
    g_ab.eval()
    g_ba.eval()
    translated, reconstructed = {}, {}
    try:
        with torch.no_grad(), autocast():
            he = batches["he"]["image"].to(device)
            ihc = batches["ihc"]["image"].to(device)
            translated["he"] = g_ab(he)
            reconstructed["he"] = g_ba(translated["he"])
            translated["ihc"] = g_ba(ihc)
            reconstructed["ihc"] = g_ab(translated["ihc"])
    finally:
        g_ab.train(was_training[0])
        g_ba.train(was_training[1])
    return sample_sheet(batches, translated, reconstructed)
