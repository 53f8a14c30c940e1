"""`mlip md MODEL.pt STRUCTURE`: MD with the ASE calculator in the usual ensembles (NVE, Langevin,
Nosé–Hoover chain, Bussi, MTK NPT), a log, a trajectory and an optional plot of the log."""
from __future__ import annotations

import argparse
import json

GPA_PER_BAR = 1e-4


def read_structure(path: str, index: str):
    """One frame of any file ASE reads; a missing file, an unreadable one or an index out of range
    is one clear line."""
    import os

    from ase.io import read

    if not os.path.isfile(path):
        raise FileNotFoundError(f"structure file '{path}' does not exist")
    try:
        k = int(index)
    except ValueError:
        raise ValueError(f"--index must be an integer frame number, got '{index}'") from None
    try:
        return read(path, index=k)
    except (IndexError, StopIteration):
        pass
    except Exception as exc:
        raise ValueError(f"cannot read structure '{path}': {exc or type(exc).__name__}") from None
    try:  # out of range: count the frames for the message
        n = len(read(path, index=":"))
    except Exception as exc:
        raise ValueError(f"cannot read structure '{path}': {exc or type(exc).__name__}") from None
    raise ValueError(f"--index {k}: '{path}' has {n} frame(s) (valid: {-n} … {n - 1})")


def run(args: argparse.Namespace) -> int:
    from mlip.calculator import MLIPCalculator
    from mlip.md import run_md

    atoms = read_structure(args.structure, args.index)
    if args.repeat:
        if min(args.repeat) < 1:
            raise ValueError(f"--repeat needs three integers >= 1, got {' '.join(map(str, args.repeat))}")
        atoms = atoms.repeat(args.repeat)
    pressure_gpa = args.pressure * (GPA_PER_BAR if args.pressure_unit == "bar" else 1.0)
    calc = MLIPCalculator(args.model, num_threads=args.threads)
    res = run_md(atoms, calc, steps=args.steps, timestep_fs=args.dt, temperature_K=args.temperature,
                 ensemble=args.ensemble, friction_per_fs=args.friction, seed=args.seed,
                 trajectory=args.trajectory, log=args.log, every=args.every, progress=not args.quiet,
                 tdamp_fs=args.tdamp, pdamp_fs=args.pdamp, pressure_gpa=pressure_gpa)
    quantity = {"nve": "total-energy", "langevin": "total-energy (not conserved under Langevin)"}.get(
        res["ensemble"], "conserved-quantity")
    line = (f"MD {res['ensemble']}: {res['steps']} steps of {args.dt} fs, {len(atoms)} atoms, "
            f"{quantity} drift {res['drift_per_atom']:.3e} eV/atom (max deviation "
            f"{res['max_dev_per_atom']:.3e}), {res['us_per_atom_step']:.1f} µs/atom-step; second half: "
            f"T {res['mean_temperature_K']:.1f} K")
    if atoms.pbc.all():
        line += f", P {res['mean_pressure_GPa']:.3f} GPa, V {res['mean_volume_A3']:.2f} Å³"
    print(line)
    if args.plot:
        from mlip.plots import md_figure

        if not args.log:
            raise ValueError("--plot draws the log: give --log FILE")
        md_figure(args.log, args.plot, title=f"{args.model}: {res['ensemble']}, {len(atoms)} atoms")
        print(f"MD plot: {args.plot}")
    if args.json:
        print(json.dumps(res))
    return 0


def add_parser(sub) -> None:
    from mlip.md import ENSEMBLES

    p = sub.add_parser("md", help="run MD with an exported model (ASE calculator)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model")
    p.add_argument("structure", help="any file ASE reads (extxyz, cif, POSCAR, lammps-data …)")
    p.add_argument("--index", default="-1", help="frame of a multi-frame file (-1: the last)")
    p.add_argument("--repeat", type=int, nargs=3, metavar=("NX", "NY", "NZ"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--dt", type=float, default=1.0, help="time step (fs)")
    p.add_argument("--temperature", type=float, default=300.0, help="initial/thermostat temperature (K)")
    p.add_argument("--ensemble", choices=list(ENSEMBLES) + ["nvt"], default="nve",
                   help="; ".join(f"{k}: {v}" for k, v in ENSEMBLES.items()) + "; nvt = langevin")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction (1/fs)")
    p.add_argument("--tdamp", type=float, default=100.0, help="thermostat time constant (fs)")
    p.add_argument("--pdamp", type=float, default=1000.0, help="barostat time constant (fs)")
    p.add_argument("--pressure", type=float, default=0.0, help="NPT target pressure, in --pressure-unit")
    p.add_argument("--pressure-unit", choices=["gpa", "bar"], default="gpa")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--trajectory", default="md.extxyz")
    p.add_argument("--log", default="md.log", help="columns: step, time, energies, T, P, V, conserved")
    p.add_argument("--every", type=int, default=10, help="log/trajectory interval (steps)")
    p.add_argument("--plot", metavar="PNG", default=None, help="T, total energy, P and V against time")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
