"""Is the xTB-water active-learning benchmark limited by data at all? Train from scratch, for the same
wall-clock budget, on the loop's 10 initial boxes and on initial + every label of a finished loop, and
compare the test errors (the 350 K xTB MD test set of bench_al_xtb.py). If more labels do not lower the
test error, no selection rule can show a label saving with that model: the error is set by the model's
capacity and training, not by which configurations were labelled.

    python benchmarks/bench_al_capacity.py [--run runs/bench_al_xtb/random_s21] [--minutes 8]
        [--families deepmd nequip] [--save-name al_capacity]

Writes benchmarks/results/al_capacity.json. One thread per training; runs one after the other.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("MLIP_BENCH_RESULTS", REPO / "benchmarks" / "results"))
AL_RECIPE = REPO / "training" / "al_water_xtb.yaml"

# A small NequIP-style model (l_max 1, 16 features, 2 layers), float32, forces weighted as in
# training/nequip_water.yaml.
NEQUIP = {"dtype": "float32",
          "model": {"family": "nequip", "cutoff": 4.5, "l_max": 1, "num_features": 16, "num_layers": 2,
                    "num_basis": 8, "radial_hidden": 32, "head_hidden": 16},
          "loss": {"energy": {"start": 1.0, "limit": 1.0}, "forces": {"start": 100.0, "limit": 100.0},
                   "virial": 0.0},
          "optimizer": {"lr": {"schedule": "exp", "start": 5e-3, "stop": 1e-5, "decay_steps": 200},
                        "ema": 0.99, "clip_grad": 100.0},
          "training": {"steps": 20000, "batch_size": 1}}

# A Moment Tensor Potential for H/O, fitted by variable projection (the MLIP way; the natural partner of
# the MaxVol grade): weights as in training/quickstart_cu.yaml.
MTP = {"dtype": "float64",
       "model": {"family": "mtp", "level": 16, "cutoff": 5.0, "radial_basis_size": 8, "seed": 1},
       "loss": {"energy": 1.0, "forces": 0.01, "virial": 0.0},
       "optimizer": {"name": "varpro", "max_iter": 400, "history": 30, "patience": 1000},
       "training": {"stat_frames": None}}


def recipe(family: str, data: str, test: str, out: str, seconds: float) -> Dict[str, Any]:
    """The training recipe: the AL recipe's own DP (`deepmd`) or the small NequIP-style model, with a
    clock-driven schedule that ends its decay at the budget, or an MTP fitted for at most the budget."""
    import copy

    import yaml

    if family == "mtp":
        cfg = copy.deepcopy(MTP)
        cfg["optimizer"]["max_time"] = seconds
        cfg["training"].update(checkpoint_every=10, progress=False)
        cfg["data"] = {"train": [data], "val_fraction": 0.0, "test": [test]}
        cfg.update(output=out, threads=1, seed=21)
        return cfg
    if family == "deepmd":
        cfg = copy.deepcopy(yaml.safe_load(AL_RECIPE.read_text())["train"])
        cfg["training"]["steps"] = 20000
        cfg["optimizer"]["lr"]["decay_steps"] = 200
    else:
        cfg = copy.deepcopy(NEQUIP)
    cfg["training"].update(schedule_by_time=True, max_time=seconds, val_every=100000, log_every=100,
                           checkpoint_every=1000, progress=False)
    cfg["data"] = {"train": [data], "val_fraction": 0.0, "test": [test]}
    cfg.update(output=out, threads=1, seed=21)
    return cfg


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(REPO / "runs" / "bench_al_xtb" / "random_s21"),
                    help="a finished `mlip al` run of the xTB recipe (its init.xyz and labels)")
    ap.add_argument("--test", default=None, help="test set (default: RUN/../test_xtb_350K.xyz)")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--families", nargs="+", default=["deepmd", "nequip"], choices=["deepmd", "nequip", "mtp"])
    ap.add_argument("--workdir", default=str(REPO / "runs" / "bench_al_capacity"))
    ap.add_argument("--save-name", default="al_capacity", help="results file stem (default al_capacity)")
    a = ap.parse_args(argv)
    from ase.io import read, write

    from mlip.train.config import load_config
    from mlip.train.trainer import Trainer

    test = a.test or os.path.join(os.path.dirname(os.path.abspath(a.run)), "test_xtb_350K.xyz")
    for p in (os.path.join(a.run, "init.xyz"), test):
        if not os.path.isfile(p):
            print(f"bench_al_capacity: {p} not found (run benchmarks/bench_al_xtb.py first)", file=sys.stderr)
            return 2
    os.makedirs(a.workdir, exist_ok=True)
    init = read(os.path.join(a.run, "init.xyz"), ":")
    labels = [x for f in sorted(glob.glob(os.path.join(a.run, "iter_*", "label", "[0-9]*.xyz")))
              for x in read(f, ":")]
    sets = {"init": init, "init+labels": init + labels}
    rows = []
    for name, frames in sets.items():
        path = os.path.join(a.workdir, f"{name}.xyz")
        write(path, frames)
        for fam in a.families:
            out = os.path.join(a.workdir, f"{fam}_{name}")
            trainer = Trainer(load_config(None, recipe(fam, path, test, out, 60.0 * a.minutes)), overwrite=True)
            summary = trainer.run()
            t = summary["test"]
            rows.append({"family": fam, "data": name, "frames": len(frames), "steps": summary["steps"],
                         "test_energy_rmse_meV": t["energy_rmse"] * 1e3, "test_force_rmse": t["force_rmse"]})
            print(f"{fam:>7} on {name:<12} ({len(frames):>3} frames, {summary['steps']} steps): "
                  f"E {rows[-1]['test_energy_rmse_meV']:.2f} meV/atom, F {t['force_rmse']:.4f} eV/Å", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{a.save_name}.json"
    out.write_text(json.dumps({"run": a.run, "test_set": test, "minutes": a.minutes, "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
