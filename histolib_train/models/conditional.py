"""The conditional CycleGAN baselines (Xu et al. 2019, arXiv:1901.04059).

Xu et al.'s cCGAN extends the CycleGAN with *category conditions*: each generator receives,
besides the image, the category of the tile as extra input channels (a one-hot map, constant
over the image), and one classifier network per domain predicts the category of an image. The
classifiers learn from real images (classification loss); the generators are asked that the
classifier of the target domain recognise the source tile's category in the translation
(cycle-classification loss). The full model (``--model ccgan``) adds two structure-preserving
losses between each real tile and its translation: a structural (SSIM) loss and a
photo-realism loss; ``--model ccgan-plain`` is the conditional CycleGAN without those two.

Here the category is the split the batch sampler already uses: 1 (positive) for a tile with
cancer boxes in its cell library, 0 (negative) for a tile without.

At inference the category of a slide region is unknown. :class:`ConditionalGenerator` wraps a
trained generator with the classifier of its *source* domain and, by default, conditions each
input tile on the category that classifier predicts for it (``condition="predicted"``); a fixed
``"positive"`` or ``"negative"`` condition is the other choice (training option
``--ccgan-condition``, recorded in the checkpoint and used by
:func:`histolib_train.checkpoint.load_generator`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from histolib_train.models.networks import init_weights

CONDITIONAL_MODELS = ("ccgan", "ccgan-plain")
STRUCTURAL_MODELS = ("ccgan",)
N_CONDITIONS = 2  # 0 = negative (no cancer box in the tile), 1 = positive
INFERENCE_CONDITIONS = ("predicted", "positive", "negative")
# Luminance weights (ITU-R BT.601) for the SSIM of images of different stains.
_LUMA = (0.299, 0.587, 0.114)


def is_conditional(model: str) -> bool:
    """True for the conditional CycleGAN models (``ccgan``, ``ccgan-plain``)."""
    return model in CONDITIONAL_MODELS


def condition_map(
    labels: torch.Tensor,
    *,
    height: int,
    width: int,
    n_conditions: int = N_CONDITIONS,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One-hot condition channels ``(B, n_conditions, height, width)``, constant per image.

    Parameters
    ----------
    labels
        ``int64 (B,)`` categories in ``[0, n_conditions)``.
    """
    onehot = F.one_hot(labels.long(), n_conditions).to(dtype)
    return onehot[:, :, None, None].expand(-1, -1, height, width)


def with_condition(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The generator input: images ``(B, 3, H, W)`` followed by their condition channels."""
    cond = condition_map(labels.to(images.device), height=images.shape[-2], width=images.shape[-1])
    return torch.cat([images, cond.to(images.dtype)], dim=1)


class TileClassifier(nn.Module):
    """Classifier network of one domain: the category of a tile from its pixels.

    Five 4x4 stride-2 convs (3-ndf-2ndf-4ndf-8ndf-8ndf) with LeakyReLU 0.2, no normalisation
    (instance normalisation would remove the stain intensity that tells positive from
    negative IHC), global average pooling and a linear layer to one logit a category. Fully
    convolutional up to the pooling: any input size from 32 px.
    """

    def __init__(self, ndf: int = 64, *, n_conditions: int = N_CONDITIONS) -> None:
        super().__init__()
        if ndf < 1 or n_conditions < 2:
            raise ValueError("ndf must be >= 1 and n_conditions >= 2")
        widths = (3, ndf, 2 * ndf, 4 * ndf, 8 * ndf, 8 * ndf)
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [
                nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], n_conditions)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_conditions)`` for images ``(B, 3, H, W)`` in [-1, 1]."""
        return self.head(self.features(x).mean(dim=(2, 3)))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the classifier logits against the categories, in float32."""
    return F.cross_entropy(logits.float(), labels.long())


def _luminance(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [-1, 1] to ``(B, 1, H, W)`` luminance in [0, 1]."""
    weights = torch.tensor(_LUMA, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return ((images.float() + 1) / 2 * weights).sum(dim=1, keepdim=True)


def _gaussian_window(
    size: int, sigma: float, device: torch.device, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) of two one-channel batches in [0, 1].

    Gaussian window ``window`` x ``window`` (sigma 1.5), constants ``(0.01)^2`` and
    ``(0.03)^2``, no padding (the window stays inside the image; smaller images use a
    window of their size).

    The local moments are computed in float64 with autocast off, whatever the inputs and the
    device: ``E[x^2] - mu^2`` cancels catastrophically in reduced precision (TF32, which
    Ampere and newer GPUs use for float32 convolutions by default, put ``1 - SSIM`` 9.5 % off
    on a smooth tile; so would bf16 autocast). The result is float32.
    """
    window = min(window, x.shape[-1], x.shape[-2])
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.double(), y.double()
        w = _gaussian_window(window, sigma, x.device, torch.float64)
        c1, c2 = 0.01**2, 0.03**2
        mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
        var_x = F.conv2d(x * x, w) - mu_x**2
        var_y = F.conv2d(y * y, w) - mu_y**2
        cov = F.conv2d(x * y, w) - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        return (num / den).mean().float()


def structural_loss(source: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` between the luminance of real tiles and of their translations.

    The stains differ in colour, so the structure is compared on luminance: nuclei,
    membranes and lumens should stay where they are.
    """
    return 1.0 - ssim(_luminance(source), _luminance(translated))


def photorealism_loss(
    source: torch.Tensor, translated: torch.Tensor, *, eps: float = 1e-4
) -> torch.Tensor:
    """Photo-realism loss: the matting-Laplacian quadratic form of the translation.

    Luan et al.'s photorealism regulariser (Deep Photo Style Transfer, 2017): the output
    should be, in every 3x3 window, an affine function of the input colours. Levin et al.
    (2008) show that ``V^T L V`` (``L`` the matting Laplacian of the input, ``V`` one output
    channel) equals the sum over windows of the least-squares residual of that affine fit,
    ``min_{a, b} sum_i (V_i - a . I_i - b)^2 + eps |a|^2``, whose closed form is
    ``|w| (var(V) - c^T (Sigma + eps / |w| U)^-1 c)`` with ``Sigma`` the window covariance of
    the input colours and ``c`` their covariance with ``V``. This computes it with box filters
    and batched 3x3 solves (no sparse Laplacian), in float32, images rescaled to [0, 1].

    Returns
    -------
    torch.Tensor
        The residual per window pixel, averaged over windows, channels and images (so the
        value does not depend on the tile size).
    """
    inp = (source.float() + 1) / 2
    out = (translated.float() + 1) / 2
    n_win = 9.0

    def box(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, 3, stride=1)

    mean_i = box(inp)  # (B, 3, H', W')
    b, _, h, w = mean_i.shape
    # Input covariance per window: (B, H', W', 3, 3).
    prod = (inp[:, :, None] * inp[:, None]).flatten(1, 2)  # (B, 9, H, W)
    sigma = box(prod).view(b, 3, 3, h, w) - mean_i[:, :, None] * mean_i[:, None]
    sigma = sigma.permute(0, 3, 4, 1, 2)
    eye = torch.eye(3, dtype=sigma.dtype, device=sigma.device)
    sigma = sigma + (eps / n_win) * eye
    mean_o = box(out)  # (B, 3, H', W')
    # Covariance of the input colours with each output channel: (B, H', W', 3, C).
    cross = (inp[:, :, None] * out[:, None]).flatten(1, 2)
    cov = box(cross).view(b, 3, 3, h, w) - mean_i[:, :, None] * mean_o[:, None]
    cov = cov.permute(0, 3, 4, 1, 2)
    var_o = box(out * out) - mean_o**2  # (B, C, H', W')
    solved = torch.linalg.solve(sigma, cov)  # (B, H', W', 3, C)
    explained = (cov * solved).sum(dim=-2).permute(0, 3, 1, 2)  # (B, C, H', W')
    residual = (var_o - explained).clamp_min(0)
    return residual.mean()


class ConditionalGenerator(nn.Module):
    """A trained conditional generator ready for inference on images alone.

    Parameters
    ----------
    generator
        The :class:`~histolib_train.models.networks.ResnetGenerator` trained with condition channels
        (``in_channels = 3 + N_CONDITIONS``).
    classifier
        The :class:`TileClassifier` of the generator's *source* domain (needed for
        ``condition="predicted"``).
    condition
        ``"predicted"`` (each input image is conditioned on the category its source-domain
        classifier predicts), ``"positive"`` or ``"negative"`` (every image the same).
    """

    def __init__(
        self,
        generator: nn.Module,
        *,
        classifier: nn.Module | None = None,
        condition: str = "predicted",
    ) -> None:
        super().__init__()
        if condition not in INFERENCE_CONDITIONS:
            raise ValueError(f"condition must be one of {INFERENCE_CONDITIONS}, not {condition!r}")
        if condition == "predicted" and classifier is None:
            raise ValueError("condition 'predicted' needs the source-domain classifier")
        self.generator = generator
        self.classifier = classifier
        self.condition = condition
        for name in ("n_blocks", "ngf", "upsample"):
            if hasattr(generator, name):
                setattr(self, name, getattr(generator, name))

    def infer_condition(self, x: torch.Tensor) -> torch.Tensor:
        """The category each image of ``x`` is translated with: ``int64 (B,)``."""
        if self.condition == "predicted":
            assert self.classifier is not None
            return self.classifier(x).argmax(dim=1)
        value = 1 if self.condition == "positive" else 0
        return torch.full((x.shape[0],), value, dtype=torch.int64, device=x.device)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Translate ``(B, 3, H, W)`` in [-1, 1], with the given categories or inferred ones."""
        if labels is None:
            labels = self.infer_condition(x)
        return self.generator(with_condition(x, labels))
