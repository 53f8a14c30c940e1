"""How much can any selection rule gain on the xTB-water active-learning benchmark? One selection step
in isolation: from the state of a finished loop at iteration k (its model 0, its training files and its
explored pool past burn-in), add `--budget` snapshots chosen by each rule, retrain exactly as the loop
does (warm start, the recipe's evaluations), and measure the force RMSE on the loop's test set.

Every pool snapshot is labelled with the oracle first (xTB on 16 waters: ~0.3 s each), so the rules
include an upper bound that no real selector can beat: `oracle_error`, the snapshots on which the
current model's true force error is largest. The other rules: `random` (several draws), `information`
(`select.strategy: information`, target pool and target training), `force_variance` (the same variance
reduction on force rows ∂F/∂θ_lin, the quantity the test scores), `none` (retrain on the same data:
what the extra optimisation alone gives) and `all` (the whole pool).

If the spread over rules is no larger than the spread over random draws, selection cannot save labels
here: the error is set by how many configurations are fitted, not by which.

    python benchmarks/bench_al_selection.py --run runs/bench_al_xtb_mtp_info/random_s22 --iteration 1
        [--budget 8] [--draws 3] [--save-name al_selection_s22_k1]

Resumable (each rule's result is written as it finishes). Writes benchmarks/results/<save-name>.json.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("MLIP_BENCH_RESULTS", REPO / "benchmarks" / "results"))


def force_rows(model, frame) -> np.ndarray:
    """Rows ∂(Σ_i b_i)/∂r_{jα} [3N, p] of the linear features b_i (`grade_features`): a force component
    is linear in the last parameters through them."""
    import torch

    from mlip.graph import frame_edges
    from mlip.models.base import forces_virials_from_edges, model_dtype

    sp, ei, vec = frame_edges(frame, list(model.species), float(model.cutoff), model_dtype(model))
    vec = vec.detach().clone().requires_grad_(True)
    total = model.grade_features(sp, ei, vec).sum(0)  # [p]
    rows = []
    for a in range(total.shape[0]):
        (g,) = torch.autograd.grad(total[a], vec, retain_graph=True, allow_unused=True)
        if g is None:
            g = torch.zeros_like(vec)
        rows.append(-forces_virials_from_edges(g, ei, vec, len(sp))[0].reshape(-1))  # ∂/∂r = −"force"
    return torch.stack(rows, 1).double().numpy()


def frame_force_rmse(model, frames) -> np.ndarray:
    """The model's force RMSE on each labelled frame."""
    from mlip.graph import build_graphs
    from mlip.models.base import model_dtype
    from mlip.train.evaluation import evaluate_graphs

    return np.array([evaluate_graphs(model, build_graphs([fr], model.species, model.cutoff,
                                                         model_dtype(model)))["force_rmse"] for fr in frames])


def choose(rule: str, model, train_frames, pool, errors: np.ndarray, budget: int) -> List[int]:
    from mlip.active.grade import feature_rows
    from mlip.active.information import InformationMatrix

    if rule.startswith("random"):
        rng = np.random.default_rng(int(rule[len("random"):] or 0))
        return sorted(int(i) for i in rng.choice(len(pool), budget, replace=False))
    if rule == "oracle_error":
        return sorted(int(i) for i in np.argsort(-errors)[:budget])
    if rule == "none":
        return []
    if rule == "all":
        return list(range(len(pool)))
    if rule in ("information_pool", "information_training"):
        info = InformationMatrix(feature_rows(model, train_frames, "nbh")[0])
        X, src = feature_rows(model, pool, "nbh")
        owner = np.array([s[0] for s in src])
        rows = [X[owner == c] for c in range(len(pool))]
        return sorted(info.select(rows, range(len(pool)), budget, pool=X if rule.endswith("pool") else None))
    if rule == "force_variance":
        info = InformationMatrix(np.concatenate([force_rows(model, fr) for fr in train_frames]))
        rows = [force_rows(model, fr) for fr in pool]
        return sorted(info.select(rows, range(len(pool)), budget, pool=np.concatenate(rows)))
    raise SystemExit(f"unknown rule {rule!r}")


def label_pool(cfg: Dict[str, Any], cands, path: str) -> None:
    """Label every candidate with the loop's oracle (one file per label, then one extxyz)."""
    if os.path.isfile(path):
        return
    from ase.io import read, write

    from mlip.active.executors import run_labels
    from mlip.active.store import bare

    d = path + ".labels"
    os.makedirs(d, exist_ok=True)
    tasks = [(bare(a), os.path.join(d, f"{j:04d}.xyz"), os.path.join(d, f"{j:04d}.failed.json"), {"al_index": j})
             for j, a in enumerate(cands)]
    run_labels({"oracle": cfg["oracle"], "label": {"executor": "local", "workers": 1, "address": None, "threads": 1}},
               tasks, lambda i, s: None)
    failed = [t[2] for t in tasks if os.path.isfile(t[2])]
    if failed:
        raise SystemExit(f"{len(failed)} pool labels failed, e.g. {failed[0]}")
    write(path + ".tmp.xyz", [read(t[1]) for t in tasks])
    os.replace(path + ".tmp.xyz", path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished mlip al run directory")
    ap.add_argument("--iteration", type=int, default=1, help="the state to start from (its model and pool)")
    ap.add_argument("--budget", type=int, default=8, help="labels per rule (the recipe's max_labels)")
    ap.add_argument("--draws", type=int, default=3, help="random draws")
    ap.add_argument("--rules", nargs="+", default=None,
                    help="default: oracle_error information_pool information_training force_variance none all")
    ap.add_argument("--workdir", default=None, help="default runs/bench_al_selection/<save-name>")
    ap.add_argument("--save-name", default=None, help="default al_selection_<run name>_k<iteration>")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import yaml
    from ase.io import read, write

    from mlip.active.loop import ActiveLearning
    from mlip.data import read_frames
    from mlip.train.finetune import load_checkpoint_model
    from mlip.train.trainer import Trainer

    run, k = os.path.abspath(args.run), args.iteration
    name = args.save_name or f"al_selection_{os.path.basename(run)}_k{k}"
    work = os.path.abspath(args.workdir or REPO / "runs" / "bench_al_selection" / name)
    os.makedirs(work, exist_ok=True)
    cfg = yaml.safe_load(open(os.path.join(run, "al_config.yaml")))
    al = ActiveLearning(cfg, log=False)
    if not os.path.isfile(al.member_checkpoint(k, 0)):
        raise SystemExit(f"{run}: iteration {k} has no trained model 0")
    n_runs = sum(1 for f in os.listdir(al.it_dir(k, "explore")) if f.startswith("run_") and f.endswith(".json"))
    cands = al.selector.candidates(k, n_runs)
    pool_file = os.path.join(work, "pool.xyz")
    label_pool(cfg, cands, pool_file)
    pool = read_frames(pool_file)
    pool_atoms = read(pool_file, index=":")  # with the oracle's labels, for the rules' training files
    model = load_checkpoint_model(al.member_checkpoint(k, 0))
    errors = frame_force_rmse(model, pool)
    train_frames = al.selector._train_frames(k)
    rules = [f"random{d}" for d in range(1, args.draws + 1)] + (args.rules or [
        "oracle_error", "information_pool", "information_training", "force_variance", "none", "all"])
    out_json = RESULTS / f"{name}.json"
    res: Dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    res.update(run=run, iteration=k, budget=args.budget, pool=len(pool), train_frames=len(train_frames),
               pool_force_rmse_mean=float(errors.mean()), pool_force_rmse_max=float(errors.max()))
    res.setdefault("rules", {})
    print(f"{run} iteration {k}: {len(train_frames)} training frames, pool {len(pool)} (model's force RMSE "
          f"on it: mean {errors.mean():.4f}, max {errors.max():.4f} eV/Å)", flush=True)
    for rule in rules:
        if rule in res["rules"]:
            continue
        chosen = choose(rule, model, train_frames, pool, errors, args.budget)
        t = al.train_config(k + 1, 0)
        extra = []
        if chosen:
            extra = [os.path.join(work, f"{rule}.xyz")]
            write(extra[0], [pool_atoms[i] for i in chosen])
        t["data"]["train"] = al.train_files(k) + extra
        t["model"]["init_from"] = al.member_checkpoint(k, 0)
        t["output"] = os.path.join(work, f"train_{rule}")
        with contextlib.redirect_stdout(io.StringIO()):
            Trainer(t, resume=False, overwrite=True).run()
        e = al.test_errors(load_checkpoint_model(os.path.join(t["output"], "checkpoints", "last.pt")))
        res["rules"][rule] = {"labels": len(chosen), "picks": chosen,
                              "picks_force_rmse_mean": float(errors[chosen].mean()) if chosen else None,
                              "test_force_rmse": e["force_rmse"], "test_energy_rmse_meV": 1e3 * e["energy_rmse"]}
        print(f"{rule:>22}: {len(chosen):3d} labels (their error {res['rules'][rule]['picks_force_rmse_mean'] or 0:.4f})"
              f" -> test F {e['force_rmse']:.4f} eV/Å, E {1e3 * e['energy_rmse']:.2f} meV/atom", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(res, indent=1))
    rnd = [v["test_force_rmse"] for r, v in res["rules"].items() if r.startswith("random")]
    sel = {r: v["test_force_rmse"] for r, v in res["rules"].items() if not r.startswith("random") and r not in ("none", "all")}
    print(f"random draws: {min(rnd):.4f}–{max(rnd):.4f} eV/Å; rules: "
          + ", ".join(f"{r} {v:.4f}" for r, v in sel.items()))
    print(f"wrote {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
