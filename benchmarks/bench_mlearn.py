"""mlearn (Zuo et al. 2020) accuracy for any family: train a recipe from training/ on
../shared/data/mlearn/<El>/training.json (energies, forces, virials) for a step count or a wall-clock
budget, then test-set MAE/RMSE next to the published GAP/MTP figures.

    python benchmarks/bench_mlearn.py --recipe mo_dp.yaml --element Mo [--minutes 40] [--steps N]
    python benchmarks/bench_mlearn.py --recipe nequip_mo.yaml --element Mo --minutes 40
Writes benchmarks/results/mlearn_<El>_<recipe>.json and prints the table and the learning curve file.
"""
from __future__ import annotations

import argparse
import os

import torch

from common import REPO, evaluate, save, shared, train_recipe

PUBLISHED = {  # test-set MAE: meV/atom, eV/Å (Zuo et al. 2020)
    "Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)},
    "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06)},
}


def _learning_curve(run_dir: str, name: str) -> list:
    """Validation rows of the run's metrics.csv (step, minutes, E RMSE meV/atom, F RMSE eV/Å) for the
    results JSON; the run's learning_curve.png is copied to benchmarks/results/<name>_curve.png."""
    import csv
    import shutil

    from common import RESULTS

    rows = []
    path = os.path.join(run_dir, "metrics.csv")
    if os.path.isfile(path):
        with open(path) as fh:
            for r in csv.DictReader(fh):
                if r.get("val_energy_rmse"):
                    rows.append([int(r["step"]), round(float(r["time"]) / 60, 2), float(r["val_energy_rmse"]) * 1e3,
                                 float(r["val_force_rmse"])])
    png = os.path.join(run_dir, "learning_curve.png")
    if os.path.isfile(png):
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, RESULTS / f"{name}_curve.png")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", required=True, help="file in training/, e.g. mo_dp.yaml")
    ap.add_argument("--element", required=True, choices=sorted(PUBLISHED))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget (schedule follows the clock)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    el = args.element
    data = shared("mlearn", el)
    torch.set_num_threads(args.threads)
    name = os.path.splitext(args.recipe)[0]
    out_dir = args.output or str(REPO / "runs" / f"bench_mlearn_{name}")
    training = {"progress": False}
    if args.steps:
        training["steps"] = args.steps
    if args.minutes:
        training.update(max_time=args.minutes * 60, schedule_by_time=True)
    res = train_recipe(args.recipe, {"threads": args.threads, "output": out_dir,
                                     "data": {"train": [str(data / "training.json")]}, "training": training})
    test = evaluate(res["model"], [str(data / "test.json")], threads=args.threads)
    out = {"recipe": args.recipe, "element": el, "steps": res["steps"], "train_wall_s": res["elapsed_s"],
           "n_parameters": res["n_parameters"], "family": res["config"]["model"]["family"],
           "test_energy_mae_meV": test["energy_mae"] * 1e3, "test_energy_rmse_meV": test["energy_rmse"] * 1e3,
           "test_force_mae": test["force_mae"], "test_force_rmse": test["force_rmse"],
           "test_stress_rmse_GPa": test.get("stress_rmse_gpa"),
           "learning_curve": _learning_curve(out_dir, f"mlearn_{el}_{name}")}
    print(f"\nmlearn {el} test set ({test['n_frames']} structures, {test['n_atoms']} atoms)")
    print(f"{'model':<16}{'E MAE meV/atom':>16}{'E RMSE':>10}{'F MAE eV/Å':>12}{'F RMSE':>10}")
    print(f"{'mlip ' + out['family']:<16}{out['test_energy_mae_meV']:>16.2f}{out['test_energy_rmse_meV']:>10.2f}"
          f"{out['test_force_mae']:>12.3f}{out['test_force_rmse']:>10.3f}")
    for k, (e, f) in PUBLISHED[el].items():
        print(f"{k + ' (published)':<16}{e:>16.2f}{'':>10}{f:>12.3f}{'':>10}")
    print(f"training: {res['steps']} steps, {res['elapsed_s'] / 60:.1f} min, {res['n_parameters']} parameters")
    print("learning curve (validation): step, minutes, E RMSE meV/atom, F RMSE eV/Å")
    for r in out["learning_curve"]:
        print(f"  {r[0]:>7d} {r[1]:>7.1f} {r[2]:>10.2f} {r[3]:>8.3f}")
    print("written", save(f"mlearn_{el}_{name}", out))


if __name__ == "__main__":
    main()
