"""Water (DeePMD-kit example data): one of our recipes trained on data_0 + data_1 for a fixed
wall-clock budget, validated on data_2. Default: our Deep Potential with DeePMD-kit's example
hyper-parameters (training/water_dp.yaml); `--recipe nequip_water.yaml` runs the NequIP-style model
under the same budget, so the families (and DeePMD-kit, benchmarks/peer_deepmd.py) sit side by side.

The example's schedule spans 1,000,000 steps; in a 30-minute budget we keep its shape (exp decay with
200 decays from 1e-3 to 3.51e-8, prefactors e 0.02→1, f 1000→1) compressed onto the number of steps
that fit the budget (estimated from a short throughput probe), and let the schedule follow the
clock (`training.schedule_by_time`) so it completes inside the budget even when the machine is busy.
Other recipes keep their own schedule, also following the clock.

    python benchmarks/bench_water.py --minutes 30 [--dtype float32] [--threads 2]
    python benchmarks/bench_water.py --recipe nequip_water.yaml --minutes 30 --dtype float32 --threads 1
Prints energy/force RMSE on data_2, frames/s of training, and writes
benchmarks/results/water_<family>_<dtype>.json (water_dp_float64.json, water_nequip_float32.json, ...).
"""
from __future__ import annotations

import argparse
import time

import torch

from common import REPO, evaluate, save, shared, train_recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipe", default="water_dp.yaml", help="file in training/")
    ap.add_argument("--output", default=None, help="run directory (default runs/bench_<recipe>)")
    args = ap.parse_args()
    import yaml

    family = yaml.safe_load((REPO / "training" / args.recipe).read_text())["model"]["family"]
    tag = {"deepmd": "dp"}.get(family, family)
    args.output = args.output or str(REPO / "runs" / f"bench_{args.recipe.rsplit('.', 1)[0]}")
    water = shared("water")
    torch.set_num_threads(args.threads)
    common = {"dtype": args.dtype, "threads": args.threads,
              "data": {"train": [str(water / "data_0"), str(water / "data_1")], "validation": [str(water / "data_2")]}}
    # throughput probe: 20 steps
    probe = train_recipe(args.recipe, {**common, "output": args.output + "_probe",
                                       "training": {"steps": 20, "val_every": 10**9, "progress": False}})
    rate = probe["steps"] / max(probe["elapsed_s"], 1e-9)
    budget = args.minutes * 60.0
    steps = max(200, int(rate * budget * 0.97))
    over: dict = {}
    if family == "deepmd":  # DeePMD-kit's schedule shape compressed onto the steps that fit
        decay = max(1, steps // 200)
        over["optimizer"] = {"lr": {"start": 1e-3, "stop": 3.51e-8, "decay_steps": decay}}
        print(f"probe: {rate:.2f} steps/s → schedule over {steps} steps (decay_steps {decay}) in {args.minutes} min")
    else:
        print(f"probe: {rate:.2f} steps/s → about {steps} steps in {args.minutes} min (recipe schedule, by the clock)")
    t0 = time.time()
    res = train_recipe(args.recipe, {**common, "output": args.output, **over,
                                     "training": {"steps": steps, "max_time": budget, "schedule_by_time": True,
                                                  "val_every": max(100, steps // 20),
                                                  "checkpoint_every": max(100, steps // 20), "progress": True}})
    wall = time.time() - t0
    val = evaluate(res["model"], [str(water / "data_2")], threads=args.threads)
    out = {
        "recipe": args.recipe, "family": family, "dtype": args.dtype, "threads": args.threads, "minutes": args.minutes, "steps": res["steps"],
        "frames_per_s": res["frames_per_s"], "wall_s": wall, "n_parameters": res["n_parameters"],
        "val_energy_rmse_meV_per_atom": val["energy_rmse"] * 1e3, "val_force_rmse_eV_A": val["force_rmse"],
        "val_energy_mae_meV_per_atom": val["energy_mae"] * 1e3, "val_force_mae_eV_A": val["force_mae"],
    }
    print(f"water {family} ({args.dtype}, {args.threads} threads, {args.minutes} min): {res['steps']} steps, "
          f"{res['frames_per_s']:.2f} frames/s; data_2 energy RMSE {out['val_energy_rmse_meV_per_atom']:.3f} "
          f"meV/atom, force RMSE {out['val_force_rmse_eV_A']:.4f} eV/Å")
    print("written", save(f"water_{tag}_{args.dtype}", out))


if __name__ == "__main__":
    main()
