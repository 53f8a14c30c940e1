"""Extrapolation grade γ of the neural families (issue 5): a Deep Potential and a NequIP-style model
trained on EMT Cu near equilibrium (300–600 K snapshots, ±2% strain), MaxVol active set on their
per-atom last-layer features, exported; γ through the C++ engine (`MLIPCalculator`) on the active
set's own configurations and on configurations ever farther from them (hot, strained, vacancy-rich,
a surface), next to the force error on each set.

    python benchmarks/bench_gamma.py [--quick] [--families deepmd nequip]

Prints one table per family and writes benchmarks/results/bench_gamma.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("MLIP_BENCH_RESULTS", REPO / "benchmarks" / "results"))


def emt_md_snapshots(n, temperature, strain=0.0, vacancies=0, seed=0, size=2, steps=40, surface=False):
    """EMT-labelled Langevin snapshots of fcc Cu (labels kept for the force errors)."""
    from ase import units
    from ase.build import bulk, fcc100
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from mlip.data import Frame

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        if surface:
            at = fcc100("Cu", (2, 2, 6), vacuum=6.0, periodic=True)
        else:
            at = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(size)
        for _ in range(vacancies):
            del at[int(rng.integers(len(at)))]
        if strain:
            eps = rng.choice([-1.0, 1.0]) * strain
            at.set_cell(at.cell[:] * (1 + eps), scale_atoms=True)
        at.calc = EMT()
        at.set_constraint(FixCom())
        MaxwellBoltzmannDistribution(at, temperature_K=temperature, rng=rng)
        Langevin(at, 2 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, rng=rng,
                 fixcm=False).run(steps + int(rng.integers(20)))
        at.set_constraint()
        fr = Frame.from_atoms(at)
        fr.source = f"T{temperature}:eps{strain}:vac{vacancies}:{k}"
        out.append(fr)
    return out


def train(family, frames, workdir, steps):
    from mlip.active.grade import build_active_set, export_graded
    from mlip.data import write_extxyz
    from mlip.train.config import load_config
    from mlip.train.trainer import Trainer, load_checkpoint_model

    data = os.path.join(workdir, "train.xyz")
    write_extxyz(frames, data)
    if family == "deepmd":
        model = {"family": "deepmd", "rcut": 4.5, "rcut_smth": 2.5, "sel": [80], "neuron": [8, 16],
                 "axis_neuron": 4, "fitting_neuron": [24, 24], "type_one_side": True}
        lr = 0.003
    else:
        model = {"family": "nequip", "cutoff": 4.5, "l_max": 1, "num_features": 8, "num_layers": 2,
                 "num_basis": 6, "radial_hidden": 16, "head_hidden": 16}
        lr = 0.01
    cfg = load_config(None, {
        "seed": 5, "threads": 1, "output": os.path.join(workdir, family),
        "data": {"train": [data], "val_fraction": 0.0},
        "model": model,
        "loss": {"energy": {"start": 0.2, "limit": 1.0}, "forces": {"start": 100.0, "limit": 1.0}},
        "optimizer": {"lr": {"schedule": "exp", "start": lr, "stop": 1e-4, "decay_steps": max(steps // 20, 1)},
                      "ema": 0.99, "clip_grad": 100.0},
        "training": {"steps": steps, "batch_size": 2, "val_every": steps, "checkpoint_every": steps,
                     "log_every": 50, "progress": False},
    })
    t0 = time.time()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        Trainer(cfg, overwrite=True).run()
    m = load_checkpoint_model(os.path.join(cfg["output"], "checkpoints", "last.pt"))
    aset = build_active_set(m, frames)
    path = os.path.join(workdir, f"{family}.pt")
    export_graded(m, path, aset)
    return path, aset, time.time() - t0


def grade_set(path, frames):
    from mlip import MLIPCalculator

    calc = MLIPCalculator(path)
    gam, df = [], []
    for fr in frames:
        at = fr.to_atoms()
        ref_f = at.get_forces().copy()
        at.calc = calc
        f = at.get_forces()
        gam.append(float(calc.results["gamma"]))
        df.append((f - ref_f).ravel())
    gam = np.array(gam)
    return {"n": len(frames), "gamma_max": float(gam.max()), "gamma_median": float(np.median(gam)),
            "gamma_min": float(gam.min()), "frac_extrapolating": float(np.mean(gam > 1.0 + 1e-6)),
            "force_rmse": float(np.sqrt(np.mean(np.concatenate(df) ** 2)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke version: tiny training and sets")
    ap.add_argument("--families", nargs="+", default=["deepmd", "nequip"])
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    n = 2 if args.quick else 6
    steps = args.steps or (30 if args.quick else 1500)
    t0 = time.time()
    train_frames = (emt_md_snapshots(3 if args.quick else 12, 300, 0.02, seed=1)
                    + emt_md_snapshots(3 if args.quick else 12, 600, 0.02, seed=2))
    sets = [
        ("300 K (new MD snapshots)", emt_md_snapshots(n, 300, 0.0, seed=11)),
        ("600 K, ±2% (like training)", emt_md_snapshots(n, 600, 0.02, seed=12)),
        ("1200 K", emt_md_snapshots(n, 1200, 0.0, seed=13)),
        ("2000 K (hot)", emt_md_snapshots(n, 2000, 0.0, seed=14)),
        ("300 K, ±6% strain", emt_md_snapshots(n, 300, 0.06, seed=15)),
        ("300 K, ±10% strain", emt_md_snapshots(n, 300, 0.10, seed=16)),
        ("600 K, 1 vacancy", emt_md_snapshots(n, 600, 0.0, vacancies=1, seed=17)),
        ("600 K, 4 vacancies (vacancy-rich)", emt_md_snapshots(n, 600, 0.0, vacancies=4, seed=18)),
        ("600 K, (100) surface slab", emt_md_snapshots(n, 600, 0.0, seed=19, surface=True)),
    ]
    print(f"EMT data: {len(train_frames)} training configurations (32 atoms, 300/600 K, ±2% strain), "
          f"{len(sets)} test sets of {n} ({time.time() - t0:.0f} s)")
    results = {"train_frames": len(train_frames), "steps": steps, "families": {}}
    with tempfile.TemporaryDirectory() as work:
        for family in args.families:
            path, aset, secs = train(family, train_frames, work, steps)
            own = grade_set(path, train_frames)
            rows = [("training set (the active set's own)", own)] + [(name, grade_set(path, fr)) for name, fr in sets]
            results["families"][family] = {"active_set_rank": aset.rank, "n_features": aset.n_features,
                                           "train_seconds": secs, "sets": {k: v for k, v in rows}}
            print(f"\n{family}: {steps} training steps ({secs:.0f} s); active set rank {aset.rank} of "
                  f"{aset.n_features} features; γ through the C++ engine (MLIPCalculator)")
            print(f"{'configurations':38s} {'n':>3} {'γ max':>10} {'γ median':>10} {'γ>1':>6} {'F RMSE eV/Å':>12}")
            for name, r in rows:
                print(f"{name:38s} {r['n']:>3} {r['gamma_max']:>10.6g} {r['gamma_median']:>10.4g} "
                      f"{r['frac_extrapolating']:>6.0%} {r['force_rmse']:>12.4f}")
            ok = own["gamma_max"] <= 1.0 + 1e-6
            print(f"max γ on the active set's configurations: {own['gamma_max']:.9f} "
                  f"({'<=' if ok else '>'} 1 + 1e-6)")
            results["families"][family]["train_gamma_ok"] = ok
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench_gamma.json").write_text(json.dumps(results, indent=1))
        print(f"\nwrote {RESULTS / 'bench_gamma.json'}")
    return 0 if all(v["train_gamma_ok"] for v in results["families"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
