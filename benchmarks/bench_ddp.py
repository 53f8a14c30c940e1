"""Data-parallel training speed-up: water, our DP (training/water_dp.yaml: DeePMD-kit's se_e2_a example
architecture), the same global batch and steps on 1 process and on N processes (`mlip train --nproc`,
torch.distributed with gloo), one thread each. Prints frames/s of the training loop (from each run's
summary.json: global frames over loop wall-clock, validation excluded) and the ratio, in one run.

    python benchmarks/bench_ddp.py [--steps 200] [--batches 2 4] [--ranks 2] [--dtype float64]

Writes benchmarks/results/ddp_water_dp_<dtype>.json (one row per global batch and rank count). Needs ../shared/data/water; run on a quiet machine
(the ranks need their own cores).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import yaml

from common import REPO, save, shared


def run(recipe: str, out: str, nproc: int) -> dict:
    t0 = time.time()
    cmd = [sys.executable, "-m", "mlip", "train", recipe, "-o", out, "--overwrite", "--quiet", "--nproc", str(nproc)]
    res = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    summary = json.loads((REPO / out / "summary.json").read_text())
    summary["wall_s"] = time.time() - t0
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batches", type=int, nargs="+", default=[2, 4],
                    help="global batch sizes (frames per step, all ranks together)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--output", default="runs/bench_ddp")
    ap.add_argument("--save-name", default=None, help="results JSON stem (default ddp_water_dp_<dtype>)")
    args = ap.parse_args()
    water = shared("water")
    cfg = yaml.safe_load((REPO / "training" / "water_dp.yaml").read_text())
    cfg["dtype"], cfg["threads"] = args.dtype, 1
    cfg["data"] = {"train": [str(water / "data_0"), str(water / "data_1")], "validation": [str(water / "data_2")]}
    cfg["optimizer"]["lr"]["decay_steps"] = max(1, args.steps // 20)
    rows, speedups = [], {}
    for batch in args.batches:
        cfg["training"].update(steps=args.steps, batch_size=batch, val_every=10**9, val_frames=20,
                               checkpoint_every=10**9, log_every=50)
        recipe = REPO / args.output / f"recipe_b{batch}.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
        fps = {}
        for n in (1, args.ranks):
            s = run(str(recipe), f"{args.output}/b{batch}_ranks{n}", n)
            fps[n] = s["frames_per_s"]
            rows.append({"global_batch": batch, "ranks": n, "frames_per_s": s["frames_per_s"], "steps": s["steps"],
                         "wall_s": s["wall_s"], "val_force_rmse": s["validation"].get("force_rmse")})
            print(f"global batch {batch}, {n} rank(s): {s['frames_per_s']:.3f} frames/s over {s['steps']} steps "
                  "(1 thread each)")
        speedups[batch] = fps[args.ranks] / fps[1]
        print(f"global batch {batch}: speed-up {args.ranks} ranks / 1: {speedups[batch]:.2f}x")
    out = {"recipe": "water_dp.yaml", "dtype": args.dtype, "steps": args.steps, "threads_per_rank": 1,
           "ranks": args.ranks, "rows": rows, "speedup_by_batch": speedups}
    print("written", save(args.save_name or f"ddp_water_dp_{args.dtype}", out))


if __name__ == "__main__":
    main()
