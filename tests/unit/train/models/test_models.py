"""The networks: the authors' parameter counts, output shapes, init, RoI gradients."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from histolib_train.models.networks import (  # noqa: E402
    PatchDiscriminator,
    ResnetGenerator,
    RoIDiscriminator,
    count_parameters,
)

pytestmark = pytest.mark.torch


def test_generator_parameter_count_matches_the_authors() -> None:
    assert count_parameters(ResnetGenerator(n_blocks=6, ngf=64)) == 7_837_699
    # Nine blocks add three 2 x (3x3 256->256 conv + bias) blocks.
    assert count_parameters(ResnetGenerator(n_blocks=9)) == 7_837_699 + 3 * 2 * (
        256 * 256 * 9 + 256
    )
    # Transposed 3x3 convs have the same number of weights as nearest + 3x3 conv.
    assert count_parameters(ResnetGenerator(upsample="transpose")) == 7_837_699


@pytest.mark.parametrize("upsample", ["nearest", "transpose"])
@pytest.mark.parametrize("side", [64, 36])
def test_generator_is_fully_convolutional(upsample: str, side: int) -> None:
    net = ResnetGenerator(n_blocks=2, ngf=8, upsample=upsample)
    x = torch.rand(2, 3, side, side + 8) * 2 - 1
    y = net(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0


def test_generator_rejects_sizes_not_divisible_by_4() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        ResnetGenerator(n_blocks=1, ngf=4)(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match="upsample"):
        ResnetGenerator(upsample="bilinear")  # type: ignore[arg-type]


@pytest.mark.parametrize("grid", [8, 16, 32])
def test_patch_discriminator_count_and_grid(grid: int) -> None:
    net = PatchDiscriminator(grid=grid)
    assert count_parameters(net) == 6_959_553
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 256, 256))
    assert out.shape == (1, 1, grid, grid)
    assert net.output_shape(256, 256) == (grid, grid)
    assert net.output_shape(64, 64) == (grid // 4, grid // 4)


def test_patch_discriminator_rejects_other_grids() -> None:
    with pytest.raises(ValueError, match="grid"):
        PatchDiscriminator(grid=4)


def test_roi_discriminator_count_and_one_score_per_box() -> None:
    net = RoIDiscriminator()
    assert count_parameters(net) == 2_764_032
    boxes = torch.tensor(
        [[0, 10, 10, 58, 58], [1, 100, 120, 148, 168], [1, 0, 0, 48, 48]], dtype=torch.float32
    )
    scores = net(torch.zeros(2, 3, 256, 256), torch.zeros(2, 2, 256, 256), boxes)
    assert scores.shape == (3,)


def test_roi_discriminator_score_depends_on_its_box_only() -> None:
    torch.manual_seed(0)
    net = RoIDiscriminator(ndf=8).eval()
    image = torch.rand(1, 3, 128, 128) * 2 - 1
    cmap = torch.zeros(1, 2, 128, 128)
    boxes = torch.tensor([[0, 0, 0, 32, 32], [0, 80, 80, 112, 112]], dtype=torch.float32)
    before = net(image, cmap, boxes)
    changed = image.clone()
    changed[..., 80:112, 80:112] = -changed[..., 80:112, 80:112]
    after = net(changed, cmap, boxes)
    assert torch.allclose(before[0], after[0])
    assert not torch.allclose(before[1], after[1])


def test_roi_gradient_reaches_the_generator_through_roi_align() -> None:
    torch.manual_seed(0)
    gen = ResnetGenerator(n_blocks=1, ngf=8)
    disc = RoIDiscriminator(ndf=8)
    for p in disc.parameters():
        p.requires_grad_(False)
    fake = gen(torch.rand(2, 3, 64, 64) * 2 - 1)
    boxes = torch.tensor([[0, 8, 8, 40, 40], [1, 16, 16, 48, 48]], dtype=torch.float32)
    loss = ((disc(fake, torch.zeros(2, 2, 64, 64), boxes) - 1) ** 2).mean()
    loss.backward()
    grads = [p.grad for p in gen.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_weights_are_initialised_normal_0_02() -> None:
    torch.manual_seed(0)
    net = PatchDiscriminator()
    big = [m.weight.detach() for m in net.modules() if isinstance(m, torch.nn.Conv2d)][3]
    assert abs(float(big.std()) - 0.02) < 0.001
    assert abs(float(big.mean())) < 0.001
    biases = [m.bias.detach() for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(float(b.abs().max()) == 0.0 for b in biases)
