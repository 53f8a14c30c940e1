"""Training: the loss goes down, exact resume, schedules, config errors, CLI end to end, NVE drift."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import yaml

from mlip.train.schedules import LRSchedule, Prefactor

CU_MODEL = {"family": "deepmd", "rcut": 4.0, "rcut_smth": 2.0, "sel": [50], "neuron": [8, 16],
            "axis_neuron": 4, "fitting_neuron": [24, 24], "seed": 2}


def cu_config(tmp_path, steps=30, **training):
    from mlip.train.config import load_config

    return load_config(None, {
        "seed": 5, "output": str(tmp_path / "run"),
        "data": {"generate": {"n_frames": 12, "size": 2, "md_steps": 5}, "val_fraction": 0.25},
        "model": dict(CU_MODEL),
        "loss": {"energy": {"start": 0.1, "limit": 1}, "forces": {"start": 100, "limit": 1}, "virial": 0.01},
        "optimizer": {"lr": {"start": 0.003, "stop": 1e-4, "decay_steps": 10}, "ema": 0.9, "clip_grad": 50.0},
        "training": {"steps": steps, "batch_size": 2, "val_every": 10, "checkpoint_every": 5, "bias_refit_every": 7,
                     "progress": False, **training},
    })


def test_schedules():
    lr = LRSchedule({"schedule": "exp", "start": 1e-3, "stop": 1e-5, "decay_steps": 10}, 100)
    assert lr(0) == pytest.approx(1e-3) and lr(100) == pytest.approx(1e-5) and lr(15) == lr(10)
    cos = LRSchedule({"schedule": "cosine", "start": 1e-3, "stop": 1e-5}, 100)
    assert cos(0) == pytest.approx(1e-3) and cos(100) == pytest.approx(1e-5) and cos(50) == pytest.approx(5.05e-4)
    p = Prefactor({"start": 1000, "limit": 1}, "forces")
    assert p(1e-3, 1e-3) == 1000 and p(1e-5, 1e-3) == pytest.approx(1 + 999e-2)
    assert Prefactor(0.5, "energy")(1e-6, 1e-3) == 0.5
    with pytest.raises(ValueError, match="loss.forces: unknown keys"):
        Prefactor({"start": 1, "lmit": 2}, "forces")


def test_config_errors(tmp_path):
    from mlip.train.config import load_config

    with pytest.raises(ValueError, match="training.stpes: unknown configuration key"):
        load_config(None, {"training": {"stpes": 3}})
    p = tmp_path / "c.yaml"
    p.write_text("training: [1, 2\n")
    with pytest.raises(ValueError, match="c.yaml' is not valid YAML"):
        load_config(str(p))


def _params(path):
    ck = torch.load(path, weights_only=False)
    return torch.cat([v.flatten() for v in ck["model"].values() if v.dtype.is_floating_point])


def test_training_reduces_error_and_resumes_exactly(tmp_path):
    from mlip.train.trainer import Trainer

    cfg = cu_config(tmp_path / "a", steps=30)
    tr = Trainer(cfg)
    before = tr.validate()
    summary = tr.run()
    assert summary["validation"]["force_rmse"] < before["force_rmse"]
    full = _params(tmp_path / "a" / "run" / "checkpoints" / "last.pt")
    # interrupted run: 15 steps, then resume to 30
    cfg_b = cu_config(tmp_path / "b", steps=30)
    tr = Trainer(cfg_b)
    tr.run(stop_at=15)
    tr2 = Trainer(cfg_b, resume=True)
    assert tr2.step == 15
    tr2.run()
    resumed = _params(tmp_path / "b" / "run" / "checkpoints" / "last.pt")
    assert torch.equal(full, resumed)
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(cfg_b)
    for f in ("metrics.csv", "learning_curve.png", "parity.png", "summary.json", "config.yaml"):
        assert (tmp_path / "b" / "run" / f).exists()


def test_decoupled_weight_decay_shrinks_weights_not_biases(tmp_path):
    """optimizer.decoupled_weight_decay: AdamW's θ ← θ(1 − lr·wd) on weights, none on biases or dt.
    With the loss prefactors at zero every gradient is zero, so one step is the decay alone."""
    from mlip.train.trainer import Trainer

    cfg = cu_config(tmp_path, steps=1)
    cfg["loss"] = {**cfg["loss"], "energy": 0.0, "forces": 0.0, "virial": 0.0}
    cfg["optimizer"].update({"weight_decay": 0.1, "decoupled_weight_decay": True, "ema": None,
                             "lr": {"schedule": "constant", "start": 0.01}})
    tr = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    tr.run()
    after = dict(tr.model.named_parameters())
    w, b, dt = "fitting.0.layers.1.linear.weight", "fitting.0.layers.1.linear.bias", "fitting.0.layers.1.dt"
    assert torch.allclose(after[w], before[w] * (1 - 0.01 * 0.1), rtol=1e-6, atol=0)
    assert torch.equal(after[b], before[b]) and torch.equal(after[dt], before[dt])


def test_cli_train_export_test_md(tmp_path):
    from mlip.cli import main

    cfg = cu_config(tmp_path, steps=20)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(cfg_path)]) == 0
    run = tmp_path / "run"
    assert (run / "model.pt").exists()
    assert main(["export", str(run), "-o", str(tmp_path / "m.pt")]) == 0
    from ase.build import bulk
    from ase.io import write

    from mlip.data import write_extxyz
    from mlip.datagen import generate_frames

    write_extxyz(generate_frames(n_frames=3, size=2, seed=9), str(tmp_path / "test.xyz"))
    assert main(["test", str(tmp_path / "m.pt"), str(tmp_path / "test.xyz"), "--json"]) == 0
    write(str(tmp_path / "cu.xyz"), bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2))
    assert main(["md", str(tmp_path / "m.pt"), str(tmp_path / "cu.xyz"), "--steps", "20", "--quiet",
                 "--trajectory", str(tmp_path / "t.xyz"), "--log", str(tmp_path / "md.log")]) == 0
    assert len(open(tmp_path / "md.log").readlines()) == 4  # header + steps 0, 10, 20
    from ase.io import read

    assert len(read(str(tmp_path / "t.xyz"), ":")) == 3
    # user errors: one line, exit code 2
    assert main(["test", str(tmp_path / "nope.pt"), str(tmp_path / "test.xyz")]) == 2
    assert main(["md", str(tmp_path / "m.pt"), str(tmp_path / "nope.xyz")]) == 2


def test_nve_energy_drift(tmp_path):
    """NVE, dt = 1 fs, 2000 steps, 300 K, float64 with the ASE calculator: |drift| ≤ 5e-5 eV/atom."""
    from ase.build import bulk

    from mlip import MLIPCalculator
    from mlip.export import export_model
    from mlip.md import run_md
    from mlip.train.trainer import Trainer, load_checkpoint_model

    cfg = cu_config(tmp_path, steps=60)
    Trainer(cfg).run()
    model = load_checkpoint_model(str(tmp_path / "run" / "checkpoints" / "last.pt"))
    export_model(model, str(tmp_path / "m.pt"))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    res = run_md(atoms, MLIPCalculator(str(tmp_path / "m.pt")), steps=2000, timestep_fs=1.0,
                 temperature_K=300, progress=False)
    print(json.dumps(res))
    assert abs(res["drift_per_atom"]) <= 5e-5
    assert 50 < atoms.get_temperature() < 600
