"""mlearn Mo: our Deep Potential trained on training.json (energies, forces, virials), test-set MAE and
RMSE next to the published MTP/GAP figures (Zuo et al. 2020).

    python benchmarks/bench_mo_dp.py [--steps 20000] [--minutes M]
"""
from __future__ import annotations

import argparse

import torch

from common import REPO, evaluate, save, shared, train_recipe

PUBLISHED = {"MTP": (2.83, 0.09), "GAP": (2.24, 0.09)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock cap on training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", default=str(REPO / "runs" / "bench_mo_dp"))
    args = ap.parse_args()
    mo = shared("mlearn", "Mo")
    torch.set_num_threads(args.threads)
    res = train_recipe("mo_dp.yaml", {"threads": args.threads, "output": args.output,
                                      "data": {"train": [str(mo / "training.json")]},
                                      "training": {"steps": args.steps,
                                                   "max_time": args.minutes * 60 if args.minutes else None,
                                                   "schedule_by_time": bool(args.minutes), "progress": False}})
    test = evaluate(res["model"], [str(mo / "test.json")], threads=args.threads)
    out = {"steps": res["steps"], "train_wall_s": res["elapsed_s"], "n_parameters": res["n_parameters"],
           "test_energy_mae_meV": test["energy_mae"] * 1e3, "test_energy_rmse_meV": test["energy_rmse"] * 1e3,
           "test_force_mae": test["force_mae"], "test_force_rmse": test["force_rmse"],
           "test_stress_rmse_GPa": test.get("stress_rmse_gpa")}
    print(f"\nmlearn Mo test set ({test['n_frames']} structures, {test['n_atoms']} atoms)")
    print(f"{'model':<12}{'E MAE meV/atom':>16}{'E RMSE':>10}{'F MAE eV/Å':>12}{'F RMSE':>10}")
    print(f"{'mlip DP':<12}{out['test_energy_mae_meV']:>16.2f}{out['test_energy_rmse_meV']:>10.2f}"
          f"{out['test_force_mae']:>12.3f}{out['test_force_rmse']:>10.3f}")
    for k, (e, f) in PUBLISHED.items():
        print(f"{k + ' (pub.)':<12}{e:>16.2f}{'':>10}{f:>12.3f}{'':>10}")
    print(f"training: {res['steps']} steps, {res['elapsed_s']/60:.1f} min, {res['n_parameters']} parameters")
    print("written", save("mo_dp", out))


if __name__ == "__main__":
    main()
