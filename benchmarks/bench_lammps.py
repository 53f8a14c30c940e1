"""pair_style mlip speed: microseconds per atom-step in LAMMPS and with the ASE calculator.

    python benchmarks/bench_lammps.py                      # small DP model, float64
    python benchmarks/bench_lammps.py --dp default --sizes 1000 10000   # DeePMD-kit-size DP
    python benchmarks/bench_lammps.py --model my.pt --elements Cu
    python benchmarks/bench_lammps.py --sizes 1000 --ranks 1 --quick
    python benchmarks/bench_lammps.py --family nequip --sizes 1000 10000 --ase-sizes 1000 10000

Reports, for an exported Deep Potential model (random weights unless --model is given; speed does
not depend on the weights; see DP_PRESETS for the sizes) or, with --family nequip, a NequIP-style
model of the size of training/nequip_mo.yaml (NEQUIP_PRESET; message passing: ghost shell of
num_layers x cutoff):
  1. LAMMPS (`lmp`, fix nve, fcc Cu) at ~1k, ~10k, ~50k atoms on 1 and 2 MPI ranks (1 libtorch
     thread per rank): loop time per atom-step, the Pair time per step, and the peak resident memory
     of MPI rank 0 (LAMMPS `info memory`); memory per atom = the slope of the peak between the
     smallest and the largest size on one rank;
  2. the ASE calculator (`mlip.MLIPCalculator`, neighbour list + engine) at --ase-sizes (default:
     the size closest to 1k), 1 and 2 threads;
  3. the BLAS-clash check: the engine's time per call inside `lmp` (Pair time) against the same
     engine on the same graph in Python (on one rank the pair style folds ghost images onto their
     atoms for local models, so that graph is the periodic graph). Inside lmp
     libtorch would bind its float64 BLAS calls to liblammps' reference BLAS unless the plugin
     dlopens the engine with RTLD_DEEPBIND; the run with MLIP_ENGINE_DEEPBIND=0 shows that cost.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from mlip import lammps_support as ls

A0_CU = 3.615


def fcc_reps(n_target: int):
    """Replications (nx, ny, nz) of the 4-atom fcc cell with about n_target atoms."""
    best = None
    for nx in range(1, 60):
        for ny in (nx, nx + 1):
            for nz in (nx, nx + 1):
                n = 4 * nx * ny * nz
                if best is None or abs(n - n_target) < abs(best[0] - n_target):
                    best = (n, (nx, ny, nz))
    return best[1]


def fcc_atoms(n_target: int, element: str, seed: int = 0):
    from ase.build import bulk

    atoms = bulk(element, "fcc", a=A0_CU, cubic=True).repeat(fcc_reps(n_target))
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    atoms.wrap()
    return atoms


def write_data(atoms, path: str, elements: Sequence[str]) -> None:
    c = atoms.cell[:].tolist()
    lines = ["bench", "", f"{len(atoms)} atoms", f"{len(elements)} atom types", "",
             f"0 {c[0][0]!r} xlo xhi", f"0 {c[1][1]!r} ylo yhi", f"0 {c[2][2]!r} zlo zhi", "",
             "Masses", ""] + [f"{k + 1} 63.546" for k in range(len(elements))] + ["", "Atoms # atomic", ""]
    types = [elements.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lines += [f"{k + 1} {t} {p[0]!r} {p[1]!r} {p[2]!r}" for k, (t, p) in enumerate(zip(types, atoms.positions.tolist()))]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


# DeepPotSeA hyper-parameters. "default": DeePMD-kit's se_e2_a defaults (rcut 6 A; in float64
# about 0.6 MB of memory per atom in LAMMPS, so ~50k atoms do not fit in 24 GB). "small": the size
# of examples/lammps/make_model.py (rcut 5 A), which runs the whole size table on this machine.
DP_PRESETS = {
    "default": dict(rcut=6.0, rcut_smth=0.5, neuron=(25, 50, 100), axis_neuron=16, fitting_neuron=(240, 240, 240)),
    "small": dict(rcut=5.0, rcut_smth=0.5, neuron=(8, 16, 32), axis_neuron=8, fitting_neuron=(32, 32)),
}


# the NequIP-style model of training/nequip_mo.yaml (l_max 2, 32 features, 3 layers, cutoff 5 Å)
NEQUIP_PRESET = dict(cutoff=5.0, l_max=2, num_features=32, num_layers=3, num_basis=8, envelope_p=6,
                     radial_hidden=64, radial_layers=2, head_hidden=16, avg_num_neighbors=40.0)


def make_nequip_model(path: str, elements: Sequence[str], dtype: str) -> str:
    import torch

    from mlip.export import export_model
    from mlip.models.nequip import NequIP

    torch.manual_seed(0)
    export_model(NequIP(list(elements), **NEQUIP_PRESET), path, dtype)
    return path


def make_dp_model(path: str, elements: Sequence[str], dtype: str, preset: str = "small") -> str:
    from mlip.export import export_model
    from mlip.models.deepmd import DeepPotSeA

    export_model(DeepPotSeA(list(elements), seed=0, **DP_PRESETS[preset]), path, dtype)
    return path


def lammps_run(model: str, data: str, elements: Sequence[str], steps: int, ranks: int, workdir: str,
               env_extra: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    script = f"""
units metal
atom_style atomic
read_data {data}
pair_style mlip {model} threads 1
pair_coeff * * {' '.join(elements)}
velocity all create 300 4928459 loop geom
timestep 0.001
fix 1 all nve
thermo {max(steps, 1)}
run 1
run {steps}
info memory
"""
    out = ls.run_lmp(script, workdir, nprocs=ranks, env=ls.lammps_env(env_extra), timeout=3600).stdout
    rss = re.findall(r"Maximum resident set size:\s*([0-9.eE+-]+)\s*Mbyte", out)
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", out)
    pairs = re.findall(r"^Pair\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)", out, re.M)
    loop_time, _, nsteps, natoms = loops[-1]
    loop_time, nsteps, natoms = float(loop_time), int(nsteps), int(natoms)
    pair_avg = float(pairs[-1][1]) if pairs else float("nan")
    return {
        "atoms": natoms,
        "ranks": ranks,
        "steps": nsteps,
        "us_per_atom_step": loop_time / (nsteps * natoms) * 1e6,
        "pair_ms_per_step": pair_avg / nsteps * 1e3,
        "loop_s": loop_time,
        "peak_rss_mb_rank0": float(rss[-1]) if rss else float("nan"),
    }


def ase_run(model: str, atoms, steps: int, threads: int) -> Dict[str, float]:
    from mlip import MLIPCalculator

    a = atoms.copy()
    a.calc = MLIPCalculator(model, num_threads=threads)
    a.get_forces()  # warm-up (TorchScript optimisation, allocations)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for _ in range(steps):
        a.positions = a.positions + rng.normal(scale=1e-3, size=a.positions.shape)
        a.get_forces()
    dt = time.perf_counter() - t0
    return {"atoms": len(a), "threads": threads, "steps": steps, "us_per_atom_step": dt / (steps * len(a)) * 1e6}


def _ase_child(model: str, atoms, steps: int, threads: int, queue) -> None:
    import resource

    r = ase_run(model, atoms, steps, threads)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    queue.put(r)


def ase_run_isolated(model: str, atoms, steps: int, threads: int) -> Dict[str, float]:
    """ase_run in a fresh process, so that its peak RSS (`peak_rss_mb`) is the calculator's alone."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_ase_child, args=(model, atoms, steps, threads, q))
    p.start()
    r = q.get()
    p.join()
    return r


def engine_same_graph_ms(model: str, atoms, calls: int) -> Dict[str, float]:
    from mlip._core import Engine

    from mlip.neighbors import neighbor_list

    eng = Engine(model, 1)
    sp = np.array([list(eng.species).index(s) for s in atoms.get_chemical_symbols()], dtype=np.int64)
    # On one rank pair_style mlip folds every ghost image of a local model onto its owned atom, so
    # its graph is the periodic graph of the ASE calculator (nodes = atoms, image-shifted edges).
    ei, _, ev = neighbor_list(atoms.get_positions(), atoms.cell[:], atoms.pbc, float(eng.cutoff))
    n_local = len(atoms)
    eng.compute(sp, ei, ev, n_local, False)
    t0 = time.perf_counter()
    for _ in range(calls):
        eng.compute(sp, ei, ev, n_local, False)
    return {"nodes": len(sp), "edges": int(ei.shape[1]),
            "ms_per_call": (time.perf_counter() - t0) / calls * 1e3}


def summarize(results: Dict[str, object]) -> Dict[str, object]:
    """Per size: LAMMPS 1 rank ÷ ASE (1 thread) time per atom, 2-rank speed-up, peak RSS per atom in
    LAMMPS (rank 0) and ASE; and the flatness of the 1-rank cost over the sizes."""
    lmp = {(r["atoms"], r["ranks"]): r for r in results["lammps"]}
    ase = {r["atoms"]: r for r in results["ase"] if r["threads"] == 1}
    rows = []
    for (n, ranks), r in sorted(lmp.items()):
        if ranks != 1:
            continue
        row = {"atoms": n, "us_per_atom_step": r["us_per_atom_step"],
               "lammps_kb_per_atom": r["peak_rss_mb_rank0"] * 1024 / n}
        if (n, 2) in lmp:
            row["speedup_2_ranks"] = r["us_per_atom_step"] / lmp[(n, 2)]["us_per_atom_step"]
            row["lammps_2_ranks_kb_per_atom"] = lmp[(n, 2)]["peak_rss_mb_rank0"] * 1024 / (n / 2)
        if n in ase:
            row["lammps_over_ase"] = r["us_per_atom_step"] / ase[n]["us_per_atom_step"]
            if "peak_rss_mb" in ase[n]:
                row["ase_kb_per_atom"] = ase[n]["peak_rss_mb"] * 1024 / n
        rows.append(row)
    costs = [row["us_per_atom_step"] for row in rows]
    out: Dict[str, object] = {"rows": rows}
    if costs:
        mid = 0.5 * (max(costs) + min(costs))
        out["flat_band_percent"] = 100.0 * (max(costs) - min(costs)) / (2 * mid)
        out["max_over_min"] = max(costs) / min(costs)
    return out


def print_summary(summary: Dict[str, object]) -> None:
    print("\nSummary (1 rank unless stated; kB/atom = peak RSS / atoms, whole process)")
    print(f"{'atoms':>8} {'us/atom-step':>13} {'lmp/ASE':>8} {'2-rank x':>8} {'lmp kB/at':>10} {'2r kB/at':>9} {'ASE kB/at':>10}")
    nan = float("nan")
    for r in summary["rows"]:
        print(f"{r['atoms']:8d} {r['us_per_atom_step']:13.1f} {r.get('lammps_over_ase', nan):8.2f} "
              f"{r.get('speedup_2_ranks', nan):8.2f} {r['lammps_kb_per_atom']:10.1f} "
              f"{r.get('lammps_2_ranks_kb_per_atom', nan):9.1f} {r.get('ase_kb_per_atom', nan):10.1f}")
    if "max_over_min" in summary:
        print(f"1-rank cost over the sizes: all within ±{summary['flat_band_percent']:.0f}% of the band centre "
              f"(max/min {summary['max_over_min']:.2f})")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="exported model (default: a DeepPotSeA of size --dp, random weights)")
    ap.add_argument("--family", default="dp", choices=["dp", "nequip"],
                    help="model built when --model is not given (nequip: NEQUIP_PRESET)")
    ap.add_argument("--ase-sizes", type=int, nargs="+", default=None,
                    help="ASE calculator sizes (default: the --sizes entry closest to 1000)")
    ap.add_argument("--dp", default="small", choices=sorted(DP_PRESETS),
                    help="DeepPotSeA size when no --model is given (default: small; 'default' = DeePMD-kit "
                         "defaults, too big for ~50k atoms in 24 GB)")
    ap.add_argument("--elements", nargs="+", default=["Cu"], help="pair_coeff elements (default Cu)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--atom-steps", type=float, default=2e5,
                    help="atom-steps per LAMMPS measurement (steps = this / atoms, at least 2)")
    ap.add_argument("--ase-threads", type=int, nargs="+", default=[1, 2], help="ASE calculator threads")
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke test)")
    ap.add_argument("--no-deepbind-check", action="store_true", help="skip the MLIP_ENGINE_DEEPBIND=0 run")
    ap.add_argument("--json", help="also write the results to this JSON file")
    a = ap.parse_args(argv)

    reason = ls.unavailable_reason()
    if reason:
        print(f"cannot benchmark LAMMPS: {reason}", file=sys.stderr)
        return 1
    if a.quick:
        a.atom_steps = 2e4
    results: Dict[str, object] = {"lammps": [], "ase": [], "blas_check": []}
    with tempfile.TemporaryDirectory() as tmp:
        if a.model:
            model, desc = a.model, a.model
        elif a.family == "nequip":
            model = make_nequip_model(os.path.join(tmp, "nequip.pt"), a.elements, a.dtype)
            desc = f"NequIP {NEQUIP_PRESET} (random weights), {a.dtype}"
        else:
            model = make_dp_model(os.path.join(tmp, "dp.pt"), a.elements, a.dtype, a.dp)
            desc = f"DeepPotSeA '{a.dp}' {DP_PRESETS[a.dp]} (random weights), {a.dtype}"
        print(f"model: {desc}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        results["model"] = desc
        from mlip._core import Engine as _Engine

        results["family"] = {"deepmd": "DP", "nequip": "NequIP", "mtp": "MTP"}.get(_Engine(model, 1).family, "?")
        print("\nLAMMPS (lmp, fix nve, 1 libtorch thread per rank)")
        print(f"{'atoms':>8} {'ranks':>5} {'steps':>5} {'us/atom-step':>13} {'Pair ms/step':>13} {'peak MB/rank':>13}")
        structures = {}
        for size in a.sizes:
            atoms = fcc_atoms(size, a.elements[0])
            structures[size] = atoms
            data = os.path.join(tmp, f"data_{size}.lmp")
            write_data(atoms, data, a.elements)
            steps = max(2, int(a.atom_steps / len(atoms)))
            for ranks in a.ranks:
                r = lammps_run(model, data, a.elements, steps, ranks, tmp)
                results["lammps"].append(r)
                print(f"{r['atoms']:8d} {ranks:5d} {r['steps']:5d} {r['us_per_atom_step']:13.2f} "
                      f"{r['pair_ms_per_step']:13.2f} {r['peak_rss_mb_rank0']:13.1f}", flush=True)
        one = sorted((r for r in results["lammps"] if r["ranks"] == 1), key=lambda r: r["atoms"])
        if len(one) >= 2 and one[-1]["atoms"] > one[0]["atoms"]:
            kb = (one[-1]["peak_rss_mb_rank0"] - one[0]["peak_rss_mb_rank0"]) * 1024 / (one[-1]["atoms"] - one[0]["atoms"])
            results["memory_kb_per_atom"] = kb
            print(f"memory per atom (1 rank, peak RSS slope {one[0]['atoms']} -> {one[-1]['atoms']} atoms): {kb:.1f} kB")

        small = min(a.sizes, key=lambda s: abs(s - 1000))
        print("\nASE calculator (neighbour list + engine per call)")
        print(f"{'atoms':>8} {'threads':>7} {'steps':>5} {'us/atom-step':>13} {'peak MB':>9}")
        for size in a.ase_sizes or [small]:
            atoms_ase = structures.get(size) or fcc_atoms(size, a.elements[0])
            for threads in a.ase_threads:
                r = ase_run_isolated(model, atoms_ase, max(3, int(a.atom_steps / len(atoms_ase) / 2)), threads)
                results["ase"].append(r)
                print(f"{r['atoms']:8d} {threads:7d} {r['steps']:5d} {r['us_per_atom_step']:13.2f} "
                      f"{r['peak_rss_mb']:9.1f}", flush=True)
        summary = summarize(results)
        results["summary"] = summary
        print_summary(summary)
        atoms = structures[small]

        print("\nBLAS-clash check: engine time per call on the LAMMPS graph (1 rank, 1 thread)")
        data = os.path.join(tmp, f"data_{small}.lmp")
        steps = max(5, int(a.atom_steps / len(atoms)))
        py = engine_same_graph_ms(model, atoms, max(3, steps // 2))
        in_lmp = lammps_run(model, data, a.elements, steps, 1, tmp)
        rows = [("python (mlip._core)", py["ms_per_call"]), ("lmp, RTLD_DEEPBIND", in_lmp["pair_ms_per_step"])]
        if not a.no_deepbind_check:
            nodeep = lammps_run(model, data, a.elements, steps, 1, tmp, {"MLIP_ENGINE_DEEPBIND": "0"})
            rows.append(("lmp, without DEEPBIND", nodeep["pair_ms_per_step"]))
        print(f"  graph: {py['nodes']} nodes ({len(atoms)} local), {py['edges']} edges")
        for name, ms in rows:
            print(f"  {name:24s} {ms:9.2f} ms/call")
            results["blas_check"].append({"where": name, "ms_per_call": ms, **py})
        ratio = in_lmp["pair_ms_per_step"] / py["ms_per_call"] if py["ms_per_call"] == py["ms_per_call"] else float("nan")
        if results.get("family") == "NequIP":
            print(f"  lmp/python = {ratio:.2f} (about 1 expected on one rank: the images fold onto their atoms, "
                  f"no ghost shell is evaluated; the Pair time also includes building the graph)")
        else:
            print(f"  lmp/python = {ratio:.2f} (about 1 expected; the Pair time also includes building the graph)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
