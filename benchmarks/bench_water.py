"""Water (DeePMD-kit example data): one of our recipes trained on data_0 + data_1 for a fixed
wall-clock budget, validated on data_2. Default: our Deep Potential with DeePMD-kit's example
hyper-parameters (training/water_dp.yaml); `--recipe nequip_water.yaml` runs the NequIP-style model
under the same budget, so the families (and DeePMD-kit, benchmarks/peer_deepmd.py) sit side by side.

The schedule follows the clock (`training.schedule_by_time`): its progress is the fraction of the
budget trained, so it completes inside the budget whatever the machine's speed. The recipe's own
`training.steps` is the nominal span the schedule is laid over: the example's 1,000,000 steps with
decay_steps 5000 become 200 stairs from 1e-3 to the recipe's floor (prefactors e 0.02→1 and f 1000→1 on the
rate), each 1/200 of the budget; DeePMD-kit (benchmarks/peer_deepmd.py water) reads the same floor from the
recipe. A short throughput probe only spaces validations and checkpoints (~20 per budget).

An interrupted run (killed, machine rebooted) is continued from its last checkpoint when the command
is given again (or with --resume); the budget counts only the seconds actually trained. The learning
curve (validation errors against training seconds) goes into the results JSON.

    python benchmarks/bench_water.py --minutes 30 [--dtype float32] [--threads 2]
    python benchmarks/bench_water.py --recipe nequip_water.yaml --hours 4 --dtype float32 --threads 1
Prints energy/force RMSE on data_2, frames/s of training, and writes
benchmarks/results/water_<family>_<dtype>.json (water_dp_float64.json, water_nequip_float32.json, ...).
"""
from __future__ import annotations

import argparse
import time

import torch

from common import (REPO, add_run_args, budget_seconds, evaluate, learning_curve, recipe_path, resume_config,
                    run_key, save, shared, train_recipe)


def main() -> None:
    ap = argparse.ArgumentParser()
    add_run_args(ap, minutes=30.0)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipe", default="water_dp.yaml", help="file in training/ (or a path)")
    ap.add_argument("--output", default=None, help="run directory (default runs/bench_<recipe>)")
    ap.add_argument("--seed", type=int, default=None, help="the run's seed (default the recipe's)")
    ap.add_argument("--save-name", default=None, help="results JSON name (default water_<family>_<dtype>)")
    args = ap.parse_args()
    import yaml

    recipe = yaml.safe_load(recipe_path(args.recipe).read_text())
    family = recipe["model"]["family"]
    tag = {"deepmd": "dp"}.get(family, family)
    name = recipe_path(args.recipe).stem
    args.output = args.output or str(REPO / "runs" / f"bench_{name}")
    water = shared("water")
    torch.set_num_threads(args.threads)
    budget = budget_seconds(args)
    key = run_key(args.recipe, budget_s=budget, dtype=args.dtype, threads=args.threads,
                  **({"seed": args.seed} if args.seed is not None else {}))
    config = resume_config(args.output, key, args.resume)
    common = {"dtype": args.dtype, "threads": args.threads, **({"seed": args.seed} if args.seed is not None else {}),
              "data": {"train": [str(water / "data_0"), str(water / "data_1")], "validation": [str(water / "data_2")]}}
    training: dict = {}
    if config is None:  # a new run: a 20-step throughput probe spaces validations and checkpoints
        probe = train_recipe(args.recipe, {**common, "output": args.output + "_probe",
                                           "training": {"steps": 20, "val_every": 10**9, "progress": False}})
        rate = probe["steps"] / max(probe["elapsed_s"], 1e-9)
        every = max(100, int(rate * budget) // 20)
        training = {"max_time": budget, "schedule_by_time": True, "val_every": every, "checkpoint_every": every,
                    "progress": True}
        lr = recipe["optimizer"]["lr"]
        print(f"probe: {rate:.2f} steps/s → about {int(rate * budget)} steps in {budget / 60:g} min; schedule "
              f"{lr.get('schedule', 'exp')} over the budget by the clock ({recipe['training']['steps']} nominal "
              f"steps, decay_steps {lr.get('decay_steps')}); validation every {every} steps")
    t0 = time.time()
    res = train_recipe(args.recipe, {**common, "output": args.output, "training": training}, config=config, key=key)
    wall = time.time() - t0
    val = evaluate(res["model"], [str(water / "data_2")], threads=args.threads)
    curve = learning_curve(args.output)
    out = {
        "recipe": args.recipe, "family": family, "dtype": args.dtype, "threads": args.threads,
        "seed": args.seed if args.seed is not None else recipe.get("seed"),
        "minutes": budget / 60, "steps": res["steps"], "train_s": res["elapsed_s"],
        "frames_per_s": res["frames_per_s"], "wall_s": wall, "n_parameters": res["n_parameters"],
        "val_energy_rmse_meV_per_atom": val["energy_rmse"] * 1e3, "val_force_rmse_eV_A": val["force_rmse"],
        "val_energy_mae_meV_per_atom": val["energy_mae"] * 1e3, "val_force_mae_eV_A": val["force_mae"],
        "model_options": {k: recipe["model"][k] for k in ("env_stats", "env_shift", "fused_step") if k in recipe["model"]},
        "lr": recipe["optimizer"]["lr"], "last_lr": res.get("last_lr"), "learning_curve": curve,
    }
    print(f"water {family} ({args.dtype}, {args.threads} threads, {budget / 60:g} min): {res['steps']} steps, "
          f"{res['frames_per_s']:.2f} frames/s; data_2 energy RMSE {out['val_energy_rmse_meV_per_atom']:.3f} "
          f"meV/atom, force RMSE {out['val_force_rmse_eV_A']:.4f} eV/Å")
    print("written", save(args.save_name or f"water_{tag}_{args.dtype}", out))


if __name__ == "__main__":
    main()
