"""mlearn (Zuo et al. 2020) accuracy for any family: train a recipe from training/ on
../shared/data/mlearn/<El>/training.json (energies, forces, virials) for a step count or a wall-clock
budget, then test-set MAE/RMSE next to the published GAP/MTP figures.

    python benchmarks/bench_mlearn.py --recipe mo_dp.yaml --element Mo [--minutes 40 | --hours 3] [--steps N]
    python benchmarks/bench_mlearn.py --recipe nequip_mo.yaml --element Mo --minutes 40
    python benchmarks/bench_mlearn.py --recipe nequip_mo.yaml --element Mo --hours 1.6 \
        --set loss.energy.limit=1000 --save-name mlearn_Mo_nequip_mo_e1000 --output runs/bench_mlearn_nequip_mo_e1000
With a budget the schedule follows the clock over the recipe's nominal `training.steps` (see
bench_water.py); `--steps N` replaces that span, its decay_steps scaled to keep the number of stairs.
An interrupted run is continued from its last checkpoint when the command is given again (or with
--resume); the budget counts only the seconds trained. Writes benchmarks/results/mlearn_<El>_<recipe>.json
(or --save-name)
with the learning curve (validation errors against training seconds) and prints both.
"""
from __future__ import annotations

import argparse

import torch

from common import (REPO, add_run_args, budget_seconds, evaluate, learning_curve, recipe_path, resume_config,
                    run_key, save, shared, span_overrides, train_recipe)

PUBLISHED = {  # test-set MAE: meV/atom, eV/Å (Zuo et al. 2020)
    "Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)},
    "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06)},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", required=True, help="file in training/, e.g. mo_dp.yaml (or a path)")
    ap.add_argument("--element", required=True, choices=sorted(PUBLISHED))
    ap.add_argument("--steps", type=int, default=None)
    add_run_args(ap, minutes=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default=None)
    ap.add_argument("--save-name", default=None, help="results JSON stem (default mlearn_<El>_<recipe>)")
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
    key = run_key(args.recipe, element=el, steps=args.steps, budget_s=budget, settings=args.set or None)
    config = resume_config(out_dir, key, args.resume)
    over = {"threads": args.threads, "output": out_dir, "data": {"train": [str(data / "training.json")]},
            "training": {"progress": False}}
    if args.steps:  # a shorter (longer) span with as many stairs as the recipe's
        span = span_overrides(args.recipe, args.steps)
        over["training"].update(span["training"])
        over.update({k: v for k, v in span.items() if k != "training"})
    if budget:
        over["training"].update(max_time=budget, schedule_by_time=True)
    res = train_recipe(args.recipe, over, config=config, key=key, settings=args.set)
    test = evaluate(res["model"], [str(data / "test.json")], threads=args.threads)
    out = {"recipe": args.recipe, **({"settings": args.set} if args.set else {}), "element": el, "steps": res["steps"], "train_wall_s": res["elapsed_s"],
           "n_parameters": res["n_parameters"], "family": res["config"]["model"]["family"],
           "test_energy_mae_meV": test["energy_mae"] * 1e3, "test_energy_rmse_meV": test["energy_rmse"] * 1e3,
           "test_force_mae": test["force_mae"], "test_force_rmse": test["force_rmse"],
           "test_stress_rmse_GPa": test.get("stress_rmse_gpa"), "last_lr": res.get("last_lr"),
           **({"readout_refit": res["readout_refit"]} if res.get("readout_refit") else {}),
           "learning_curve": learning_curve(out_dir, save_name)}
    print(f"\nmlearn {el} test set ({test['n_frames']} structures, {test['n_atoms']} atoms)")
    print(f"{'model':<16}{'E MAE meV/atom':>16}{'E RMSE':>10}{'F MAE eV/Å':>12}{'F RMSE':>10}")
    print(f"{'mlip ' + out['family']:<16}{out['test_energy_mae_meV']:>16.2f}{out['test_energy_rmse_meV']:>10.2f}"
          f"{out['test_force_mae']:>12.3f}{out['test_force_rmse']:>10.3f}")
    for k, (e, f) in PUBLISHED[el].items():
        print(f"{k + ' (published)':<16}{e:>16.2f}{'':>10}{f:>12.3f}{'':>10}")
    print(f"training: {res['steps']} steps, {res['elapsed_s'] / 60:.1f} min, {res['n_parameters']} parameters")
    print("learning curve (validation): step, training minutes, lr, E RMSE meV/atom, F RMSE eV/Å")
    for r in out["learning_curve"]:
        print(f"  {r['step']:>7d} {r['seconds'] / 60:>7.1f} {r['lr']:>9.2e} {r['energy_rmse_meV']:>10.2f} "
              f"{r['force_rmse'] or float('nan'):>8.3f}")
    print("written", save(save_name, out))


if __name__ == "__main__":
    main()
