"""The networks of the region-guided CycleGAN (Boyd et al., MICCAI 2022).

Three public networks, built as in the authors' code so that parameter counts match:

- :class:`ResnetGenerator`: Johnson et al.'s ResNet generator (7,837,699 parameters with 6
  blocks, ``ngf=64`` and nearest-neighbour upsampling + conv).
- :class:`PatchDiscriminator`: the PatchGAN image discriminator with an 8x8, 16x16 or 32x32
  output grid for 256 px inputs (6,959,553 parameters for every grid).
- :class:`RoIDiscriminator`: scores each cell box of an image given its 2-channel class map
  (2,764,032 parameters with the authors' BatchNorm).

Every convolution is initialised N(0, 0.02) (biases 0); BatchNorm weights N(1, 0.02).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchvision.ops import roi_align

UPSAMPLE_MODES = ("nearest", "transpose")
PATCH_GRIDS = (8, 16, 32)
N_CLASSES = 2  # class-map channels: 0 = normal, 1 = cancer


def init_weights(module: nn.Module) -> None:
    """Initialise a module the authors' way: convs N(0, 0.02), bias 0; BatchNorm N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ResidualBlock(nn.Module):
    """Reflection pad, 3x3 conv, InstanceNorm, ReLU, pad, conv, InstanceNorm, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """ResNet image-to-image generator (RGB in [-1, 1] to RGB in [-1, 1]).

    Reflection pad 3, 7x7 conv to ``ngf``, two stride-2 3x3 convs (``2 ngf``, ``4 ngf``),
    ``n_blocks`` residual blocks, two upsampling stages back to ``ngf``, reflection pad 3,
    7x7 conv to 3, tanh. InstanceNorm without affine parameters after every inner conv.
    Fully convolutional: any input whose sides are divisible by 4.

    Parameters
    ----------
    n_blocks
        Residual blocks (the paper: 6 or 9).
    ngf
        Filters of the first layer.
    upsample
        ``"nearest"`` (the authors': nearest x2 then a 3x3 conv, no checkerboard artefacts) or
        ``"transpose"`` (3x3 transposed convs, stride 2, as in the original CycleGAN).
    in_channels
        Input channels: 3 (RGB); the conditional CycleGAN (``histolib_train.models.conditional``)
        appends its condition channels to the image.
    """

    def __init__(
        self,
        n_blocks: int = 6,
        ngf: int = 64,
        upsample: Literal["nearest", "transpose"] = "nearest",
        *,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, not {upsample!r}")
        if n_blocks < 0 or ngf < 1 or in_channels < 1:
            raise ValueError("n_blocks must be >= 0, ngf >= 1 and in_channels >= 1")
        self.n_blocks = n_blocks
        self.in_channels = in_channels
        self.ngf = ngf
        self.upsample = upsample
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(inplace=True),
        ]
        channels = ngf
        for _ in range(2):
            layers += [
                nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1),
                nn.InstanceNorm2d(channels * 2),
                nn.ReLU(inplace=True),
            ]
            channels *= 2
        layers += [ResidualBlock(channels) for _ in range(n_blocks)]
        for _ in range(2):
            if upsample == "nearest":
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(channels, channels // 2, 3, padding=1),
                ]
            else:
                layers.append(
                    nn.ConvTranspose2d(
                        channels, channels // 2, 3, stride=2, padding=1, output_padding=1
                    )
                )
            layers += [nn.InstanceNorm2d(channels // 2), nn.ReLU(inplace=True)]
            channels //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate a batch ``(N, in_channels, H, W)`` in [-1, 1]; ``H``, ``W`` divisible by 4."""
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"image sides must be divisible by 4, got {tuple(x.shape[-2:])}")
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN image discriminator: one real/fake score per image patch.

    Five 4x4 convs (3-64-128-256-512-512), InstanceNorm on all but the first, LeakyReLU 0.2,
    then zero-padding (left/top 1) and a 4x4 conv (padding 1) to one channel, as in the
    authors' code. With ``grid=8`` all five convs have stride 2 and a 256 px input gives an
    8x8 map; ``grid=16`` makes the first conv stride 1 and ``grid=32`` the first two (the
    stride-1 convs pad 1 left/top and 2 right/bottom so they keep the size). The parameter
    count is the same for every grid. ``ndf`` (64, the authors') scales every width; smaller
    values serve tests and quick CPU runs.
    """

    def __init__(self, grid: int = 8, *, ndf: int = 64) -> None:
        super().__init__()
        if grid not in PATCH_GRIDS:
            raise ValueError(f"grid must be one of {PATCH_GRIDS}, not {grid!r}")
        if ndf < 1:
            raise ValueError("ndf must be >= 1")
        self.grid = grid
        n_stride1 = {8: 0, 16: 1, 32: 2}[grid]
        self.downsample = 2 ** (5 - n_stride1)
        widths = (3, ndf, 2 * ndf, 4 * ndf, 8 * ndf, 8 * ndf)
        layers: list[nn.Module] = []
        for i in range(5):
            if i < n_stride1:
                layers += [nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(widths[i], widths[i + 1], 4)]
            else:
                layers.append(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1))
            if i > 0:
                layers.append(nn.InstanceNorm2d(widths[i + 1]))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers += [nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(widths[-1], 1, 4, padding=1)]
        self.model = nn.Sequential(*layers)
        self.apply(init_weights)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """Score-map shape ``(rows, cols)`` for an input of ``height`` x ``width`` px."""
        return height // self.downsample, width // self.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, 1, H / s, W / s)`` for images ``(N, 3, H, W)``; s = 256 / grid."""
        return self.model(x)


class RoIDiscriminator(nn.Module):
    """Region discriminator: one real/fake score per cell box.

    The image is concatenated with its 2-channel class map (each box, shrunk by 5 px a side,
    painted in the channel of its class); four 4x4 stride-2 convs (5-64-128-256-512, no bias),
    BatchNorm on all but the first, LeakyReLU 0.2; ``torchvision.ops.roi_align`` pools each box
    to 3x3 on the 1/16 feature map; a 3x3 conv gives one score a box.

    Parameters
    ----------
    ndf
        Filters of the first conv (64, the authors'); the others are 2, 4 and 8 times that.
    bn_momentum
        BatchNorm momentum; 0.8 is the authors' value.
    """

    def __init__(self, ndf: int = 64, *, bn_momentum: float = 0.8) -> None:
        super().__init__()
        if ndf < 1:
            raise ValueError("ndf must be >= 1")
        widths = (3 + N_CLASSES, ndf, 2 * ndf, 4 * ndf, 8 * ndf)
        layers: list[nn.Module] = []
        for i in range(4):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1, bias=False))
            if i > 0:
                layers.append(nn.BatchNorm2d(widths[i + 1], momentum=bn_momentum))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(widths[-1], 1, 3, bias=False)
        self.spatial_scale = 1.0 / 16
        self.apply(init_weights)

    def forward(
        self, image: torch.Tensor, class_map: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        """Score each box.

        Parameters
        ----------
        image
            ``(N, 3, H, W)`` in [-1, 1].
        class_map
            ``(N, 2, H, W)`` in {0, 1} (channel 0 normal, 1 cancer).
        boxes
            ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in image px, as
            ``torchvision.ops.roi_align`` takes them.

        Returns
        -------
        torch.Tensor
            ``(K,)`` scores.
        """
        features = self.features(torch.cat([image, class_map.to(image.dtype)], dim=1))
        # roi_align in float32 (box coordinates lose whole pixels in bfloat16).
        pooled = roi_align(
            features.float(),
            boxes.float(),
            output_size=(3, 3),
            spatial_scale=self.spatial_scale,
            sampling_ratio=-1,
        )
        return self.classifier(pooled).reshape(-1)
