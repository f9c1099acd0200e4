"""The trainer: every model trains, resume equals an uninterrupted run, checkpoints, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from histolib.errors import CheckpointError, ConfigError  # noqa: E402
from histolib_train.checkpoint import load_checkpoint, load_generator  # noqa: E402
from histolib_train.models.losses import ReplayBuffer  # noqa: E402
from histolib_train.models.networks import PatchDiscriminator, ResnetGenerator  # noqa: E402
from histolib_train.training import trainer as trainer_module  # noqa: E402
from histolib_train.training.config import (  # noqa: E402
    config_for_run,
    read_config_file,
    resolve_config,
)
from histolib_train.training.loop import TrainingError, train  # noqa: E402
from histolib_train.training.trainer import lr_factor  # noqa: E402
from tests.helpers_train import (  # noqa: E402
    make_tiny_pair,
    quiet,
    read_metrics,
    tiny_options,
)

pytestmark = pytest.mark.torch


@pytest.mark.parametrize(
    ("model", "patch"),
    [("roi", 8), ("roi-only", 8), ("cyclegan", 8), ("cyclegan", 16), ("cyclegan", 32)],
)
def test_every_model_trains_with_finite_losses(pair, tmp_path: Path, model, patch) -> None:
    he, ihc = pair
    cfg = resolve_config(
        tiny_options(he, ihc, tmp_path / "run", model=model, patch=patch, epochs=1)
    )
    result = train(cfg, log=quiet)
    assert result.stopped == "finished" and result.step == 2
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == ["1", "2"]
    roi_keys = {"G_roi", "D_roi_he", "D_roi_ihc"}
    image_keys = {"G_gan", "D_he", "D_ihc"}
    absent = {"cyclegan": roi_keys, "roi-only": image_keys}.get(model, set())
    for row in rows:
        for key in ("loss_G", "cycle", "identity", *image_keys, *roi_keys):
            if key in absent:
                assert row[key] == ""
            else:
                assert torch.isfinite(torch.tensor(float(row[key])))
    assert cfg.lambda_cyc == (10.0 if model == "cyclegan" else 30.0)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    nets = {"G_he2ihc", "G_ihc2he"}
    nets |= set() if model == "roi-only" else {"D_he", "D_ihc"}
    nets |= {"D_roi_he", "D_roi_ihc"} if model != "cyclegan" else set()
    assert set(state["nets"]) == nets
    assert set(state["optimizers"]) == {"G"} | (nets - {"G_he2ihc", "G_ihc2he"})


def test_roi_only_has_no_image_gan_term(pair, tmp_path: Path) -> None:
    """roi-only: the generator loss is the RoI, cycle and identity terms alone."""
    from histolib_train.training.batches import load_tiles, sample_batch, split_groups

    he, ihc = pair
    cfg = resolve_config(tiny_options(he, ihc, tmp_path / "run", model="roi-only"))
    trainer = trainer_module.CycleGANTrainer(cfg, device=torch.device("cpu"), total_steps=4)
    assert not any(isinstance(n, PatchDiscriminator) for n in trainer.nets.values())
    batches = []
    for dom, name in ((he, "he"), (ihc, "ihc")):
        tiles = load_tiles(dom.manifest, domain=name, library=dom.library)
        split_groups(tiles, require_boxes=True)
        batches.append(sample_batch(tiles, step=0, seed=0, batch_size=4, boxes_per_tile=4))
    trainer.set_input(*batches)
    losses = trainer.optimize_generators()
    assert "G_gan" not in losses
    total = (
        cfg.lambda_cyc * losses["cycle"]
        + cfg.lambda_id * losses["identity"]
        + cfg.lambda_roi * losses["G_roi"]
    )
    assert float(losses["loss_G"]) == pytest.approx(float(total), rel=1e-6)


def test_cyclegan_trains_without_cell_libraries(pair, tmp_path: Path) -> None:
    he, ihc = pair
    options = tiny_options(he, ihc, tmp_path / "run", model="cyclegan", epochs=1)
    options.update(he_library=None, ihc_library=None, he=str(he.folder), ihc=str(ihc.folder))
    result = train(resolve_config(options), log=quiet)
    assert result.step == 2


def test_roi_model_needs_libraries(pair, tmp_path: Path) -> None:
    he, ihc = pair
    options = tiny_options(he, ihc, tmp_path / "run")
    options["ihc_library"] = None
    with pytest.raises(ConfigError, match="needs --he-library and --ihc-library"):
        train(resolve_config(options), log=quiet)


def test_roi_loss_sends_gradient_into_the_generator(pair, tmp_path: Path) -> None:
    from histolib_train.models.losses import lsgan_loss
    from histolib_train.training.batches import load_tiles, sample_batch, split_groups, to_device

    he, ihc = pair
    cfg = resolve_config(tiny_options(he, ihc, tmp_path / "run"))
    trainer = trainer_module.CycleGANTrainer(cfg, device=torch.device("cpu"), total_steps=4)
    tiles = load_tiles(he.manifest, domain="he", library=he.library)
    split_groups(tiles, require_boxes=True)
    batch = to_device(sample_batch(tiles, step=0, seed=0, batch_size=4, boxes_per_tile=4), "cpu")
    gen, disc = trainer.nets["G_he2ihc"], trainer.nets["D_roi_ihc"]
    fake = gen(batch["image"])
    loss = lsgan_loss(disc(fake, batch["class_map"], batch["boxes"]), 1.0)
    loss.backward()
    first_conv = gen.model[1].weight.grad
    assert first_conv is not None and float(first_conv.abs().sum()) > 0


def test_resume_equals_an_uninterrupted_run(pair, tmp_path: Path) -> None:
    """Stopped after every step (a time budget of ~0) and resumed: the same losses."""
    he, ihc = pair
    straight = tmp_path / "straight"
    # A replay buffer of 3 fakes is full from the first step: its history matters.
    options = tiny_options(he, ihc, straight, steps_per_epoch=3, buffer_size=3)
    train(resolve_config(options), log=quiet)
    stepped = tmp_path / "stepped"
    stops = []
    for _ in range(6):
        options = tiny_options(he, ihc, stepped, steps_per_epoch=3, max_minutes=1e-9, buffer_size=3)
        result = train(resolve_config({**options, "resume": True}), log=quiet)
        stops.append((result.step, result.stopped))
    assert stops == [(s, "time budget") for s in range(1, 6)] + [(6, "finished")]
    a, b = read_metrics(straight), read_metrics(stepped)
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["1", "2", "3", "4", "5", "6"]
    for row_a, row_b in zip(a, b, strict=True):
        for key in row_a:
            if key != "elapsed_s":
                assert row_a[key] == row_b[key], (row_a["step"], key)
    net_a = load_checkpoint(straight)["nets"]["G_he2ihc"]
    net_b = load_checkpoint(stepped)["nets"]["G_he2ihc"]
    assert all(torch.equal(net_a[k], net_b[k]) for k in net_a)


@pytest.mark.parametrize("workers_die", [False, True])
def test_ctrl_c_saves_latest_and_resume_finishes_the_run(
    pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers_die: bool
) -> None:
    """Ctrl-C at the second step: the step ends, ``latest.pt`` holds it, KeyboardInterrupt
    propagates; ``workers_die``: the same Ctrl-C killed the DataLoader workers as well (the
    next batch raises), which must not pass for the end of the run."""
    import os
    import signal

    from histolib_train.training import loop

    he, ihc = pair
    make_loader = loop._make_loader

    def interrupted_loader(*args, **kwargs):
        for index, batch in enumerate(make_loader(*args, **kwargs)):
            if index == 1:
                os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C
                if workers_die:
                    raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly")
            yield batch

    run = tmp_path / "run"
    monkeypatch.setattr(loop, "_make_loader", interrupted_loader)
    with pytest.raises(KeyboardInterrupt):
        train(resolve_config(tiny_options(he, ihc, run, steps_per_epoch=3)), log=quiet)
    steps = 1 if workers_die else 2
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == steps
    assert [r["step"] for r in read_metrics(run)] == [str(s) for s in range(1, steps + 1)]
    monkeypatch.setattr(loop, "_make_loader", make_loader)
    options = tiny_options(he, ihc, run, steps_per_epoch=3, resume=True)
    result = train(resolve_config(options), log=quiet)
    assert (result.step, result.stopped) == (6, "finished")
    assert [r["step"] for r in read_metrics(run)] == [str(s) for s in range(1, 7)]


def test_resume_at_an_epoch_boundary_with_more_epochs(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    # The paper preset: the per-step decay over the second half of the steps.
    train(resolve_config(tiny_options(he, ihc, run, epochs=1, preset="paper")), log=quiet)
    options = tiny_options(he, ihc, run, epochs=2, resume=True, preset="paper")
    result = train(resolve_config(options), log=quiet)
    assert result.step == 4 and result.epoch == 2
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == ["1", "2", "3", "4"]
    lrs = [float(r["lr"]) for r in read_metrics(run)]
    # The decay is re-derived for 4 steps: constant over steps 1-2, then down.
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-4, 1e-4])
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch_1.pt", "epoch_2.pt", "latest.pt"]


def test_existing_run_needs_resume_and_the_same_options(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    train(resolve_config(tiny_options(he, ihc, run, epochs=1)), log=quiet)
    with pytest.raises(ConfigError, match="pass --resume"):
        train(resolve_config(tiny_options(he, ihc, run, epochs=1)), log=quiet)
    with pytest.raises(ConfigError, match=r"ngf 8 -> 16"):
        train(resolve_config(tiny_options(he, ihc, run, ngf=16, resume=True)), log=quiet)
    finished = train(resolve_config(tiny_options(he, ihc, run, epochs=1, resume=True)), log=quiet)
    assert finished.checkpoint is None and finished.step == 2


def test_checkpoint_layout_and_weights_only_loading(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    train(resolve_config(tiny_options(he, ihc, run, epochs=1)), log=quiet)
    path = run / "checkpoints" / "latest.pt"
    state = torch.load(path, weights_only=True)
    assert state["format"] == "histolib-cyclegan" and state["format_version"] == 1
    assert state["model"] == "roi" and state["step"] == 2 and state["epoch"] == 1
    for key in ("optimizers", "schedulers", "scaler", "rng", "replay"):
        assert key in state
    assert set(state["optimizers"]) == {"G", "D_he", "D_ihc", "D_roi_he", "D_roi_ihc"}
    assert isinstance(state["rng"]["torch"], torch.Tensor)
    assert state["replay"]["he"].shape == (8, 3, 64, 64)  # two steps of 4 fakes
    config = state["config"]
    assert (config["n_blocks"], config["ngf"], config["upsample"]) == (2, 8, "nearest")
    assert config["mpp"] == 0.5 and config["tile_size"] == 64
    assert (run / "checkpoints" / "epoch_1.pt").is_file()
    saved = read_config_file(run / "config.yaml")
    assert saved["lambda_cyc"] == 30.0 and saved["tile_size"] == 64
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_2.png"]


def test_load_generator_returns_the_trained_network(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    train(resolve_config(tiny_options(he, ihc, run, epochs=1)), log=quiet)
    state = load_checkpoint(run)
    for direction, key in (("he2ihc", "G_he2ihc"), ("ihc2he", "G_ihc2he")):
        net, config = load_generator(run / "checkpoints" / "latest.pt", direction=direction)
        assert isinstance(net, ResnetGenerator) and not net.training
        assert config["ngf"] == 8 and config["n_blocks"] == 2
        loaded = net.state_dict()
        assert all(torch.equal(loaded[k], state["nets"][key][k]) for k in loaded)
    net, _ = load_generator(run)  # a run folder means its latest checkpoint
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(ConfigError, match="direction"):
        load_generator(run, direction="sideways")


def test_load_generator_rejects_bad_files(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    train(resolve_config(tiny_options(he, ihc, run, epochs=1)), log=quiet)
    good = (run / "checkpoints" / "latest.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": ResnetGenerator(1, 4).state_dict()}, foreign)
    plain = tmp_path / "plain.pt"
    torch.save(ResnetGenerator(1, 4).state_dict(), plain)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
            load_generator(path)
        assert str(path) in str(info.value)
    for path in (foreign, plain):
        with pytest.raises(CheckpointError, match="not a histolib CycleGAN checkpoint"):
            load_generator(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_generator(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"no checkpoints/latest\.pt"):
        load_generator(tmp_path)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    real_l1 = trainer_module.l1_loss
    calls = {"n": 0}

    def poisoned(output, target):
        calls["n"] += 1
        value = real_l1(output, target)
        # 4 L1 terms a step: poison the third step.
        return value * float("nan") if calls["n"] > 8 else value

    monkeypatch.setattr(trainer_module, "l1_loss", poisoned)
    with pytest.raises(TrainingError, match=r"became nan at step 3 \(epoch 2\)") as info:
        train(resolve_config(tiny_options(he, ihc, run, epochs=2)), log=quiet)
    assert "latest.pt is kept" in str(info.value)
    assert load_checkpoint(run)["step"] == 2


def test_lr_is_constant_then_decays_linearly_to_zero() -> None:
    factors = [lr_factor(s, 10) for s in range(11)]
    assert factors[:5] == [1.0] * 5
    assert factors[5:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])


def test_replay_buffer_state_round_trip() -> None:
    buf = ReplayBuffer(3, seed=1)
    for i in range(4):
        buf.push_and_pop(torch.full((2, 1, 2, 2), float(i)))
    clone = ReplayBuffer(3, seed=99)
    clone.load_state_dict(buf.state_dict(), device="cpu")
    new = torch.arange(8.0).reshape(2, 1, 2, 2)
    assert torch.equal(buf.push_and_pop(new), clone.push_and_pop(new))
    assert all(torch.equal(a, b) for a, b in zip(buf.images, clone.images, strict=True))


def test_config_layers_and_errors(tmp_path: Path) -> None:
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text("model: cyclegan\npatch: 16\nsteps-per-epoch: 7\nepochs: 3\n")
    cfg = config_for_run({"epochs": 5, "out": str(tmp_path / "r")}, config_file=cfg_file)
    assert (cfg.model, cfg.patch, cfg.steps_per_epoch, cfg.epochs) == ("cyclegan", 16, 7, 5)
    assert cfg.lambda_cyc == 10.0 and cfg.lambda_id == 5.0 and cfg.lambda_roi == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: roi\n")
    with pytest.raises(ConfigError, match="unknown option 'modle'") as info:
        config_for_run({}, config_file=bad)
    assert str(bad) in str(info.value)
    for text, message in [
        ("patch: 12\n", "'patch'"),
        ("epochs: many\n", "epochs must be a number"),
        ("roi_sampling: sometimes\n", "roi_sampling must be authors or balanced"),
        ("[1, 2\n", "not a valid YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            config_for_run({}, config_file=bad)
    with pytest.raises(ConfigError, match=r"--batch-size must be in \[2, 4096\], got 1"):
        resolve_config({"batch_size": 1})
    with pytest.raises(ConfigError, match="seed"):
        resolve_config({"seed": -1})


def test_a_bad_tile_read_in_a_worker_is_a_one_line_error(tmp_path: Path) -> None:
    from PIL import Image

    from histolib.errors import ImageError

    he, ihc = make_tiny_pair(tmp_path)
    for png in sorted(he.folder.rglob("*.png")):
        Image.new("RGB", (32, 32)).save(png)
    options = tiny_options(he, ihc, tmp_path / "run", workers=1, epochs=1)
    with pytest.raises(ImageError) as info:
        train(resolve_config(options), log=quiet)
    message = str(info.value)
    assert "expected 64x64" in message and he.folder.name in message
    assert "Traceback" not in message and len(message.splitlines()) == 1
