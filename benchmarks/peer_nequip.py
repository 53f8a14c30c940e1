"""NequIP (the package) as the peer of our NequIP-style model: ASE-calculator time per force+stress call on CPU.

    python benchmarks/peer_nequip.py [--sizes 100 1000] [--dtypes float32 float64] [--threads 1]
                                     [--calls N] [--warmup 2] [--compile aoti|none] [--quick]

Both models have the architecture of bench_lammps.NEQUIP_PRESET (the size of training/nequip_mo.yaml):
cutoff 5 Å, l_max 2 with both parities, 32 features, 3 interaction layers, 8 Bessel functions
(trainable), polynomial cutoff p = 6, radial MLP with 2 hidden layers of 64, a 16-wide SiLU readout,
avg_num_neighbors 40, one element (Cu); random weights (speed does not depend on them).

* theirs: `nequip` 0.19.x (`NequIPGNNModel`, e3nn 0.6, torch 2.13 CPU) in its own venv
  (`.peers-venv-nequip`, benchmarks/peers.py), compiled the way `nequip-compile --mode aotinductor
  --target ase --device cpu` does it (torch 2.13 refuses `--mode torchscript`: TorchScript compilation is
  rejected for torch >= 2.10), then loaded with `NequIPCalculator.from_compiled_model`: nequip's own ASE
  calculator with its default neighbour list (matscipy). `nequip-compile` itself only reads training
  checkpoints and `.nequip.zip` packages, so the script runs the CLI's AOTInductor branch in-process on
  the freshly built model (same functions: `aot_export_model`, target "ase", the CLI's default dynamic
  shapes 2..inf nodes and edges, the same metadata). Compiled files are kept in
  `<venv>/mlip-compiled/` keyed by architecture, dtype and versions (the compile takes ~2 min per dtype
  on this machine). If compiling fails, the uncompiled model is timed with the same calculator, and
  the JSON says so (`compile.<dtype>.compiled` false, with the error).
* ours: `mlip.MLIPCalculator` on an export of `mlip.models.nequip.NequIP(**NEQUIP_PRESET)` in the same
  dtype (needs the project venv).

Structures: fcc Cu from peer_mace.fcc_cu (a = 3.615 Å, rattled 0.03 Å; ~100 → 96 atoms, ~1000 → 1008).
Protocol, identical for both: `torch.set_num_threads(threads)`, `warmup` untimed calls, then `calls`
calls, each after a small random displacement of every atom (nothing cached), each = `get_forces()`
then `get_stress()` (both calculators compute energy, forces and stress in one evaluation). Reported:
the median µs per atom per call (and the mean and the process CPU time). One script run drives both
venvs: the NequIP part runs as a child process in the nequip venv.

Writes benchmarks/results/ase_nequip.json (`--quick`: quick_ase_nequip.json, 32 atoms, float32, two
calls, no compile), with ours/theirs µs per atom and their ratio, parameter counts, versions, whether
the peer was compiled, and what nequip's LAMMPS pair styles support ("lammps_pair_style", with sources).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402
from peer_mace import _export_dtype, fcc_cu  # noqa: E402  (same structures as the MACE comparison)

ELEMENTS = ["Cu"]
SEED = 0

# the architecture of bench_lammps.NEQUIP_PRESET in nequip 0.19's NequIPGNNModel arguments
# (bench_lammps is not imported here: the child process runs in the nequip venv, without mlip)
NEQUIP_KW = dict(
    r_max=5.0, num_layers=3, l_max=2, parity=True, num_features=32,
    num_bessels=8, bessel_trainable=True, polynomial_cutoff_p=6,
    radial_mlp_depth=2, radial_mlp_width=64,
    readout_mlp_hidden_layers_depth=1, readout_mlp_hidden_layers_width=16,
    avg_num_neighbors=40.0, per_type_energy_scales=1.0, per_type_energy_shifts=0.0,
)

# What nequip's LAMMPS integrations support, as read in their sources (LAMMPS was not built here).
LAMMPS_PAIR_STYLE = {
    "pair_nequip": {
        "mpi_ranks": "1 only (the constructor stops with 'pair_nequip only works with a single MPI rank' "
                     "when comm->nprocs > 1); newton pair must be off",
        "per_atom_energy": True,
        "global_virial": True,
        "per_atom_virial": False,
        "kokkos": False,
        "openmp": True,
        "model_files": ".nequip.pth (TorchScript) or .nequip.pt2 (AOTInductor, LAMMPS built with NEQUIP_AOT_COMPILE)",
    },
    "pair_allegro": {
        "mpi_ranks": "any (strictly local Allegro models; newton pair on)",
        "per_atom_energy": True,
        "per_atom_virial": False,
        "kokkos": True,
    },
    "mliap_unified (nequip.integrations.lammps_mliap, in the nequip 0.19.1 wheel)": {
        "mpi_ranks": "several: node features of ghost atoms are exchanged through LAMMPS forward/reverse "
                     "communication (LAMMPSMLIAPGhostExchangeModule)",
        "per_atom_energy": True,
        "forces": "per-pair forces handed to LAMMPS (lmp_data.update_pair_forces_gpu); the virial is LAMMPS ML-IAP's "
                  "tally of those pair forces (not checked here)",
        "needs": "LAMMPS built with ML-IAP + Python (lammps.mliap), torch >= 2.6",
    },
    "sources": [
        "github.com/mir-group/pair_nequip_allegro @ 05b03865 README.md: 'pair_nequip is for the NequIP message-passing "
        "GNN model, which is limited to one MPI rank; pair_allegro is for the strictly local Allegro model, which "
        "supports parallel execution and MPI'; Kokkos only for pair_style allegro; OpenMP for both; LAMMPS >= 10 Sep 2025",
        "github.com/mir-group/pair_nequip_allegro @ 05b03865 pair_nequip_allegro.cpp: error 'pair_nequip only works with "
        "a single MPI rank'; 'if (eflag_atom ...) eatom[i] = atomic_energies[i][0]'; global virial from the model's "
        "'virial' output; 'Pair styles nequip and allegro do not support per-atom virial' (error when vflag_atom)",
        "nequip 0.19.1 wheel: METADATA (README: LAMMPS through pair_nequip_allegro and the ML-IAP integration), "
        "nequip/integrations/lammps_mliap/lmp_mliap_wrapper.py, nequip/nn/_ghost_exchange_lmp_mliap.py",
    ],
}


# ----------------------------------------------------------------------------------------------
# timing (one protocol for any ASE calculator)

def time_calculator(calc, atoms, calls: int, warmup: int = 2, seed: int = 1) -> Dict[str, float]:
    """Median (and mean) wall time of `calls` force+stress calls after `warmup` untimed ones, each
    after a random displacement of every atom by ~1e-3 Å."""
    a = atoms.copy()
    a.calc = calc
    rng = np.random.default_rng(seed)

    def one() -> float:
        a.positions = a.positions + rng.normal(scale=1e-3, size=a.positions.shape)
        t0 = time.perf_counter()
        a.get_forces()
        a.get_stress()
        return time.perf_counter() - t0

    first = one()
    for _ in range(max(0, warmup - 1)):
        one()
    c0 = time.process_time()
    ts = [one() for _ in range(calls)]
    cpu = (time.process_time() - c0) / calls
    n = len(a)
    med, mean = statistics.median(ts), statistics.fmean(ts)
    return {"atoms": n, "calls": calls, "warmup": warmup, "ms_per_call": med * 1e3, "us_per_atom": med / n * 1e6,
            "us_per_atom_mean": mean / n * 1e6, "us_per_atom_min": min(ts) / n * 1e6,
            "cpu_us_per_atom": cpu / n * 1e6, "first_call_s": first}


def calls_for(n_atoms: int, calls: Optional[int], atom_calls: float) -> int:
    """Timed calls per case: `calls` if given, else atom_calls / atoms clamped to 5..20."""
    return calls if calls else int(min(20, max(5, atom_calls / n_atoms)))


def _line(code: str, dtype: str, r: Dict, note: str = "") -> None:
    print(f"{code:>7} {dtype:>7} {r['atoms']:6d} {r['calls']:5d} {r['ms_per_call']:10.2f} {r['us_per_atom']:9.1f} "
          f"{r['cpu_us_per_atom']:9.1f}  {note}", flush=True)


# ----------------------------------------------------------------------------------------------
# NequIP (runs in the nequip venv)

def build_nequip(dtype: str):
    """NequIPGNNModel with NEQUIP_KW, random weights from SEED, in eval mode."""
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    set_global_state()  # required before any model is built (nequip.utils.global_state)
    model = NequIPGNNModel(seed=SEED, model_dtype=dtype, type_names=list(ELEMENTS), **NEQUIP_KW)
    return model.eval()


def _compiled_path(dtype: str) -> Path:
    import e3nn
    import nequip
    import torch

    key = json.dumps({"kw": NEQUIP_KW, "seed": SEED, "types": ELEMENTS, "dtype": dtype, "nequip": nequip.__version__,
                      "torch": torch.__version__, "e3nn": e3nn.__version__}, sort_keys=True)
    h = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(sys.prefix) / "mlip-compiled" / f"nequip_cu_{dtype}_{h}.nequip.pt2"


def aoti_compile(model, dtype: str, out: Path) -> None:
    """What `nequip-compile <ckpt> <out>.nequip.pt2 --mode aotinductor --device cpu --target ase` does after
    loading the model (nequip/scripts/compile.py), applied to `model`; the example data for tracing is a
    32-atom fcc Cu cell with nequip's own neighbour list."""
    import torch
    from nequip.data import from_ase
    from nequip.integrations.utils import basic_transforms
    from nequip.scripts._compile_utils import AOTI_ASE_TARGET, COMPILE_TARGET_DICT
    from nequip.scripts._workflow_utils import set_workflow_state
    from nequip.utils.aot import aot_export_model
    from nequip.utils.aoti_metadata import NEQUIP_AOTI_INPUTS_KEY, NEQUIP_AOTI_OUTPUTS_KEY, serialize_aoti_keys
    from nequip.utils.global_state import get_latest_global_state

    set_workflow_state("compile")
    try:
        data = from_ase(fcc_cu(32))
        for t in basic_transforms(model.metadata, NEQUIP_KW["r_max"], list(ELEMENTS), {e: e for e in ELEMENTS}):
            data = t(data)
        target = COMPILE_TARGET_DICT[AOTI_ASE_TARGET]
        # the CLI's defaults: --num-frames/--num-nodes/--num-edges 2,inf; target "ase" makes frames static
        batch_map = {"graph": torch.export.Dim("num_frames", min=2, max=torch.inf),
                     "node": torch.export.Dim("num_nodes", min=2, max=torch.inf),
                     "edge": torch.export.Dim("num_edges", min=2, max=torch.inf)}
        batch_map = target["batch_map_settings"](batch_map)
        data = target["data_settings"](data)
        metadata = dict(model.metadata)
        metadata.update(get_latest_global_state(only_metadata_related=True))
        metadata = {k: str(int(v)) if isinstance(v, bool) else v for k, v in metadata.items()}
        metadata[NEQUIP_AOTI_INPUTS_KEY] = serialize_aoti_keys(target["input"])
        metadata[NEQUIP_AOTI_OUTPUTS_KEY] = serialize_aoti_keys(target["output"])
        metadata = {k: str(v) for k, v in metadata.items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name.replace(".nequip.pt2", f".tmp{os.getpid()}.nequip.pt2"))
        aot_export_model(model=model, device=torch.device("cpu"), input_fields=target["input"],
                         output_fields=target["output"], data=data, batch_map=batch_map, output_path=str(tmp),
                         inductor_configs={"aot_inductor.metadata": metadata}, constant_fold=False, seed=1)
        tmp.replace(out)
    finally:
        set_workflow_state(None)


def nequip_calculator(dtype: str, compile_mode: str):
    """(calculator, info): nequip's ASE calculator on the AOTInductor-compiled model, or on the eager
    model when compile_mode is "none" or compiling fails."""
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms

    model = build_nequip(dtype)
    info = {"n_parameters": int(sum(p.numel() for p in model.parameters())), "compiled": False,
            "compile_mode": "none"}
    if compile_mode == "aoti":
        path = _compiled_path(dtype)
        info.update(compile_mode="aotinductor", compile_target="ase", compiled_file=str(path))
        try:
            if path.exists():
                info.update(compile_cached=True, compile_s=None)
            else:
                t0 = time.time()
                aoti_compile(model, dtype, path)
                info.update(compile_cached=False, compile_s=round(time.time() - t0, 1))
            calc = NequIPCalculator.from_compiled_model(str(path), device="cpu", chemical_species_to_atom_type_map=True)
            info["compiled"] = True
            return calc, info
        except Exception as e:  # noqa: BLE001 - fall back to the eager model, and say so
            msg = (str(e).strip().splitlines() or [repr(e)])[-1][:300]
            print(f"NequIP {dtype}: AOTInductor compile failed ({type(e).__name__}: {msg}); timing the eager model",
                  flush=True)
            info.update(compiled=False, compile_error=f"{type(e).__name__}: {msg}")
    tr = basic_transforms(model.metadata, NEQUIP_KW["r_max"], list(ELEMENTS), {e: e for e in ELEMENTS})
    return NequIPCalculator(model, device="cpu", transforms=tr), info


def run_nequip(sizes: Sequence[int], dtypes: Sequence[str], threads: int, calls: Optional[int], atom_calls: float,
               warmup: int, compile_mode: str) -> Dict:
    import warnings

    import e3nn
    import nequip
    import torch

    warnings.filterwarnings("ignore")  # per_type_energy_* and deprecation warnings at every build
    torch.set_num_threads(threads)
    rows, compile_info = [], {}
    for dtype in dtypes:
        calc, info = nequip_calculator(dtype, compile_mode)
        compile_info[dtype] = {k: v for k, v in info.items() if k != "n_parameters"}
        for n in sizes:
            atoms = fcc_cu(n)
            r = time_calculator(calc, atoms, calls_for(len(atoms), calls, atom_calls), warmup)
            rows.append({"code": "NequIP", "system": "fcc Cu", "dtype": dtype, "threads": threads,
                         "n_parameters": info["n_parameters"], "compiled": info["compiled"],
                         "compile_mode": info["compile_mode"], **r})
            _line("NequIP", dtype, r, "AOTI-compiled" if info["compiled"] else "eager (not compiled)")
        del calc
    return {"rows": rows, "compile": compile_info,
            "versions": {"nequip": nequip.__version__, "e3nn": e3nn.__version__, "torch": torch.__version__}}


# ----------------------------------------------------------------------------------------------
# ours (runs in the project venv)

def run_ours(sizes: Sequence[int], dtypes: Sequence[str], threads: int, calls: Optional[int], atom_calls: float,
             warmup: int, tmp: str) -> List[Dict]:
    import torch

    from bench_lammps import NEQUIP_PRESET, make_nequip_model
    from mlip import MLIPCalculator
    from mlip.models.nequip import NequIP

    torch.set_num_threads(threads)
    n_par = int(sum(p.numel() for p in NequIP(list(ELEMENTS), **NEQUIP_PRESET).parameters()))
    rows = []
    for dtype in dtypes:
        path = make_nequip_model(os.path.join(tmp, f"mlip_nequip_{dtype}.pt"), ELEMENTS, dtype)
        calc = MLIPCalculator(path, num_threads=threads)
        for n in sizes:
            atoms = fcc_cu(n)
            r = time_calculator(calc, atoms, calls_for(len(atoms), calls, atom_calls), warmup)
            rows.append({"code": "mlip", "label": "NequIP-style (NEQUIP_PRESET)", "system": "fcc Cu", "dtype": dtype,
                         "export_dtype": _export_dtype(path), "threads": threads, "n_parameters": n_par, **r})
            _line("mlip", dtype, r)
    return rows


def compare(rows: List[Dict]) -> List[Dict]:
    """One row per (dtype, atoms) with both codes: ours/theirs µs per atom (median) and their ratio."""
    theirs = {(r["dtype"], r["atoms"]): r for r in rows if r.get("code") == "NequIP"}
    ours = {(r["dtype"], r["atoms"]): r for r in rows if r.get("code") == "mlip"}
    out = []
    for key in sorted(set(theirs) & set(ours), key=lambda k: (k[0], k[1])):
        o, t = ours[key], theirs[key]
        out.append({"dtype": key[0], "atoms": key[1], "ours_us_per_atom": o["us_per_atom"],
                    "theirs_us_per_atom": t["us_per_atom"], "ratio_ours_over_theirs": o["us_per_atom"] / t["us_per_atom"],
                    "theirs_compiled": t.get("compiled")})
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", help="target atom counts (default 100 1000; --quick: 32)")
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                    help="default float32 float64 (--quick: float32)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, help="timed calls per case (default atom-calls / atoms, 5..20; --quick: 2)")
    ap.add_argument("--atom-calls", type=float, default=5e3)
    ap.add_argument("--warmup", type=int, help="untimed calls first (default 2; --quick: 1)")
    ap.add_argument("--compile", choices=["aoti", "none"], help="NequIP: AOTInductor compile (default) or eager "
                    "(--quick default: none)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 32 atoms, float32, 2 calls, eager NequIP; "
                    "writes quick_ase_nequip.json")
    ap.add_argument("--no-ours", action="store_true", help="time the NequIP package only")
    ap.add_argument("--save-name", help="result file stem (default ase_nequip; --quick: quick_ase_nequip)")
    ap.add_argument("--child-json", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    q = a.quick
    sizes = a.sizes or ([32] if q else [100, 1000])
    dtypes = a.dtypes or (["float32"] if q else ["float32", "float64"])
    calls = a.calls or (2 if q else None)
    warmup = a.warmup if a.warmup is not None else (1 if q else 2)
    compile_mode = a.compile or ("none" if q else "aoti")
    save_name = a.save_name or ("quick_ase_nequip" if q else "ase_nequip")

    if a.child_json:  # the NequIP part, inside the nequip venv
        res = run_nequip(sizes, dtypes, a.threads, calls, a.atom_calls, warmup, compile_mode)
        Path(a.child_json).write_text(json.dumps(res))
        return 0

    t0 = time.time()
    print(f"{'code':>7} {'dtype':>7} {'atoms':>6} {'calls':>5} {'ms/call':>10} {'us/atom':>9} {'cpu us/at':>9}", flush=True)
    rows: List[Dict] = []
    peer: Dict = {}
    skipped = None
    reason = peers.unavailable_reason("nequip")
    if reason:
        skipped = reason
        print(f"SKIP: NequIP: {reason}")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "nequip.json")
            args = list(argv if argv is not None else sys.argv[1:])
            env = peers.lammps_env(peers.venv_dir("nequip"), threads=a.threads)
            p = subprocess.run([str(peers.venv_python(peers.venv_dir("nequip"))), os.path.abspath(__file__), *args,
                                "--child-json", out], env=env)
            if p.returncode != 0 or not os.path.exists(out):
                skipped = f"NequIP run failed (exit {p.returncode})"
                print(f"ERROR: {skipped}")
            else:
                peer = json.loads(Path(out).read_text())
                rows += peer["rows"]
    if rows and not a.no_ours:  # ours only next to a measured peer (the comparison is the point)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                rows += run_ours(sizes, dtypes, a.threads, calls, a.atom_calls, warmup, tmp)
        except ImportError as e:
            print(f"SKIP: our calculator not importable here ({e}); run with the project venv")
    cmp_rows = compare(rows)
    if cmp_rows:
        print(f"\n{'dtype':>7} {'atoms':>6} {'ours us/at':>10} {'NequIP us/at':>12} {'ours/theirs':>11}  NequIP")
        for c in cmp_rows:
            print(f"{c['dtype']:>7} {c['atoms']:6d} {c['ours_us_per_atom']:10.1f} {c['theirs_us_per_atom']:12.1f} "
                  f"{c['ratio_ours_over_theirs']:11.3f}  {'AOTI-compiled' if c['theirs_compiled'] else 'eager'}")
    n_par = {"ours": next((r["n_parameters"] for r in rows if r["code"] == "mlip"), None),
             "theirs": next((r["n_parameters"] for r in rows if r["code"] == "NequIP"), None)}
    res = {"system": "fcc Cu", "threads": a.threads, "quick": q, "protocol": "median of `calls` get_forces()+get_stress() "
           "calls after `warmup`, each after a ~1e-3 Å random displacement",
           "model": {"ours": _preset(), "theirs": {**NEQUIP_KW, "type_names": ELEMENTS, "seed": SEED}},
           "n_parameters": n_par, "nequip_version": peer.get("versions", {}).get("nequip"),
           "versions": peer.get("versions", {}), "compile": peer.get("compile", {}),
           "compiled": {dt: c.get("compiled") for dt, c in peer.get("compile", {}).items()},
           "comparison": cmp_rows, "goal": "ours/theirs <= 0.5", "rows": rows, "skipped": skipped,
           "lammps_pair_style": LAMMPS_PAIR_STYLE, "wall_s": round(time.time() - t0, 1)}
    if rows:
        peers.RESULTS.mkdir(parents=True, exist_ok=True)
        path = peers.RESULTS / f"{save_name}.json"
        path.write_text(json.dumps(res, indent=1, default=str))
        print("written", path)
    return 0


def _preset() -> Optional[Dict]:
    try:
        from bench_lammps import NEQUIP_PRESET

        return dict(NEQUIP_PRESET)
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
