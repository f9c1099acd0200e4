"""The conditional CycleGAN baselines (``ccgan``, ``ccgan-plain``): losses, training, resume,
checkpoints and inference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from histolib.errors import ConfigError  # noqa: E402
from histolib_cli.main import app  # noqa: E402
from histolib_train.checkpoint import load_checkpoint, load_generator  # noqa: E402
from histolib_train.models import conditional as cond  # noqa: E402
from histolib_train.models.networks import ResnetGenerator, count_parameters  # noqa: E402
from histolib_train.training.batches import load_tiles, sample_batch, split_groups  # noqa: E402
from histolib_train.training.config import resolve_config  # noqa: E402
from histolib_train.training.loop import train  # noqa: E402
from histolib_train.training.trainer import CycleGANTrainer  # noqa: E402
from tests.helpers_train import (  # noqa: E402
    quiet,
    read_metrics,
    tiny_options,
    train_inputs,
)

pytestmark = pytest.mark.torch


# ---------------------------------------------------------------------------------------
# Conditions, classifier, losses.


def test_condition_map_is_one_hot_and_constant() -> None:
    labels = torch.tensor([1, 0, 1])
    cmap = cond.condition_map(labels, height=8, width=12)
    assert cmap.shape == (3, 2, 8, 12)
    assert torch.equal(cmap[:, :, 3, 5], torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(cmap.amax(dim=(2, 3)), cmap.amin(dim=(2, 3)))
    x = torch.zeros(3, 3, 8, 12)
    assert cond.with_condition(x, labels).shape == (3, 5, 8, 12)


def test_batch_label_is_the_cancer_box_split(pair) -> None:
    he, _ = pair
    tiles = load_tiles(he.manifest, domain="he", library=he.library)
    pos, _neg = split_groups(tiles, require_boxes=False)
    for step in range(5):
        batch = sample_batch(tiles, step=step, seed=1, batch_size=4, boxes_per_tile=4)
        expected = np.isin(batch["tile_index"].numpy(), pos).astype(np.int64)
        assert batch["label"].tolist() == expected.tolist() == [1, 1, 0, 0]


def test_generator_with_condition_channels_changes_only_the_first_conv() -> None:
    plain = ResnetGenerator(6, 64)
    conditional = ResnetGenerator(6, 64, in_channels=5)
    assert count_parameters(plain) == 7_837_699
    assert count_parameters(conditional) - count_parameters(plain) == 2 * 64 * 7 * 7


def test_ssim_matches_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = rng.random((40, 48)).astype(np.float32)
    y = np.clip(x * 0.7 + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    ours = float(cond.ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None]))
    theirs = structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert ours == pytest.approx(theirs, abs=1e-4)
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(cond.structural_loss(img, img)) == pytest.approx(0.0, abs=1e-6)
    assert float(cond.structural_loss(img, torch.rand(2, 3, 32, 32) * 2 - 1)) > 0.5


def test_photorealism_loss_is_the_local_affine_fit_residual() -> None:
    torch.manual_seed(0)
    source = torch.rand(1, 3, 6, 7) * 2 - 1
    target = torch.rand(1, 3, 6, 7) * 2 - 1
    eps = 1e-4
    got = float(cond.photorealism_loss(source, target, eps=eps))
    # Brute force: per 3x3 window and output channel, min_{a,b} mean (V - a.I - b)^2
    # + eps/9 |a|^2, by least squares on an augmented system.
    inp, out = (source[0] + 1) / 2, (target[0] + 1) / 2
    residuals = []
    for r in range(4):
        for c in range(5):
            i_win = inp[:, r : r + 3, c : c + 3].reshape(3, 9).T.double()
            design = torch.cat([i_win, torch.ones(9, 1, dtype=torch.float64)], dim=1)
            ridge = torch.zeros(3, 4, dtype=torch.float64)
            ridge[:, :3] = torch.eye(3) * math.sqrt(eps)
            a_mat = torch.cat([design, ridge])
            for ch in range(3):
                v = out[ch, r : r + 3, c : c + 3].reshape(9).double()
                rhs = torch.cat([v, torch.zeros(3, dtype=torch.float64)])
                sol = torch.linalg.lstsq(a_mat, rhs[:, None]).solution
                residuals.append(float(((a_mat @ sol)[:, 0] - rhs).pow(2).sum()) / 9)
    assert got == pytest.approx(float(np.mean(residuals)), rel=1e-3)
    # An output that is an affine function of the input colours is photo-realistic.
    mix = torch.tensor([[0.5, 0.2, 0.0], [0.1, -0.3, 0.4], [0.0, 0.0, 0.9]])
    affine = torch.einsum("oc,bchw->bohw", mix, source) + 0.05
    assert float(cond.photorealism_loss(source, affine)) < 1e-3 * got


def test_classifier_loss_decreases_in_training_steps() -> None:
    """On an easy split (positive tiles darker), the classifiers learn within 30 steps."""
    cfg = resolve_config(
        {"model": "ccgan-plain", "n_blocks": 1, "ngf": 4, "ndf": 8, "seed": 0, "buffer_size": 4}
    )
    trainer = CycleGANTrainer(cfg, device=torch.device("cpu"), total_steps=30)
    gen = torch.Generator().manual_seed(0)

    def batch() -> dict[str, torch.Tensor]:
        label = torch.tensor([1, 0])
        shade = torch.where(label == 1, -0.6, 0.4).view(2, 1, 1, 1)
        image = (shade + 0.2 * torch.randn(2, 3, 64, 64, generator=gen)).clamp(-1, 1)
        return {"image": image, "label": label}

    history = {"C_he": [], "C_ihc": []}
    for _ in range(30):
        losses = trainer.train_step(batch(), batch())
        assert all(math.isfinite(float(v)) for v in losses.values())
        for name in history:
            history[name].append(float(losses[name]))
    for name, values in history.items():
        assert np.mean(values[-5:]) < 0.5 * np.mean(values[:5]), (name, values)
    with torch.no_grad():
        test = batch()
        predicted = trainer.nets["C_he"](test["image"]).argmax(dim=1)
    assert predicted.tolist() == test["label"].tolist()


# ---------------------------------------------------------------------------------------
# Training runs.


def test_default_batch_size_and_weights() -> None:
    cfg = resolve_config({"model": "ccgan"})
    assert cfg.batch_size == 2 and cfg.lambda_cyc == 10.0
    assert (cfg.lambda_cls, cfg.lambda_ssim, cfg.lambda_photo) == (1.0, 1.0, 1.0)
    assert resolve_config({"model": "ccgan-plain", "batch_size": 4}).batch_size == 4
    # Only ccgan keeps Xu et al.'s batch 2 (its photo-realism loss); ccgan-plain trains at the
    # batch size of the others.
    assert resolve_config({"model": "ccgan-plain"}).batch_size == 8
    assert resolve_config({"model": "cyclegan"}).batch_size == 8
    with pytest.raises(ConfigError, match="--ccgan-condition must be"):
        resolve_config({"model": "ccgan", "ccgan_condition": "maybe"})
    with pytest.raises(ConfigError, match="--lambda-photo must be >= 0"):
        resolve_config({"model": "ccgan", "lambda_photo": -1})


@pytest.mark.parametrize("model", ["ccgan", "ccgan-plain"])
def test_conditional_models_train_with_finite_losses(pair, tmp_path: Path, model) -> None:
    he, ihc = pair
    options = tiny_options(he, ihc, tmp_path / "run", model=model, epochs=1)
    del options["batch_size"]  # the model's default: 2 for ccgan, 8 for ccgan-plain
    cfg = resolve_config(options)
    assert cfg.batch_size == (2 if model == "ccgan" else 8)
    result = train(cfg, log=quiet)
    assert result.stopped == "finished" and result.step == 2
    expected = {"loss_G", "G_gan", "cycle", "identity", "D_he", "D_ihc", "G_cls", "C_he", "C_ihc"}
    if model == "ccgan":
        expected |= {"ssim", "photo"}
    assert set(result.last_losses) == expected
    assert all(math.isfinite(v) for v in result.last_losses.values())
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 2
    for name in expected:
        assert all(math.isfinite(float(r[name])) for r in rows), name
    for name in ("G_roi", "D_roi_he", "D_roi_ihc") + (
        ("ssim", "photo") if model != "ccgan" else ()
    ):
        assert all(r[name] == "" for r in rows), name
    assert (tmp_path / "run" / "samples" / "step_2.png").is_file()


def test_conditional_models_need_libraries(pair, tmp_path: Path) -> None:
    he, ihc = pair
    options = tiny_options(he, ihc, tmp_path / "run", model="ccgan", he_library=None)
    with pytest.raises(ConfigError, match="needs --he-library"):
        train(resolve_config(options), log=quiet)


def test_ccgan_resume_equals_an_uninterrupted_run(pair, tmp_path: Path) -> None:
    he, ihc = pair
    straight = tmp_path / "straight"
    base = {"model": "ccgan", "steps_per_epoch": 2, "buffer_size": 2}
    train(resolve_config(tiny_options(he, ihc, straight, **base)), log=quiet)
    stepped = tmp_path / "stepped"
    stops = []
    for _ in range(4):
        options = tiny_options(he, ihc, stepped, **base, max_minutes=1e-9, resume=True)
        result = train(resolve_config(options), log=quiet)
        stops.append((result.step, result.stopped))
    assert stops == [(1, "time budget"), (2, "time budget"), (3, "time budget"), (4, "finished")]
    a, b = read_metrics(straight), read_metrics(stepped)
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["1", "2", "3", "4"]
    for row_a, row_b in zip(a, b, strict=True):
        for key in row_a:
            if key != "elapsed_s":
                assert row_a[key] == row_b[key], (row_a["step"], key)
    nets_a, nets_b = load_checkpoint(straight)["nets"], load_checkpoint(stepped)["nets"]
    for name in ("G_he2ihc", "C_he", "C_ihc"):
        assert all(torch.equal(nets_a[name][k], nets_b[name][k]) for k in nets_a[name])


def test_ccgan_checkpoint_loads_weights_only_and_for_inference(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    train(resolve_config(tiny_options(he, ihc, run, model="ccgan", epochs=1)), log=quiet)
    path = run / "checkpoints" / "latest.pt"
    state = torch.load(path, weights_only=True)
    assert state["model"] == "ccgan"
    assert {"C_he", "C_ihc", "G_he2ihc"} <= set(state["nets"])
    assert set(state["optimizers"]) == {"G", "D_he", "D_ihc", "C_he", "C_ihc"}
    assert state["nets"]["G_he2ihc"]["model.1.weight"].shape[1] == 5
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for direction, g_name, c_name in (
        ("he2ihc", "G_he2ihc", "C_he"),
        ("ihc2he", "G_ihc2he", "C_ihc"),
    ):
        net, config = load_generator(path, direction=direction)
        assert isinstance(net, cond.ConditionalGenerator) and not net.training
        assert config["ccgan_condition"] == "predicted" and net.ngf == 8
        gen = net.generator.state_dict()
        assert all(torch.equal(gen[k], state["nets"][g_name][k]) for k in gen)
        clf = net.classifier.state_dict()
        assert all(torch.equal(clf[k], state["nets"][c_name][k]) for k in clf)
        with torch.no_grad():
            y = net(x)
            labels = net.classifier(x).argmax(dim=1)
            assert torch.equal(y, net.generator(cond.with_condition(x, labels)))
        assert y.shape == x.shape and bool(torch.isfinite(y).all())

    # The transfer command's loader takes the wrapped generator as it is.
    from histolib_train.transfer.generator import load_transfer_generator

    translator, _ = load_transfer_generator(path, device="cpu")
    tiles = np.full((1, 32, 36, 3), 200, dtype=np.uint8)
    assert translator(tiles).shape == (1, 32, 36, 3)


def test_fixed_inference_condition(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    options = tiny_options(he, ihc, run, model="ccgan-plain", epochs=1, ccgan_condition="positive")
    train(resolve_config(options), log=quiet)
    net, _ = load_generator(run)
    assert net.classifier is None and net.condition == "positive"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = net.generator(cond.with_condition(x, torch.ones(2, dtype=torch.int64)))
        assert torch.equal(net(x), expected)


def test_cli_trains_ccgan(pair, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        *train_inputs(pair),
        "--out",
        str(run),
        "--model",
        "ccgan",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--n-blocks",
        "1",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--lambda-photo",
        "2",
        "--lambda-ssim",
        "0.5",
        "--lambda-cls",
        "3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "finished at step 1 of 1" in result.output
    saved = load_checkpoint(run)["config"]
    assert saved["batch_size"] == 2
    assert (saved["lambda_photo"], saved["lambda_ssim"], saved["lambda_cls"]) == (2.0, 0.5, 3.0)
