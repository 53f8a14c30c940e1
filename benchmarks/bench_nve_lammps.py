"""Energy conservation of any export in LAMMPS: NVE from 300 K on fcc (or the given data file),
several MPI ranks, total-energy drift per atom.

    python benchmarks/bench_nve_lammps.py --model runs/nequip_quickstart/model.pt --ranks 2
    python benchmarks/bench_nve_lammps.py --model M.pt --elements Cu --reps 4 --steps 2000 --dt 0.001

Drift = |E_tot(end) − E_tot(start)| / N and the largest |E_tot(t) − E_tot(0)| / N over the run
(thermo every 10 steps, 17 digits). The model should be a trained one: random weights give random,
stiff forces. Writes benchmarks/results/nve_lammps_<name>.json with --save.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mlip import lammps_support as ls  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--elements", nargs="+", default=["Cu"])
    ap.add_argument("--a0", type=float, default=3.615, help="fcc lattice constant (Å)")
    ap.add_argument("--reps", type=int, default=4, help="fcc cubic cells per side (4 atoms each)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--dt", type=float, default=0.001, help="time step (ps)")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--save", help="results name (benchmarks/results/nve_lammps_<save>.json)")
    a = ap.parse_args(argv)
    reason = ls.unavailable_reason()
    if reason:
        print(f"cannot run LAMMPS: {reason}", file=sys.stderr)
        return 1
    model = os.path.abspath(a.model)
    masses = "\n".join(f"mass {k + 1} 63.546" for k in range(len(a.elements)))
    script = f"""
units metal
atom_style atomic
lattice fcc {a.a0}
region box block 0 {a.reps} 0 {a.reps} 0 {a.reps}
create_box {len(a.elements)} box
create_atoms 1 box
{masses}
pair_style mlip {model} threads 1
pair_coeff * * {' '.join(a.elements)}
velocity all create {2 * a.temperature} 4928459 loop geom
timestep {a.dt}
fix 1 all nve
thermo 10
thermo_style custom step temp pe ke etotal
thermo_modify format float %.17g norm no
run {a.steps}
"""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        out = ls.run_lmp(script, tmp, nprocs=a.ranks, env=ls.lammps_env({"OMP_NUM_THREADS": "1"}), timeout=7200).stdout
        wall = time.time() - t0
    rows = ls.parse_thermo(out)
    n = 4 * a.reps ** 3
    e = np.array([r["TotEng"] for r in rows])
    temps = np.array([r["Temp"] for r in rows])
    res = {"model": model, "atoms": n, "ranks": a.ranks, "steps": a.steps, "dt_ps": a.dt,
           "drift_eV_per_atom": float(abs(e[-1] - e[0]) / n), "max_dev_eV_per_atom": float(np.abs(e - e[0]).max() / n),
           "mean_temperature_K": float(temps[len(temps) // 2:].mean()), "wall_s": wall}
    print(f"NVE in LAMMPS, {n} atoms, {a.ranks} rank(s), {a.steps} steps of {a.dt * 1000:g} fs, "
          f"<T> {res['mean_temperature_K']:.0f} K (second half)")
    print(f"total-energy drift {res['drift_eV_per_atom']:.2e} eV/atom, max deviation "
          f"{res['max_dev_eV_per_atom']:.2e} eV/atom ({wall:.0f} s)")
    if a.save:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"nve_lammps_{a.save}.json")
        with open(path, "w") as fh:
            json.dump(res, fh, indent=1)
        print("written", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
