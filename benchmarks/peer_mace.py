"""MACE as the peer of our equivariant model: ASE-calculator time per force call on CPU.

    python benchmarks/peer_mace.py [--system cu|water] [--sizes 100 1000] [--dtypes float64 float32]
                                   [--threads 1] [--calls 20] [--ours model.pt ...] [--channels 32]
                                   [--max-L 1] [--interactions 2] [--r-max 5] [--correlation 3]

The MACE model is untrained (random initialisation, seeded; speed does not depend on the weights):
by default a MACE-small-like model — 2 interactions, hidden irreps 32x0e + 32x1o (max_L 1),
r_max 5 Å, correlation 3, spherical harmonics up to l = 3, 8 Bessel functions, radial MLP
[64, 64, 64] — about the size of our NequIP-style model. Its `MACECalculator` (mace-torch, e3nn
0.4.4, torch 2.13 CPU) is timed on fcc Cu (a = 3.615 Å, rattled) or on a water box, at about 100
and 1000 atoms, in float64 and float32, with `torch.set_num_threads(threads)`: two warm-up calls,
then `calls` calls of `atoms.get_forces()` each after a tiny displacement (so nothing is cached).
What is timed is the whole calculator call: neighbour list, graph, model, forces (MACE's
calculator computes the stress too).

MACE lives in the peers venv (benchmarks/peers.py); when this script runs under another Python it
runs its MACE part there. `--ours MODEL.pt` times our `MLIPCalculator` on the same structures with the
same protocol (needs the project venv). Writes benchmarks/results/ase_mace.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

A0_CU = 3.615
CHILD_ENV = "MLIP_PEER_MACE_CHILD"


def mace_available_here() -> bool:
    try:
        import mace  # noqa: F401
        import torch  # noqa: F401
        return True
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------
# structures

def fcc_cu(n_target: int, seed: int = 0):
    """fcc Cu supercell of the 4-atom cubic cell with about n_target atoms, rattled by 0.03 Å."""
    from ase.build import bulk

    best = None
    for nx in range(1, 40):
        for ny in (nx, nx + 1):
            for nz in (ny, ny + 1):
                n = 4 * nx * ny * nz
                if best is None or abs(n - n_target) < abs(best[0] - n_target):
                    best = (n, (nx, ny, nz))
    atoms = bulk("Cu", "fcc", a=A0_CU, cubic=True).repeat(best[1])
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    atoms.wrap()
    return atoms


def structure(system: str, n: int):
    if system == "cu":
        return fcc_cu(n)
    if system == "water":
        import peer_deepmd

        return peer_deepmd.water_box(n)
    raise ValueError(f"unknown system {system!r} (cu, water)")


# ----------------------------------------------------------------------------------------------
# MACE model

def build_mace(elements: Sequence[str], *, channels: int = 32, max_L: int = 1, interactions: int = 2,
               r_max: float = 5.0, correlation: int = 3, max_ell: int = 3, num_bessel: int = 8,
               radial_mlp: Sequence[int] = (64, 64, 64), avg_num_neighbors: float = 30.0, seed: int = 0):
    """An untrained ScaleShiftMACE (random weights from `seed`) in the current default dtype."""
    import torch
    from ase.data import atomic_numbers
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    z = sorted(atomic_numbers[e] for e in elements)
    hidden = o3.Irreps(" + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(max_L + 1)))
    model = modules.ScaleShiftMACE(
        r_max=r_max, num_bessel=num_bessel, num_polynomial_cutoff=5, max_ell=max_ell,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=interactions, num_elements=len(z), hidden_irreps=hidden,
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(z)), avg_num_neighbors=avg_num_neighbors,
        atomic_numbers=z, correlation=correlation, gate=torch.nn.functional.silu,
        radial_MLP=list(radial_mlp), atomic_inter_scale=1.0, atomic_inter_shift=0.0)
    return model, str(hidden)


def mace_calculator(elements: Sequence[str], dtype: str, **kw):
    import torch
    from mace.calculators import MACECalculator

    torch.set_default_dtype(torch.float64 if dtype == "float64" else torch.float32)
    model, hidden = build_mace(elements, **kw)
    calc = MACECalculator(models=model, device="cpu", default_dtype=dtype)
    n_par = sum(p.numel() for p in model.parameters())
    return calc, {"hidden_irreps": hidden, "n_parameters": int(n_par)}


# ----------------------------------------------------------------------------------------------
# timing (same protocol for any ASE calculator)

def time_calculator(calc, atoms, calls: int = 20, seed: int = 1, warmup: int = 2) -> Dict[str, float]:
    """Mean wall and process-CPU time of `calls` force calls after `warmup` untimed ones (TorchScript's
    profiling executor optimises on the second call)."""
    a = atoms.copy()
    a.calc = calc
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    a.get_forces()
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        a.positions = a.positions + rng.normal(scale=1e-3, size=a.positions.shape)
        a.get_forces()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        a.positions = a.positions + rng.normal(scale=1e-3, size=a.positions.shape)
        a.get_forces()
    dt = (time.perf_counter() - t0) / calls
    cpu = (time.process_time() - c0) / calls
    # on a busy machine the wall time includes waiting for a core; the process CPU time does not
    return {"atoms": len(a), "calls": calls, "ms_per_call": dt * 1e3, "us_per_atom": dt / len(a) * 1e6,
            "cpu_ms_per_call": cpu * 1e3, "cpu_us_per_atom": cpu / len(a) * 1e6, "first_call_s": first}


def calls_for(n_atoms: int, calls: Optional[int], atom_calls: float) -> int:
    return calls if calls else max(3, int(atom_calls / n_atoms))


def run_mace(system: str, sizes: Sequence[int], dtypes: Sequence[str], threads: int, calls: Optional[int],
             atom_calls: float, model_kw: Dict) -> List[Dict]:
    import warnings

    import torch

    warnings.filterwarnings("ignore")  # e3nn 0.4.4's codegen under torch 2.13 warns at every build
    torch.set_num_threads(threads)
    rows = []
    for dtype in dtypes:
        for n in sizes:
            atoms = structure(system, n)
            elements = sorted(set(atoms.get_chemical_symbols()))
            calc, info = mace_calculator(elements, dtype, **model_kw)
            r = time_calculator(calc, atoms, calls_for(len(atoms), calls, atom_calls))
            row = {"code": "MACE", "system": system, "dtype": dtype, "threads": threads, **info, **r}
            rows.append(row)
            print(f"{'MACE':>6} {system:>5} {dtype:>7} {r['atoms']:6d} {threads:3d} {r['calls']:5d} "
                  f"{r['ms_per_call']:10.2f} {r['us_per_atom']:9.2f} {r['cpu_us_per_atom']:9.2f}", flush=True)
    return rows


def run_ours(models: Sequence[str], system: str, sizes: Sequence[int], threads: int, calls: Optional[int],
             atom_calls: float) -> List[Dict]:
    from mlip import MLIPCalculator

    rows = []
    for spec in models:  # "label=path" or "path"
        label, _, m = spec.rpartition("=") if "=" in spec else (os.path.basename(spec), "", spec)
        for n in sizes:
            atoms = structure(system, n)
            calc = MLIPCalculator(m, num_threads=threads)
            r = time_calculator(calc, atoms, calls_for(len(atoms), calls, atom_calls))
            rows.append({"code": "mlip", "label": label, "model": m, "system": system, "threads": threads,
                         "dtype": _export_dtype(m), **r})
            print(f"{'mlip':>6} {system:>5} {'':>7} {r['atoms']:6d} {threads:3d} {r['calls']:5d} "
                  f"{r['ms_per_call']:10.2f} {r['us_per_atom']:9.2f} {r['cpu_us_per_atom']:9.2f}  {label}", flush=True)
    return rows


def _export_dtype(path: str) -> Optional[str]:
    """dtype recorded in an export's mlip_metadata.json (None if unreadable)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("extra/mlip_metadata.json"))
            return json.loads(z.read(name)).get("dtype")
    except Exception:
        return None


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", default="cu", choices=["cu", "water"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, help="timed calls per case (default: atom-calls / atoms, at least 3)")
    ap.add_argument("--atom-calls", type=float, default=2e4)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--max-L", type=int, default=1)
    ap.add_argument("--interactions", type=int, default=2)
    ap.add_argument("--r-max", type=float, default=5.0)
    ap.add_argument("--correlation", type=int, default=3)
    ap.add_argument("--ours", nargs="+", default=[], metavar="[LABEL=]MODEL.pt",
                    help="also time our MLIPCalculator with these exported models")
    ap.add_argument("--save-name", default="ase_mace")
    ap.add_argument("--child-json", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    model_kw = dict(channels=a.channels, max_L=a.max_L, interactions=a.interactions, r_max=a.r_max,
                    correlation=a.correlation)
    if a.child_json:  # MACE part inside the peers venv
        rows = run_mace(a.system, a.sizes, a.dtypes, a.threads, a.calls, a.atom_calls, model_kw)
        Path(a.child_json).write_text(json.dumps(rows))
        return 0

    t0 = time.time()
    print(f"{'code':>6} {'sys':>5} {'dtype':>7} {'atoms':>6} {'thr':>3} {'calls':>5} {'ms/call':>10} {'us/atom':>9} {'cpu us/at':>9}", flush=True)
    rows: List[Dict] = []
    skipped = None
    if mace_available_here():
        rows += run_mace(a.system, a.sizes, a.dtypes, a.threads, a.calls, a.atom_calls, model_kw)
    else:
        reason = peers.unavailable_reason("mace")
        if reason:
            skipped = reason
            print(f"SKIP: MACE: {reason}")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "mace.json")
                args = list(argv if argv is not None else sys.argv[1:])
                env = peers.lammps_env(threads=a.threads)
                env[CHILD_ENV] = "1"
                p = subprocess.run([str(peers.venv_python()), os.path.abspath(__file__), *args, "--child-json", out], env=env)
                if p.returncode != 0 or not os.path.exists(out):
                    skipped = f"MACE run failed (exit {p.returncode})"
                    print(f"ERROR: {skipped}")
                else:
                    rows += json.loads(Path(out).read_text())
    if a.ours:
        try:
            rows += run_ours(a.ours, a.system, a.sizes, a.threads, a.calls, a.atom_calls)
        except ImportError as e:
            print(f"SKIP: our calculator not importable here ({e}); run with the project venv")
    res = {"system": a.system, "threads": a.threads, "model": model_kw, "rows": rows, "skipped": skipped,
           "versions": peers._installed_versions(peers.venv_dir(), ["mace-torch", "e3nn", "torch"])
           if peers.venv_python().exists() else {}, "wall_s": time.time() - t0}
    if rows:
        peers.RESULTS.mkdir(parents=True, exist_ok=True)
        path = peers.RESULTS / f"{a.save_name}.json"
        path.write_text(json.dumps(res, indent=1, default=str))
        print("written", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
