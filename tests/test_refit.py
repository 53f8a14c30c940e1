"""The exact refit of a linear readout (`training.readout_refit`, mlip.train.refit): the NequIP-style
design reproduces the model, the solve reaches the optimum, the trainer writes it into best.pt, and
the same linear part lets varpro train the NequIP-style model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mlip.graph import build_graphs, collate
from mlip.models.base import predict
from mlip.models.nequip import NequIP
from mlip.train.full_batch import (FullBatch, LossWeights, full_loss, get_flat, linear_parameters, loss_and_grad,
                                   solve_linear)

from conftest import random_structure


def _model_and_graphs(n_frames: int = 4):
    from mlip.data.frame import Frame

    torch.manual_seed(3)
    model = NequIP(["H", "O"], cutoff=3.0, l_max=1, num_features=8, num_layers=2, radial_hidden=8,
                   head_hidden=6).double()
    rng = np.random.default_rng(0)
    frames = []
    for k in range(n_frames):
        a = random_structure(10 + k, 6 + k)
        frames.append(Frame(symbols=a.get_chemical_symbols(), positions=a.positions, cell=np.array(a.cell),
                            pbc=np.array(a.pbc), energy=float(rng.normal()), forces=rng.normal(size=(len(a), 3)),
                            virial=rng.normal(size=(3, 3)), source=f"random:{k}"))
    with torch.no_grad():  # a non-trivial readout: random weights and shifts
        model.head_w2.normal_()
        model.energy_shift.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
    return model, build_graphs(frames, model.species, model.cutoff, torch.float64)


def test_nequip_linear_design_reproduces_the_model():
    model, graphs = _model_and_graphs()
    b = collate(graphs)
    E, F, V = model.linear_design(b.species, b.edge_index, b.edge_vec, b.node_frame, b.n_frames, True)
    x = get_flat(linear_parameters(model))
    assert E.shape == (b.n_frames, 6 + 2) and F.shape == (len(b.species), 3, 8) and V.shape == (b.n_frames, 3, 3, 8)
    ref = predict(model, b)
    torch.testing.assert_close(E @ x, ref["energy"], rtol=0, atol=1e-12)
    torch.testing.assert_close(F @ x, ref["forces"], rtol=0, atol=1e-12)
    torch.testing.assert_close(V @ x, ref["virial"], rtol=0, atol=1e-12)


def test_refit_reaches_the_least_squares_optimum():
    from mlip.train.refit import refit_linear

    model, graphs = _model_and_graphs()
    w = LossWeights(10.0, 1.0, 0.1, True)
    data = FullBatch(graphs)
    before = full_loss(model, data, w)
    info = refit_linear(model, graphs, w, score=lambda m: full_loss(m, data, w))
    after = full_loss(model, data, w)
    assert info["kept"] and after < 0.5 * before
    assert info["train_loss_after"] == pytest.approx(after, rel=1e-9)
    # the optimum: the loss gradient with respect to the solved parameters vanishes
    _, grads = loss_and_grad(model, data, w, [model.head_w2])
    assert float(grads[0].abs().max()) < 1e-9


def test_refit_is_undone_when_the_score_gets_worse():
    from mlip.train.refit import refit_linear

    model, graphs = _model_and_graphs()
    x0 = get_flat(linear_parameters(model)).clone()
    calls = iter([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # before, then the exact and every ridge solution: worse
    info = refit_linear(model, graphs, LossWeights(1.0, 1.0, 0.0), score=lambda m: next(calls))
    assert not info["kept"] and info["ridge"] is None
    assert torch.equal(get_flat(linear_parameters(model)), x0)


def test_ridge_path_runs_from_the_exact_solution_to_the_trained_weights():
    from mlip.train.refit import RIDGE, refit_linear

    model, graphs = _model_and_graphs()
    w = LossWeights(10.0, 1.0, 0.1, True)
    x0 = get_flat(linear_parameters(model)).clone()
    _, qr = solve_linear(model, FullBatch(graphs), w)
    exact = get_flat(linear_parameters(model)).clone()
    torch.testing.assert_close(qr.solve_toward(x0, 1e-14), exact, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(qr.solve_toward(x0, 1e8), x0, rtol=0, atol=1e-6)
    losses = [qr.residual2(qr.solve_toward(x0, a)) for a in (1e-6, 1e-3, 1.0)]
    assert losses == sorted(losses)  # more pull toward x0: higher training loss
    # a score that prefers the second ridge solution gets it
    from mlip.train.full_batch import set_flat

    set_flat(linear_parameters(model), x0)
    target = qr.solve_toward(x0, RIDGE[2])
    info = refit_linear(model, graphs, w, score=lambda m: float((get_flat(linear_parameters(m)) - target).norm()) + 1e-3)
    assert info["kept"] and info["ridge"] == RIDGE[2]
    torch.testing.assert_close(get_flat(linear_parameters(model)), target, rtol=0, atol=1e-12)


def _nequip_run(tmp_path, refit: bool, family: str = "nequip", **sections):
    from mlip.train.config import load_config

    model = ({"family": "nequip", "cutoff": 3.5, "l_max": 1, "num_features": 8, "num_layers": 2,
              "radial_hidden": 8, "head_hidden": 8} if family == "nequip" else
             {"family": "deepmd", "rcut": 4.0, "rcut_smth": 2.0, "sel": [50], "neuron": [8, 16],
              "axis_neuron": 4, "fitting_neuron": [16, 16]})
    return load_config(None, {
        "seed": 4, "output": str(tmp_path / "run"), "dtype": "float64",
        "data": {"generate": {"n_frames": 10, "size": 2, "md_steps": 5}, "val_fraction": 0.3},
        "model": model,
        "loss": {"energy": {"start": 1.0, "limit": 50.0}, "forces": 1.0, "virial": 0.0},
        "optimizer": {"lr": {"start": 0.005, "stop": 1e-3, "decay_steps": 10}, "ema": 0.9},
        "training": {"steps": 20, "batch_size": 2, "val_every": 5, "checkpoint_every": 5, "progress": False,
                     "readout_refit": refit},
        **sections,
    })


def test_trainer_refits_best_checkpoint_once(tmp_path):
    from mlip.train.finetune import read_checkpoint
    from mlip.train.trainer import Trainer

    cfg = _nequip_run(tmp_path, True)
    summary = Trainer(cfg).run()
    info = summary["readout_refit"]
    assert info["parameters"] == 8 + 1
    assert info["validation_loss_after"] <= info["validation_loss_before"] or not info["kept"]
    ckpt = read_checkpoint(str(tmp_path / "run" / "checkpoints" / "best.pt"))
    assert ckpt["readout_refit"] == info
    if info["kept"]:  # the evaluation weights changed, the raw training weights did not
        assert not torch.equal(ckpt["eval_model"]["head_w2"], ckpt["ema"]["head_w2"])
    # a finished run run again does not solve twice
    again = Trainer(cfg, resume=True).run()
    assert again["readout_refit"] == info


def test_readout_refit_needs_a_linear_readout(tmp_path):
    from mlip.train.trainer import Trainer

    with pytest.raises(ValueError, match="training.readout_refit: family 'deepmd' has no linear readout"):
        Trainer(_nequip_run(tmp_path, True, family="deepmd"))


def test_varpro_trains_a_nequip_model(tmp_path):
    """The same linear part makes the NequIP-style model a valid `optimizer.name: varpro` model: every
    evaluation solves the readout exactly and L-BFGS moves the rest (slow per step, but correct)."""
    import csv

    from mlip.train.trainer import Trainer

    cfg = _nequip_run(tmp_path, False, loss={"energy": 1.0, "forces": 1.0, "virial": 0.0},
                      optimizer={"name": "varpro", "max_iter": 6, "history": 10, "patience": 6},
                      training={"checkpoint_every": 3, "progress": False})
    summary = Trainer(cfg).run()
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert summary["optimizer"] == "varpro" and summary["evaluations"] == len(rows) == 6
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
