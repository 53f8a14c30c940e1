"""`mlip test MODEL.pt DATA…`: error report of an export on labelled data (through the ASE calculator,
i.e. the deployed C++ code path)."""
from __future__ import annotations

import argparse
import json


def evaluate_export(model_path: str, frames, num_threads=None):
    from mlip.calculator import MLIPCalculator
    from mlip.graph import species_indices
    from mlip.metrics import ErrorAccumulator

    calc = MLIPCalculator(model_path, num_threads=num_threads)
    acc = ErrorAccumulator(calc.species)
    for f in frames:
        atoms = f.to_atoms()
        atoms.calc = calc
        try:
            e = atoms.get_potential_energy()
        except ValueError as exc:
            raise ValueError(f"{f.source}: {exc}") from None
        forces = atoms.get_forces()
        vol = abs(atoms.cell.volume) if atoms.pbc.all() else None
        acc.add(species_indices(f.symbols, calc.species, f.source), e, forces, calc.results["virial"],
                f.energy, f.forces, f.virial, vol)
    return acc.summary()


def run(args: argparse.Namespace) -> int:
    from mlip.data import read_frames
    from mlip.metrics import format_summary

    frames = []
    for p in args.data:
        frames.extend(read_frames(p, fmt=args.format, type_map=args.type_map))
    summary = evaluate_export(args.model, frames, args.threads)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{args.model} on {len(frames)} frames:")
        print(format_summary(summary))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("test", help="error report of an exported model on labelled data")
    p.add_argument("model")
    p.add_argument("data", nargs="+", help="extxyz, DeePMD npy system(s), mlearn JSON or MLIP .cfg")
    p.add_argument("--format", default=None)
    p.add_argument("--type-map", nargs="+", default=None, help="element of each integer type (.cfg)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
