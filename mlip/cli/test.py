"""`mlip test MODEL.pt DATA… [--committee M2.pt …]`: error report of an export on labelled data (through the
ASE calculator, i.e. the deployed C++ code path), overall, per species and per data group, with an optional
parity plot. With `--committee`, what is scored is the committee's mean prediction, which is what
`MLIPCalculator([...])` and a committee in `pair_style mlip` give as energy, forces and stress."""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, Optional, Sequence, Union

from mlip.metrics import ErrorAccumulator


def accumulate_export(model_path: Union[str, Sequence[str]], frames: Sequence, num_threads: Optional[int] = None,
                      progress: bool = False) -> ErrorAccumulator:
    """Predictions of the export at `model_path` (or the mean of a committee of exports) against the labels
    of `frames`, frame by frame."""
    from mlip.calculator import MLIPCalculator
    from mlip.graph import species_indices

    calc = MLIPCalculator(model_path, num_threads=num_threads)
    acc = ErrorAccumulator(calc.species)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(frames), desc="mlip test", unit="frame", dynamic_ncols=True)
    try:
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
                    f.energy, f.forces, f.virial, vol, group=f.group)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return acc


def evaluate_export(model_path: Union[str, Sequence[str]], frames: Sequence,
                    num_threads: Optional[int] = None) -> Dict[str, Any]:
    """Error summary (see mlip.metrics) of an export (or a committee's mean) on labelled frames."""
    return accumulate_export(model_path, frames, num_threads).summary()


def format_groups(groups: Dict[str, Dict[str, Any]]) -> str:
    """One row per data group: frames, energy MAE/RMSE (meV/atom), force MAE/RMSE (eV/Å)."""
    def cell(s, key, scale):
        return f"{s[key]*scale:9.3f}" if key in s else f"{'-':>9}"

    width = max(5, *(len(g) for g in groups))
    rows = [f"{'group':<{width}} {'frames':>6} {'E MAE':>9} {'E RMSE':>9} {'F MAE':>9} {'F RMSE':>9}",
            f"{'':<{width}} {'':>6} {'meV/atom':>9} {'meV/atom':>9} {'eV/Å':>9} {'eV/Å':>9}"]
    for g, s in groups.items():
        rows.append(f"{g:<{width}} {s.get('n_frames', 0):>6} {cell(s, 'energy_mae', 1e3)} "
                    f"{cell(s, 'energy_rmse', 1e3)} {cell(s, 'force_mae', 1)} {cell(s, 'force_rmse', 1)}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from mlip.data import read_frames
    from mlip.metrics import format_summary

    frames = []
    for p in args.data:
        frames.extend(read_frames(p, fmt=args.format, type_map=args.type_map))
    models = [args.model, *args.committee]
    name = args.model if len(models) == 1 else f"the mean of {', '.join(models)}"
    acc = accumulate_export(models, frames, args.threads, progress=not (args.quiet or args.json))
    summary = acc.summary()
    groups = acc.group_summaries()
    if args.plot:
        from mlip.plots import parity_figure

        parity_figure(acc, args.plot, title=f"{name} on {len(frames)} frames")
    if args.json:
        print(json.dumps({**summary, "groups": groups}, indent=1))
    else:
        print(f"{name} on {len(frames)} frames:")
        print(format_summary(summary))
        if groups:
            print(format_groups(groups))
        if args.plot:
            print(f"parity plot: {args.plot}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("test", help="error report of an exported model on labelled data")
    p.add_argument("model")
    p.add_argument("data", nargs="+", help="extxyz, DeePMD npy system(s), mlearn JSON or MLIP .cfg")
    p.add_argument("--format", default=None)
    p.add_argument("--type-map", nargs="+", default=None, help="element of each integer type (.cfg)")
    p.add_argument("--committee", nargs="+", default=[], metavar="MODEL",
                   help="more exports of the same species: the committee's mean prediction (with MODEL's) is scored")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="write energy/force/stress parity panels (coloured by data group / species)")
    p.add_argument("--json", action="store_true", help="print the errors (overall and per group) as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
