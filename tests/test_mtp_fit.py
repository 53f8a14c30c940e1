"""MTP fitting (mlip.train.mtp_fit): the variable-projection fit lowers the loss, its linear solve is
the exact least-squares optimum, and validation early stopping returns the best-validation model."""
from __future__ import annotations

import json

import pytest
import torch

from mlip.datagen import generate_frames
from mlip.models.mtp import MTP
from mlip.train import mtp_fit


@pytest.fixture(scope="module")
def frames():
    return generate_frames("emt", "Cu", n_frames=14, size=2, md_steps=5, seed=3)


def _model(frames):
    m = MTP(["Cu"], level=8, cutoff=4.5, seed=2).double()
    m.fit_statistics(frames)
    return m


def test_varpro_lowers_loss_and_linear_solve_is_optimal(frames):
    m = _model(frames)
    w = mtp_fit.resolve_weights("mlip")
    chunks = mtp_fit.make_chunks(frames, m.species, m.cutoff, 20000, torch.float64)
    l_solve = mtp_fit.solve_linear(m, chunks, w)
    assert mtp_fit.chunks_loss(m, chunks, w) == pytest.approx(l_solve, rel=1e-8)
    with torch.no_grad():  # any perturbation of the linear coefficients is worse
        m.moment_coeffs.add_(1e-3 * torch.randn_like(m.moment_coeffs))
    assert mtp_fit.chunks_loss(m, chunks, w) > l_solve
    hist = mtp_fit.fit(m, frames, weights="mlip", max_iter=8, log=lambda s: None)
    assert hist["loss"][-1] < l_solve


def test_validation_early_stopping_returns_best(frames):
    m = _model(frames)
    train, val = frames[:10], frames[10:]
    hist = mtp_fit.fit(m, train, weights="mlip", max_iter=10, log=lambda s: None, validation=val)
    assert len(hist["val_loss"]) == len([x for x in hist["iter"]])
    best = min(hist["val_loss"])
    assert hist["best_eval"] == hist["val_loss"].index(best) + 1
    w = mtp_fit.resolve_weights("mlip")
    # the model returned has the best validation radial coefficients (linear part re-solved on train)
    val_chunks = mtp_fit.make_chunks(val, m.species, m.cutoff, 20000, torch.float64)
    assert mtp_fit.chunks_loss(m, val_chunks, w) == pytest.approx(best, rel=1e-6)


def test_recipe_validation_fraction(tmp_path, frames):
    from mlip.data.extxyz import write_extxyz

    path = str(tmp_path / "train.xyz")
    write_extxyz(frames, path)
    cfg = {"threads": 1, "model": {"family": "mtp", "species": ["Cu"], "level": 6, "cutoff": 4.5},
           "data": {"train": path, "validation_fraction": 0.25}, "loss": "mlip",
           "fit": {"optimizer": "varpro", "max_iter": 4}}
    out = str(tmp_path / "run")
    metrics = mtp_fit.run_recipe(cfg, out, log=lambda s: None)
    saved = json.load(open(f"{out}/metrics.json"))
    assert saved["n_validation_frames"] == 4 and saved["n_train_frames"] == 10
    assert saved["validation"]["energy_mae"] >= 0 and metrics["best_eval"] is not None
