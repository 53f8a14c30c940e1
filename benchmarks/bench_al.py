"""Active learning vs random selection (issue 5): from 10 EMT-labelled Cu configurations, the loop of
training/al_cu.yaml (explore 300–1500 K and ±5% strain, γ window + D-optimal batches) against the very
same loop with uniformly random selection among the explored snapshots (`select.strategy: random`),
same label budget per iteration. Force error on an independent EMT test set of 1200 K MD snapshots
after every iteration, i.e. as a function of the number of labels.

    python benchmarks/bench_al.py [--workdir runs/bench_al] [--quick] [--seeds 11 12]

Resumable (each loop is `mlip al`): run it again after an interruption. Prints the table, writes
benchmarks/results/bench_al.json and benchmarks/results/bench_al.png (error vs labels).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("MLIP_BENCH_RESULTS", REPO / "benchmarks" / "results"))


def md_test_set(path: str, make_atoms, make_calc, n_traj: int, per_traj: int, temperature: float,
                timestep_fs: float, warm: int, every: int, seed: int, tag: str) -> None:
    """Independent test set: Langevin MD with the oracle (`make_calc()`), `n_traj` trajectories from
    `make_atoms(t)`, `per_traj` snapshots `every` steps apart after `warm` steps."""
    if os.path.isfile(path):
        return
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from mlip.data import Frame, write_extxyz

    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n_traj):
        at = make_atoms(t)
        at.calc = make_calc()
        at.set_constraint(FixCom())
        MaxwellBoltzmannDistribution(at, temperature_K=temperature, rng=rng)
        dyn = Langevin(at, timestep_fs * units.fs, temperature_K=temperature, friction=0.02 / units.fs, rng=rng,
                       fixcm=False)
        dyn.run(warm)
        for _ in range(per_traj):
            dyn.run(every)
            a = at.copy()
            a.set_constraint()
            a.calc = make_calc()
            frames.append(Frame.from_atoms(a, source=f"{tag}:{t}"))
        print(f"test set: trajectory {t + 1}/{n_traj} done", flush=True)
    write_extxyz(frames, path + ".tmp.xyz")
    os.replace(path + ".tmp.xyz", path)


def test_set(path: str, n_traj: int = 4, per_traj: int = 5, temperature: float = 1200.0, seed: int = 2024) -> None:
    """EMT Langevin MD of 32-atom fcc Cu at 1200 K: snapshots 100 fs apart after 400 fs."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    md_test_set(path, lambda t: bulk("Cu", "fcc", a=3.61 * (1 + 0.01 * t), cubic=True).repeat(2), EMT, n_traj,
                per_traj, temperature, 2.0, 200, 50, seed, "test1200K")


def read_curve(out: str):
    rows = list(csv.DictReader(open(os.path.join(out, "summary.csv"))))
    n0 = int(rows[0]["train_frames"])
    curve = []
    for r in rows:
        if r["test_force_rmse"]:
            curve.append({"iteration": int(r["iteration"]), "labels": int(r["train_frames"]) - n0,
                          "force_rmse": float(r["test_force_rmse"]),
                          "energy_rmse_mev": 1e3 * float(r["test_energy_rmse"]),
                          "grade_max": float(r["grade_max"]) if r["grade_max"] else None,
                          "frac_ge_lo": float(r["frac_ge_lo"]) if r["frac_ge_lo"] else None})
    return curve


def plot_curves(curves, png, n_seeds: int, title: str, force_label: str, extra_x=None) -> None:
    """Force and energy error against labels (and, with `extra_x` = (key, axis label), force error
    against that quantity too), active learning solid, random selection dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [("labels", "force_rmse", force_label), ("labels", "energy_rmse_mev", "energy RMSE (meV/atom)")]
        if extra_x:
            panels.append((extra_x[0], "force_rmse", force_label))
        fig, ax = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
        for name, c in curves.items():
            strategy = name.rsplit("_s", 1)[0]
            style = "--s" if strategy == "random" else "-o"
            label = STRATEGY_LABELS.get(strategy, strategy) + \
                (f" seed {name.split('_s')[1]}" if n_seeds > 1 else "")
            for a, (xk, yk, _) in zip(ax, panels):
                a.plot([p[xk] for p in c], [p[yk] for p in c], style, label=label)
        for a, (xk, _, yl) in zip(ax, panels):
            a.set_ylabel(yl)
            a.set_xlabel(extra_x[1] if extra_x and xk == extra_x[0] else "labels added to the 10 initial configurations")
            a.set_yscale("log")
            a.grid(alpha=0.3)
        ax[0].legend()
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(png, dpi=120)
        print(f"wrote {png}")
    except Exception as exc:  # the table is the result; the plot is a convenience
        print(f"plot not written: {exc}")


STRATEGY_LABELS = {"dopt": "active learning (γ, D-optimal)", "information": "active learning (information)",
                   "random": "random selection"}


def pair(curves: dict, seed: int):
    """(the active-learning curve, the random curve) of `seed` in a `run_pairs` result."""
    al = [k for k in curves if k.endswith(f"_s{seed}") and not k.startswith("random")]
    return curves[al[0]], curves[f"random_s{seed}"]


def run_pairs(config: str, seeds, quick: dict, workdir: str, test: str, edit=None, al_select=None,
              settings: dict = None) -> dict:
    """For each seed, the loop of `config` with its own selection strategy (dopt or information) and
    with random selection (same label budget): {"<strategy>_s<seed>" | "random_s<seed>": error curve}.
    `edit(cfg)` may change a loaded configuration (e.g. shorter trainings for a smoke run); `al_select`
    overrides `select` keys of the active-learning runs only (e.g. their γ threshold; random selection
    does not look at γ); `settings` (`mlip.train.config.parse_settings` of `--set` items) apply to both runs, as
    `mlip al --set` would."""
    from mlip.active.loop import load_al_config, run_loop

    al = load_al_config(config, None, settings)["select"]["strategy"]
    if al == "random":
        raise SystemExit(f"{config}: select.strategy is random; the benchmark compares an active strategy with it")
    curves = {}
    for seed in seeds:
        for strategy in (al, "random"):
            name = f"{strategy}_s{seed}"
            over = dict(quick)
            over.update(output=os.path.join(workdir, name), test=[test], seed=seed)
            over["select"] = {**quick.get("select", {}), **((al_select or {}) if strategy != "random" else {}),
                              "strategy": strategy}
            cfg = load_al_config(config, over, settings)
            if edit is not None:
                edit(cfg)
            print(f"\n===== {name}: {cfg['output']}", flush=True)
            run_loop(cfg)
            curves[name] = read_curve(cfg["output"])
    return curves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=str(REPO / "runs" / "bench_al"))
    ap.add_argument("--quick", action="store_true", help="smoke version (tiny trainings, 2 iterations)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[11], help="loop seeds (one AL + one random run each)")
    ap.add_argument("--config", default=str(REPO / "training" / "al_cu.yaml"))
    args = ap.parse_args(argv)
    from mlip.active.loop import load_al_config

    os.makedirs(args.workdir, exist_ok=True)
    test = os.path.join(args.workdir, "test_1200K.xyz")
    test_set(test, n_traj=2 if args.quick else 4, per_traj=2 if args.quick else 5)
    quick = {}
    if args.quick:
        quick = {"iterations": 2, "first_steps": 60, "max_labels_total": 6,
                 "train": {**load_al_config(args.config)["train"],
                           "training": {"steps": 30, "batch_size": 2, "val_every": 1000, "checkpoint_every": 10}},
                 "explore": {"steps": 30, "runs": 3}, "select": {"max_labels": 3}}
    t0 = time.time()
    curves = run_pairs(args.config, args.seeds, quick, args.workdir, test)
    print(f"\nForce RMSE (eV/Å) on {test} (EMT, 1200 K MD, 32-atom cells) vs number of labels added to the "
          f"10 initial configurations ({time.time() - t0:.0f} s)")
    for seed in args.seeds:
        a, r = pair(curves, seed)
        print(f"\nseed {seed}")
        print(f"{'iter':>4} | {'AL labels':>9} {'AL F RMSE':>10} {'AL E meV/at':>11} | {'rand labels':>11} "
              f"{'rand F RMSE':>11} {'rand E meV/at':>13}")
        for k in range(max(len(a), len(r))):
            x = a[k] if k < len(a) else None
            y = r[k] if k < len(r) else None
            fa = f"{x['labels']:>9d} {x['force_rmse']:>10.4f} {x['energy_rmse_mev']:>11.2f}" if x else " " * 32
            fr = f"{y['labels']:>11d} {y['force_rmse']:>11.4f} {y['energy_rmse_mev']:>13.2f}" if y else ""
            print(f"{k:>4} | {fa} | {fr}")
        best_a = min(c["force_rmse"] for c in a)
        n_a = a[-1]["labels"]
        rand_at_n = [c["force_rmse"] for c in r if c["labels"] <= n_a]
        print(f"AL: {n_a} labels -> final {a[-1]['force_rmse']:.4f} eV/Å (best {best_a:.4f}); random with <= {n_a} "
              f"labels: best {min(rand_at_n):.4f} eV/Å")
    payload = {"test_set": test, "curves": curves, "config": args.config, "quick": args.quick}
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench_al.json").write_text(json.dumps(payload, indent=1))
        plot_curves(curves, RESULTS / "bench_al.png", len(args.seeds), "fcc Cu, EMT oracle, DP se_e2_a: error vs labels",
                    "force RMSE on 1200 K EMT MD (eV/Å)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
