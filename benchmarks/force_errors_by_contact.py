"""Where a model's force errors sit: per-atom force MAE binned by the atom's nearest-neighbour distance
and by the size of its reference force, per data group (an AIMD group is split by the temperature its
frames' descriptions name, "... at 6000 K").

Why: on mlearn Mo the NequIP-style model's test force MAE stays near 0.104 eV/Å whatever the loss
weights, rate or width (bench_ab.py). This table shows which atoms carry that error, on the training set
as well as the test set, so that underfitting (both high) is told apart from overfitting (test only).

    python benchmarks/force_errors_by_contact.py --model runs/X/model.pt \
        --data ../shared/data/mlearn/Mo/test.json [--data .../training.json] [--save-name NAME]

Prints one table per data file; with --save-name also writes benchmarks/results/NAME.json.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Dict, List, Sequence

import numpy as np

from common import save

from mlip.checks import arg_type, POSITIVE

TEMPERATURE = re.compile(r"\bat (\d+) K\b")
RMIN_EDGES = (0.0, 2.3, 2.45, 2.6, 2.8, np.inf)  # Å: bcc Mo's nearest neighbours sit at 2.73
FORCE_EDGES = (0.0, 1.0, 2.0, 3.0, np.inf)  # eV/Å, |F| of the reference


def group_of(group: str | None, description: str | None) -> str:
    """The frame's data group, with " <T> K" appended when its description names a temperature (mlearn's
    AIMD-NVT frames come from runs at 300, 3000 and 6000 K: solid, hot solid and liquid Mo)."""
    m = TEMPERATURE.search(description or "")
    return f"{group or ''} {m.group(1)} K".strip() if m else (group or "")


def per_atom_errors(model: str, path: str, cutoff: float) -> Dict[str, np.ndarray]:
    """For every atom of the file: its group, nearest-neighbour distance (Å, within `cutoff`), |F_ref|
    and mean absolute component error of the model's force."""
    from mlip import MLIPCalculator
    from mlip.data.dataset import read_frames
    from mlip.neighbors import neighbor_list_atoms

    calc = MLIPCalculator(model)
    groups: List[str] = []
    rmin: List[np.ndarray] = []
    fref: List[np.ndarray] = []
    err: List[np.ndarray] = []
    for frame in read_frames(path):
        if frame.forces is None:
            continue
        atoms = frame.to_atoms()
        atoms.calc = calc
        f = atoms.get_forces()
        edge_index, _, edge_vec = neighbor_list_atoms(atoms, cutoff)
        r = np.full(len(atoms), np.inf)
        np.minimum.at(r, edge_index[0], np.linalg.norm(edge_vec, axis=1))
        groups += [group_of(frame.group, frame.info.get("description"))] * len(atoms)
        rmin.append(r)
        fref.append(np.linalg.norm(frame.forces, axis=1))
        err.append(np.abs(f - frame.forces).mean(axis=1))
    return {"group": np.array(groups), "rmin": np.concatenate(rmin), "fref": np.concatenate(fref),
            "err": np.concatenate(err)}


def binned(values: np.ndarray, err: np.ndarray, edges: Sequence[float], total: float) -> List[Dict[str, Any]]:
    """Atoms with lo <= value < hi per bin: count, their force MAE, and their part of `total` (the
    whole file's summed error)."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (values >= lo) & (values < hi)
        if sel.any():
            rows.append({"lo": float(lo), "hi": float(hi), "atoms": int(sel.sum()),
                         "force_mae": float(err[sel].mean()), "share_of_total_mae": float(err[sel].sum()) / total})
    return rows


def table(atoms: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Per group (and "all"): the MAE by nearest-neighbour distance and by |F_ref|; `share_of_total_mae`
    is each bin's part of the file's overall force MAE."""
    total = float(atoms["err"].sum())
    out: Dict[str, Any] = {"atoms": int(len(atoms["err"])), "force_mae": float(atoms["err"].mean())}
    for g in ["all"] + sorted(set(atoms["group"].tolist())):
        sel = np.ones(len(atoms["err"]), bool) if g == "all" else atoms["group"] == g
        by_r = binned(atoms["rmin"][sel], atoms["err"][sel], RMIN_EDGES, total)
        by_f = binned(atoms["fref"][sel], atoms["err"][sel], FORCE_EDGES, total)
        out[g or "(no group)"] = {"atoms": int(sel.sum()), "force_mae": float(atoms["err"][sel].mean()),
                                  "by_nearest_neighbour": by_r, "by_reference_force": by_f}
    return out


def render(name: str, t: Dict[str, Any]) -> str:
    lines = [f"{name}: {t['atoms']} atoms, force MAE {t['force_mae']:.4f} eV/Å"]
    for g, v in t.items():
        if not isinstance(v, dict):
            continue
        lines.append(f"  {g}: {v['atoms']} atoms, MAE {v['force_mae']:.4f}")
        for key, unit in (("by_nearest_neighbour", "r_min Å"), ("by_reference_force", "|F| eV/Å")):
            for row in v[key]:
                lines.append(f"    {unit} [{row['lo']:g}, {row['hi']:g}): {row['atoms']:5d} atoms, "
                             f"MAE {row['force_mae']:.3f}, {100 * row['share_of_total_mae']:.0f} % of the total")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="an export (model.pt)")
    ap.add_argument("--data", action="append", required=True, help="a labelled data file (repeatable)")
    ap.add_argument("--cutoff", type=arg_type(POSITIVE), default=5.0,
                    help="search radius for the nearest neighbour (Å)")
    ap.add_argument("--save-name", default=None, help="write benchmarks/results/NAME.json")
    args = ap.parse_args(argv)
    payload: Dict[str, Any] = {"model": args.model, "files": {}}
    for path in args.data:
        t = table(per_atom_errors(args.model, path, args.cutoff))
        payload["files"][path] = t
        print(render(path, t))
    if args.save_name:
        print(f"written {save(args.save_name, payload)}")


if __name__ == "__main__":
    main()
