"""The training protocol: presets, the authors' learning-rate schedule and checkpoint epochs,
options declared once (strictness on resume), and training on the train part of a split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from histolib.core.options import strict_fields  # noqa: E402
from histolib.errors import ConfigError  # noqa: E402
from histolib_train.training import trainer as trainer_module  # noqa: E402
from histolib_train.training.config import (  # noqa: E402
    PRESETS,
    TrainConfig,
    config_for_run,
    resolve_config,
)
from histolib_train.training.loop import train  # noqa: E402
from histolib_train.training.run_folder import STRICT_RESUME_KEYS  # noqa: E402
from tests.helpers_train import make_tiny_pair, quiet, read_metrics, tiny_options  # noqa: E402

pytestmark = pytest.mark.torch


def _authors_lambda_lr(n_epochs: int, offset: int, decay_start_epoch: int):
    """The factor of the authors' ``utils.LambdaLR(n_epochs, offset, decay_start_epoch).step``
    (the formula of their code, for ``torch.optim.lr_scheduler.LambdaLR``)."""

    def step(epoch: int) -> float:
        return 1.0 - max(0, epoch + offset - decay_start_epoch) / (n_epochs - decay_start_epoch)

    return step


def _authors_rates(lr: float, epochs: int) -> list[float]:
    """The rate of each epoch as the authors' main.py sets it: a torch LambdaLR over
    ``utils.LambdaLR(25, 0, 12)``, stepped once after each epoch."""
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([param], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _authors_lambda_lr(25, 0, 12))
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_authors_schedule_and_checkpoint_epochs(pair, tmp_path: Path) -> None:
    """The default preset: 25 epochs; each epoch's rate is the authors' LambdaLR(25, 0, 12);
    epoch_N.pt after epochs 1, 6, 11, 16, 21 (their ``epoch % 5 == 0``, from 0) and 25."""
    he, ihc = pair
    run = tmp_path / "run"
    options = tiny_options(he, ihc, run, steps_per_epoch=1, batch_size=2, ngf=4, ndf=4)
    del options["epochs"]  # the preset's
    cfg = resolve_config(options)
    assert (cfg.preset, cfg.epochs, cfg.lr_schedule, cfg.lr_decay_start) == (
        "authors",
        25,
        "epoch",
        12,
    )
    assert (cfg.roi_sampling, cfg.checkpoint_first, cfg.checkpoint_every) == ("authors", 1, 5)
    result = train(cfg, log=quiet)
    assert result.step == 25
    rates = [float(r["lr"]) for r in read_metrics(run)]
    expected = _authors_rates(2e-4, 25)
    assert rates == pytest.approx(expected, rel=1e-9)
    assert rates[:13] == pytest.approx([2e-4] * 13) and rates[13] == pytest.approx(2e-4 * 12 / 13)
    names = {p.name for p in (run / "checkpoints").iterdir()}
    assert names == {f"epoch_{n}.pt" for n in (1, 6, 11, 16, 21, 25)} | {"latest.pt"}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["preset"] == "authors" and saved["roi_sampling"] == "authors"
    assert saved["epochs"] == 25 and saved["lr_decay_start"] == 12


def test_epoch_schedule_changes_only_at_epoch_boundaries() -> None:
    cfg = resolve_config({"steps_per_epoch": 3})
    factors = [trainer_module.schedule_factor(cfg, s, 25 * 3) for s in range(25 * 3)]
    per_epoch = [factors[3 * e : 3 * e + 3] for e in range(25)]
    assert all(len(set(f)) == 1 for f in per_epoch)
    reference = _authors_lambda_lr(25, 0, 12)
    assert [f[0] for f in per_epoch] == pytest.approx([reference(e) for e in range(25)])
    # A run shorter than the decay start keeps the full rate (the authors' formula would too).
    short = resolve_config({"epochs": 5, "steps_per_epoch": 2})
    assert {trainer_module.schedule_factor(short, s, 10) for s in range(10)} == {1.0}


def test_the_trainers_rate_after_every_step_is_lambdalr_per_epoch(
    pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 epochs x 4 steps, decay from epoch 0: the rate every optimiser holds after each step
    is the authors' LambdaLR(3, 0, 0) stepped once per epoch (it changes after steps 4 and 8,
    and after the last)."""
    he, ihc = pair
    seen: list[dict[str, float]] = []
    real = trainer_module.CycleGANTrainer.optimize_parameters

    def spy(self):
        losses = real(self)
        seen.append({n: o.param_groups[0]["lr"] for n, o in self.optimizers.items()})
        return losses

    monkeypatch.setattr(trainer_module.CycleGANTrainer, "optimize_parameters", spy)
    options = tiny_options(he, ihc, tmp_path / "run", epochs=3, steps_per_epoch=4)
    options.update(batch_size=2, ngf=4, ndf=4, n_blocks=1, lr_decay_start=0)
    assert train(resolve_config(options), log=quiet).step == 12
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([param], lr=2e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _authors_lambda_lr(3, 0, 0))
    per_epoch = []
    for _ in range(4):  # the rate of epochs 0, 1, 2 and after the last
        per_epoch.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [per_epoch[step // 4] for step in range(1, 13)]  # after steps 1..12
    assert len(seen) == 12 and len(seen[0]) == 5  # G and the four discriminators
    for rates, want in zip(seen, expected, strict=True):
        assert list(rates.values()) == pytest.approx([want] * 5, rel=1e-12)
    assert len(set(expected)) == 4


def test_paper_preset_and_overrides() -> None:
    paper = resolve_config({"preset": "paper"})
    assert (paper.epochs, paper.roi_sampling, paper.lr_schedule) == (20, "balanced", "step")
    assert paper.lr_decay_start is None and paper.checkpoint_first == 5
    assert [e for e in range(1, 21) if paper.keeps_epoch(e)] == [5, 10, 15, 20]
    factors = [trainer_module.schedule_factor(paper, s, 10) for s in range(11)]
    assert factors[:5] == [1.0] * 5 and factors[5:] == pytest.approx([1, 0.8, 0.6, 0.4, 0.2, 0])
    # every value is still settable over a preset
    mixed = resolve_config({"preset": "paper", "epochs": 30, "roi_sampling": "authors"})
    assert (mixed.epochs, mixed.roi_sampling, mixed.lr_schedule) == (30, "authors", "step")
    authors = resolve_config({})
    assert [e for e in range(1, 26) if authors.keeps_epoch(e)] == [1, 6, 11, 16, 21, 25]
    for name, values in PRESETS.items():
        cfg = resolve_config({"preset": name})
        assert all(getattr(cfg, k) == v for k, v in values.items())
    with pytest.raises(ConfigError, match="--preset must be authors or paper"):
        resolve_config({"preset": "mine"})


def test_batch_size_defaults_by_model() -> None:
    assert resolve_config({"model": "ccgan"}).batch_size == 2
    assert resolve_config({"model": "ccgan-plain"}).batch_size == 8
    assert resolve_config({"model": "roi-only"}).batch_size == 8
    assert resolve_config({"model": "roi-only"}).lambda_cyc == 30.0


def test_options_are_declared_once() -> None:
    """Defaults, help and strictness live on the fields; resume strictness comes from them."""
    from histolib.core.options import option_specs

    assert STRICT_RESUME_KEYS == strict_fields(TrainConfig)
    assert {"preset", "roi_sampling", "lr_schedule", "model", "seed"} <= set(STRICT_RESUME_KEYS)
    assert not {"epochs", "device", "out", "workers", "max_minutes"} & set(STRICT_RESUME_KEYS)
    specs = {spec.name: spec for spec in option_specs(TrainConfig)}
    assert specs["roi_sampling"].choices == ("authors", "balanced")
    assert all(spec.help for spec in specs.values())
    assert {f.name for f in dataclasses.fields(TrainConfig)} == set(specs)
    assert "roi_sampling (``--roi-sampling``)" in (TrainConfig.__doc__ or "")


def test_resume_keeps_the_preset(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    first = tiny_options(he, ihc, run, epochs=1, preset="paper")
    train(resolve_config(first), log=quiet)
    # config_for_run (the CLI) takes the interrupted run's values, preset included
    resumed = config_for_run({"out": str(run), "resume": True, "epochs": 2})
    assert (resumed.preset, resumed.roi_sampling, resumed.epochs) == ("paper", "balanced", 2)
    with pytest.raises(ConfigError, match="preset 'paper' -> 'authors'"):
        train(config_for_run({"out": str(run), "resume": True, "preset": "authors"}), log=quiet)
    with pytest.raises(ConfigError, match="roi_sampling 'balanced' -> 'authors'"):
        options = {"out": str(run), "resume": True, "roi_sampling": "authors"}
        train(config_for_run(options), log=quiet)


def test_training_uses_only_the_train_part_of_a_split(tmp_path: Path) -> None:
    from histolib.tileset.manifest import read_manifest
    from histolib.tileset.split import split_manifests
    from histolib_train.training import loop

    he, ihc = make_tiny_pair(tmp_path, n_mixed=4, n_normal=4)
    split_manifests([he.manifest, ihc.manifest], test_fraction=0.25, by="tile", seed=3)
    parts = {}
    for dom in (he, ihc):
        gdf, _ = read_manifest(dom.manifest)
        parts[dom.manifest] = {
            part: set(gdf.loc[gdf["split"] == part, "tile_id"]) for part in ("train", "test")
        }
        assert len(parts[dom.manifest]["test"]) == 3  # ceil(0.25 x 9)
    run = tmp_path / "run"
    cfg = resolve_config(tiny_options(he, ihc, run, epochs=1))
    he_tiles, ihc_tiles = loop._load_data(cfg, quiet)
    assert set(he_tiles.tile_ids) == parts[he.manifest]["train"]
    assert set(ihc_tiles.tile_ids) == parts[ihc.manifest]["train"]
    assert train(cfg, log=quiet).step == 2  # a whole run on those tiles
