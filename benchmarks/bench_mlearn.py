"""mlearn (Zuo et al. 2020) accuracy for any family: train a recipe from training/ on
../shared/data/mlearn/<El>/training.json (energies, forces, virials) for a step count or a wall-clock
budget, then test-set MAE/RMSE next to the published GAP/MTP figures.

    python benchmarks/bench_mlearn.py --recipe mo_dp.yaml --element Mo [--minutes 40 | --hours 3] [--steps N]
    python benchmarks/bench_mlearn.py --recipe nequip_mo.yaml --element Mo --minutes 40
    python benchmarks/bench_mlearn.py --recipe nequip_mo.yaml --element Mo --hours 1.6 \
        --set loss.energy.limit=1000 --save-name mlearn_Mo_nequip_mo_e1000 --output runs/bench_mlearn_nequip_mo_e1000
    python benchmarks/bench_mlearn.py --recipe nequip_mo.yaml --element Mo --hours 1 --baseline mtp_mo.yaml
`--baseline RECIPE` (NequIP-style only): first fit that MTP recipe (`mlip train`, in <output>/baseline; a
finished fit there is reused), then train the recipe on top of it (`model.baseline`, Δ-learning); the JSON
gets the baseline's own test errors and fit time, and `total_wall_s` counts both.
With a budget the schedule follows the clock over the recipe's nominal `training.steps` (see
bench_water.py); `--steps N` replaces that span, its decay_steps scaled to keep the number of stairs.
An interrupted run is continued from its last checkpoint when the command is given again (or with
--resume); the budget counts only the seconds trained. Writes benchmarks/results/mlearn_<El>_<recipe>.json
(or --save-name)
with the learning curve (validation errors against training seconds) and prints both.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict

import torch

from common import (REPO, add_run_args, budget_seconds, evaluate, learning_curve, recipe_path, resume_config,
                    run_key, save, shared, span_overrides, train_recipe)

PUBLISHED = {  # test-set MAE: meV/atom, eV/Å (Zuo et al. 2020)
    "Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)},
    "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06)},
}


def fit_baseline(recipe: str, el: str, run_dir: str, threads: int) -> Dict[str, Any]:
    """Fit the MTP recipe on the element's training set (`mlip train`, as bench_mlearn_mtp.py) unless
    run_dir already holds its export; its test errors and fit seconds."""
    model = os.path.abspath(os.path.join(run_dir, "model.pt"))  # recipe paths are relative to training/
    if not os.path.isfile(model):
        cmd = [sys.executable, "-m", "mlip", "train", str(recipe_path(recipe)), "-o", run_dir, "--overwrite",
               "--set", f"threads={threads}"]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=str(REPO), check=True)
    summary = os.path.join(run_dir, "summary.json")
    fit_s = json.load(open(summary)).get("elapsed_s") if os.path.isfile(summary) else None
    test = evaluate(model, [str(shared("mlearn", el) / "test.json")], threads=threads)
    return {"recipe": recipe, "model": model, "train_wall_s": fit_s,
            "test_energy_mae_meV": test["energy_mae"] * 1e3, "test_energy_rmse_meV": test["energy_rmse"] * 1e3,
            "test_force_mae": test["force_mae"], "test_force_rmse": test["force_rmse"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", required=True, help="file in training/, e.g. mo_dp.yaml (or a path)")
    ap.add_argument("--element", required=True, choices=sorted(PUBLISHED))
    ap.add_argument("--steps", type=int, default=None)
    add_run_args(ap, minutes=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default=None)
    ap.add_argument("--save-name", default=None, help="results JSON stem (default mlearn_<El>_<recipe>)")
    ap.add_argument("--baseline", default=None, metavar="RECIPE",
                    help="an MTP recipe in training/ fitted first and used as model.baseline (Δ-learning)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one recipe key, as `mlip train --set` (repeatable; kept in the JSON)")
    args = ap.parse_args()
    el = args.element
    data = shared("mlearn", el)
    torch.set_num_threads(args.threads)
    name = recipe_path(args.recipe).stem
    out_dir = args.output or str(REPO / "runs" / f"bench_mlearn_{name}")
    save_name = args.save_name or f"mlearn_{el}_{name}"
    budget = budget_seconds(args)
    settings = list(args.set)
    base = None
    if args.baseline:
        base = fit_baseline(args.baseline, el, os.path.join(out_dir, "baseline"), args.threads)
        settings.append(f"model.baseline={base['model']}")
    key = run_key(args.recipe, element=el, steps=args.steps, budget_s=budget, settings=settings or None)
    config = resume_config(out_dir, key, args.resume)
    over = {"threads": args.threads, "output": out_dir, "data": {"train": [str(data / "training.json")]},
            "training": {"progress": False}}
    if args.steps:  # a shorter (longer) span with as many stairs as the recipe's
        span = span_overrides(args.recipe, args.steps)
        over["training"].update(span["training"])
        over.update({k: v for k, v in span.items() if k != "training"})
    if budget:
        over["training"].update(max_time=budget, schedule_by_time=True)
    res = train_recipe(args.recipe, over, config=config, key=key, settings=settings)
    test = evaluate(res["model"], [str(data / "test.json")], threads=args.threads)
    out = {"recipe": args.recipe, **({"settings": args.set} if args.set else {}), "element": el, "steps": res["steps"], "train_wall_s": res["elapsed_s"],
           "model": os.path.abspath(res["model"]),
           "n_parameters": res["n_parameters"], "family": res["config"]["model"]["family"],
           "test_energy_mae_meV": test["energy_mae"] * 1e3, "test_energy_rmse_meV": test["energy_rmse"] * 1e3,
           "test_force_mae": test["force_mae"], "test_force_rmse": test["force_rmse"],
           "test_stress_rmse_GPa": test.get("stress_rmse_gpa"), "last_lr": res.get("last_lr"),
           **({"readout_refit": res["readout_refit"]} if res.get("readout_refit") else {}),
           **({"baseline": base, "total_wall_s": res["elapsed_s"] + (base["train_wall_s"] or 0.0)} if base else {}),
           "learning_curve": learning_curve(out_dir, save_name)}
    print(f"\nmlearn {el} test set ({test['n_frames']} structures, {test['n_atoms']} atoms)")
    print(f"{'model':<16}{'E MAE meV/atom':>16}{'E RMSE':>10}{'F MAE eV/Å':>12}{'F RMSE':>10}")
    print(f"{'mlip ' + out['family']:<16}{out['test_energy_mae_meV']:>16.2f}{out['test_energy_rmse_meV']:>10.2f}"
          f"{out['test_force_mae']:>12.3f}{out['test_force_rmse']:>10.3f}")
    for k, (e, f) in PUBLISHED[el].items():
        print(f"{k + ' (published)':<16}{e:>16.2f}{'':>10}{f:>12.3f}{'':>10}")
    if base:
        print(f"{'baseline MTP':<16}{base['test_energy_mae_meV']:>16.2f}{base['test_energy_rmse_meV']:>10.2f}"
              f"{base['test_force_mae']:>12.3f}{base['test_force_rmse']:>10.3f}   (fit {base['train_wall_s'] / 60:.1f} min)")
    print(f"training: {res['steps']} steps, {res['elapsed_s'] / 60:.1f} min, {res['n_parameters']} parameters")
    print("learning curve (validation): step, training minutes, lr, E RMSE meV/atom, F RMSE eV/Å")
    for r in out["learning_curve"]:
        print(f"  {r['step']:>7d} {r['seconds'] / 60:>7.1f} {r['lr']:>9.2e} {r['energy_rmse_meV']:>10.2f} "
              f"{r['force_rmse'] or float('nan'):>8.3f}")
    print("written", save(save_name, out))


if __name__ == "__main__":
    main()
