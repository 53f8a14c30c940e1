"""`mlip md MODEL.pt STRUCTURE`: velocity-Verlet NVE or Langevin NVT with the ASE calculator."""
from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    import os

    from ase.io import read

    from mlip.calculator import MLIPCalculator
    from mlip.md import run_md

    if not os.path.isfile(args.structure):
        raise FileNotFoundError(f"structure file '{args.structure}' does not exist")
    try:
        atoms = read(args.structure, index=args.index)
    except Exception as exc:
        raise ValueError(f"cannot read structure '{args.structure}': {exc}") from None
    if args.repeat:
        atoms = atoms.repeat(args.repeat)
    calc = MLIPCalculator(args.model, num_threads=args.threads)
    res = run_md(atoms, calc, steps=args.steps, timestep_fs=args.dt, temperature_K=args.temperature,
                 ensemble=args.ensemble, friction_per_fs=args.friction, seed=args.seed,
                 trajectory=args.trajectory, log=args.log, every=args.every, progress=not args.quiet)
    print(f"MD {args.ensemble}: {res['steps']} steps of {args.dt} fs, {len(atoms)} atoms, "
          f"total-energy drift {res['drift_per_atom']:.3e} eV/atom (max deviation "
          f"{res['max_dev_per_atom']:.3e}), {res['us_per_atom_step']:.1f} µs/atom-step")
    if args.json:
        print(json.dumps(res))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("md", help="run MD with an exported model (ASE calculator)")
    p.add_argument("model")
    p.add_argument("structure", help="any file ASE reads (extxyz, cif, POSCAR, lammps-data …)")
    p.add_argument("--index", default="-1", help="frame of a multi-frame file (default: last)")
    p.add_argument("--repeat", type=int, nargs=3, metavar=("NX", "NY", "NZ"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--dt", type=float, default=1.0, help="time step in fs")
    p.add_argument("--temperature", type=float, default=300.0, help="initial/thermostat temperature (K)")
    p.add_argument("--ensemble", choices=["nve", "langevin"], default="nve")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction (1/fs)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--trajectory", default="md.extxyz")
    p.add_argument("--log", default="md.log")
    p.add_argument("--every", type=int, default=10, help="log/trajectory interval (steps)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
