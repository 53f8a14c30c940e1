"""The full-batch optimisers of the Trainer on an MTP (optimizer.name varpro / lbfgs): the linear
design reproduces the model, the linear solve is the least-squares optimum (= a dense lstsq), varpro
fits EMT copper through `mlip train`, early stopping keeps the best-validation coefficients, resume
continues the evaluation count, and misuse gives one clear error."""
from __future__ import annotations

import csv
import json
import os

import pytest
import torch

from mlip.graph import build_graphs, collate
from mlip.models.base import predict
from mlip.models.mtp import MTP
from mlip.train.full_batch import FullBatch, LossWeights, design_rows, full_loss, get_flat, solve_linear

W = LossWeights(energy=1.0, forces=0.01, virial=0.001)


@pytest.fixture(scope="module")
def frames():
    from mlip.datagen import generate_frames

    return generate_frames("emt", "Cu", n_frames=14, size=2, md_steps=5, seed=3)


def _model_and_data(frames, level=8):
    m = MTP(["Cu"], level=level, cutoff=4.5, seed=2).double()
    m.fit_statistics(frames)
    graphs = build_graphs(frames, m.species, m.cutoff, torch.float64)
    return m, graphs


def test_linear_design_reproduces_the_model(frames):
    m, graphs = _model_and_data(frames)
    b = collate(graphs[:4])
    E, F, V = m.linear_design(b.species, b.edge_index, b.edge_vec, b.node_frame, b.n_frames, True)
    xi = get_flat([getattr(m, n) for n in m.linear_parameters()])
    pred = predict(m, b, create_graph=False)
    assert torch.allclose(E @ xi, pred["energy"], rtol=1e-10, atol=1e-10)
    assert torch.allclose(F @ xi, pred["forces"], rtol=1e-8, atol=1e-10)
    assert torch.allclose(V @ xi, pred["virial"], rtol=1e-8, atol=1e-10)


def test_linear_solve_equals_dense_lstsq(frames):
    m, graphs = _model_and_data(frames)
    data = FullBatch(graphs, max_edges=3000)  # several batches and design blocks
    assert len(data) > 1
    loss_qr, _ = solve_linear(m, data, W)
    assert full_loss(m, data, W) == pytest.approx(loss_qr, rel=1e-8)  # the residual is the common loss
    rows = [design_rows(m, b, W) for b in data.design_batches]
    a = torch.cat([r for r, _ in rows]) / data.weight_sum ** 0.5
    y = torch.cat([t for _, t in rows]) / data.weight_sum ** 0.5
    x = torch.linalg.lstsq(a, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    assert float(((a @ x - y) ** 2).sum()) == pytest.approx(loss_qr, rel=1e-6)
    with torch.no_grad():  # any perturbation of the linear coefficients is worse
        m.moment_coeffs.add_(1e-3 * torch.randn_like(m.moment_coeffs))
    assert full_loss(m, data, W) > loss_qr * (1 + 1e-6)


def _cfg(tmp_path, name="varpro", val_fraction=0.25, **opt):
    from mlip.train.config import load_config

    return load_config(None, {
        "seed": 0, "output": str(tmp_path / "run"), "threads": 1,
        "data": {"generate": {"n_frames": 16, "size": 2, "md_steps": 5}, "val_fraction": val_fraction},
        "model": {"family": "mtp", "species": ["Cu"], "level": 8, "cutoff": 4.5, "seed": 2},
        "loss": {"energy": 1.0, "forces": 0.01, "virial": 0.0},
        "optimizer": {"name": name, **opt},
        "training": {"stat_frames": None, "checkpoint_every": 3, "progress": False},
    })


def _rows(run):
    return list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))


def test_varpro_fits_emt_through_mlip_train(tmp_path):
    from mlip.cli.train import run as cli_train
    from mlip.train.trainer import load_checkpoint_model

    cfg_path = tmp_path / "mtp.yaml"
    import yaml

    cfg = _cfg(tmp_path, max_iter=25, history=20, patience=25)
    cfg_path.write_text(yaml.safe_dump(cfg))
    from mlip.cli import build_parser

    args = build_parser().parse_args(["train", str(cfg_path)])  # every option at its default
    assert cli_train(args) == 0
    run = cfg["output"]
    for f in ("model.pt", "model.mtp", "summary.json", "config.yaml", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert os.path.isfile(os.path.join(run, f)), f
    rows = _rows(run)
    losses = [float(r["loss"]) for r in rows]
    assert len(rows) == 25 and losses[-1] < 0.2 * losses[0]
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["optimizer"] == "varpro" and summary["evaluations"] == 25
    # EMT Cu at 300 K-ish displacements: a level-8 MTP gets forces to a fraction of their scale
    assert summary["validation"]["force_rmse"] < 0.08 and summary["validation"]["energy_rmse"] < 0.005
    model = load_checkpoint_model(os.path.join(run, "checkpoints", "best.pt"))
    assert isinstance(model, MTP)
    again = MTP.from_mtp_file(os.path.join(run, "model.mtp"))
    assert torch.allclose(again.moment_coeffs, model.moment_coeffs)


def test_early_stopping_keeps_best_validation_coefficients(tmp_path):
    from mlip.train.trainer import Trainer, load_checkpoint_model

    tr = Trainer(_cfg(tmp_path, max_iter=30, history=20, patience=3, min_rel_improvement=0.05))
    summary = tr.run()
    rows = _rows(tr.out)
    val = [float(r["val_loss"]) for r in rows]
    best = min(val)
    assert summary["best_evaluation"] == val.index(best) + 1
    assert summary["evaluations"] < 30  # patience ended the fit
    assert summary["final_loss"] == pytest.approx(float(rows[summary["best_evaluation"] - 1]["loss"]), rel=1e-9)
    opt = tr.optimizer
    assert full_loss(tr.model, opt.val, opt.w) == pytest.approx(best, rel=1e-10)
    saved = load_checkpoint_model(os.path.join(tr.ckpt_dir, "best.pt"))
    assert torch.equal(saved.radial_coeffs, tr.model.radial_coeffs.detach())


def test_resume_continues_the_evaluation_count(tmp_path):
    from mlip.train.trainer import Trainer

    cfg = _cfg(tmp_path, max_iter=8, history=20, patience=20)
    Trainer(cfg).run(stop_at=4)
    last = torch.load(os.path.join(cfg["output"], "checkpoints", "last.pt"), weights_only=False)
    assert last["step"] == 4 and last["optimizer"]["name"] == "varpro"
    tr = Trainer(cfg, resume=True)
    assert torch.equal(tr.model.radial_coeffs.detach(), last["model"]["radial_coeffs"])
    summary = tr.run()
    assert summary["evaluations"] == 8
    assert [int(r["step"]) for r in _rows(cfg["output"])] == list(range(1, 9))


def test_sigterm_ends_the_fit_and_the_run_finishes(tmp_path):
    import signal

    from mlip.train.trainer import Trainer

    tr = Trainer(_cfg(tmp_path, max_iter=30, history=20, patience=30))
    # the first last.pt (evaluation 3) sends SIGTERM: the fit stops before evaluation 4 and still saves
    sent = []

    def kill_once(name, path):
        if name == "last.pt" and not sent:
            sent.append(name)
            os.kill(os.getpid(), signal.SIGTERM)

    tr.on_checkpoint.append(kill_once)
    summary = tr.run()
    assert summary["stopped_by_signal"] == signal.SIGTERM and summary["evaluations"] == 3
    assert os.path.isfile(os.path.join(tr.out, "summary.json"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


def test_joint_lbfgs_lowers_the_loss(tmp_path):
    from mlip.train.trainer import Trainer

    tr = Trainer(_cfg(tmp_path, name="lbfgs", val_fraction=0.0, max_iter=20, cycle_iter=8, history=20))
    tr.run()
    first = float(_rows(tr.out)[0]["loss"])
    assert tr.optimizer.state["kept_loss"] < 0.5 * first


@pytest.mark.parametrize("over, message", [
    ({"optimizer": {"cycle_iter": 5}}, "optimizer.cycle_iter applies to optimizer lbfgs, not 'varpro'"),
    ({"optimizer": {"ema": 0.9}}, "optimizer.ema applies to optimizer adam"),
    ({"loss": {"energy": {"start": 1, "limit": 2}}}, "loss.energy: a {start, limit} schedule needs optimizer adam"),
    ({"model": {"family": "deepmd", "rcut": 4.0, "rcut_smth": 2.0, "sel": [40], "neuron": [4, 8],
                "axis_neuron": 2, "fitting_neuron": [8]}}, "family 'deepmd' is not; use adam or lbfgs"),
])
def test_full_batch_misuse_is_one_clear_error(tmp_path, over, message):
    from mlip.train.config import merge_config
    from mlip.train.trainer import Trainer

    cfg = _cfg(tmp_path)
    for k, v in over.items():
        cfg[k] = v if k == "model" else merge_config(cfg[k], v)
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        Trainer(cfg)


def test_unknown_optimizer_name(tmp_path):
    from mlip.train.config import load_config

    with pytest.raises(ValueError, match="optimizer.name must be one of adam, varpro, lbfgs"):
        load_config(None, {"optimizer": {"name": "sgd"}})
