"""MTP (pair_style mlip) against the published SNAP Mo model (pair_style snap) in LAMMPS.

    python benchmarks/bench_mtp_snap.py --mtp runs/mtp_mo/model.pt          # a trained Mo MTP export
    python benchmarks/bench_mtp_snap.py                                      # untrained level-16 MTP: speed only
    python benchmarks/bench_mtp_snap.py --sizes 2000 --atom-steps 2e4 --repeats 1   # quick

1. Speed: bcc Mo (a = 3.16 Å) at ~2k and ~16k atoms, 1 MPI rank (1 libtorch thread), `fix nve` at
   300 K from the lattice with dt = 0.5 fs, the same protocol for both styles in the same invocation;
   runs alternate SNAP / MTP and the best of --repeats is kept (the machine may be shared). Reported:
   LAMMPS loop time in µs per atom-step, the Pair time, and the ratio MTP / SNAP.
2. Accuracy of SNAP on the mlearn Mo test set (Zuo et al. 2020), evaluated in LAMMPS (`run 0` per
   structure, cells brought to LAMMPS' lower-triangular form by a rotation, forces rotated back):
   energy MAE per atom, force MAE / RMSE over components. With --mtp the MTP is evaluated the same way,
   side by side. An untrained MTP (no --mtp) is timed only: its accuracy means nothing.

SNAP files: /work/shared/data/peer_models/snap_Mo (`SNAPotential.snap{coeff,param}`); the obsolete
`diagonalstyle` line of the .snapparam is dropped in a temporary copy. Results go to
benchmarks/results/bench_mtp_snap.json (or --json).
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mlip import lammps_support as ls  # noqa: E402

A0_MO = 3.16
MASS_MO = 95.95


def shared_dir() -> str:
    return os.environ.get("MLIP_SHARED_DATA",
                          os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))


def snap_files(tmp: str, kind: str = "snap") -> Dict[str, str]:
    """Temporary copies of the SNAP (kind "snap") or quadratic SNAP ("qsnap") Mo files without the
    obsolete `diagonalstyle` line."""
    src = os.path.join(shared_dir(), "peer_models", f"{kind}_Mo")
    coeff = os.path.join(src, "SNAPotential.snapcoeff")
    param = os.path.join(src, "SNAPotential.snapparam")
    if not (os.path.isfile(coeff) and os.path.isfile(param)):
        raise FileNotFoundError(f"{kind} Mo model not found in {src} (set MLIP_SHARED_DATA)")
    out = {"coeff": os.path.join(tmp, f"Mo_{kind}.snapcoeff"), "param": os.path.join(tmp, f"Mo_{kind}.snapparam")}
    with open(coeff) as fh, open(out["coeff"], "w") as oh:
        oh.write(fh.read())
    with open(param) as fh, open(out["param"], "w") as oh:
        for line in fh:
            if line.split() and line.split()[0] == "diagonalstyle":
                continue
            oh.write(line)
    with open(out["param"]) as fh:
        rcutfac = [float(l.split()[1]) for l in fh if l.split() and l.split()[0] == "rcutfac"]
    with open(out["coeff"]) as fh:
        lines = [l for l in fh if l.strip() and not l.startswith("#")]
    radius = float(lines[1].split()[1])
    out["cutoff"] = 2.0 * radius * rcutfac[0]  # cutoff of the Mo-Mo pair: (R_i + R_j) * rcutfac
    return out


def pair_lines(style: str, model: str, snap: Dict[str, Dict[str, str]]) -> str:
    """style "snap" | "qsnap" (both `pair_style snap`, files from `snap[style]`) | "mlip"."""
    if style in ("snap", "qsnap"):
        return f"pair_style snap\npair_coeff * * {snap[style]['coeff']} {snap[style]['param']} Mo\n"
    return f"pair_style mlip {model} threads 1\npair_coeff * * Mo\n"


def make_mtp(path: str, level: int = 16, cutoff: float = 5.0) -> str:
    """Untrained level-16 Mo MTP (random coefficients; radial scaling from a bcc Mo sample): timing only."""
    from ase.build import bulk

    from mlip.data import Frame
    from mlip.export import export_model
    from mlip.models.mtp import MTP

    m = MTP(["Mo"], level=level, cutoff=cutoff, seed=0)
    at = bulk("Mo", "bcc", a=A0_MO, cubic=True).repeat(3)
    at.rattle(0.05, seed=1)
    m.fit_statistics([Frame.from_atoms(at)])
    export_model(m.double(), path, "float64")
    return path


# ------------------------------------------------------------------------------------------------ speed


def bcc_data(n_target: int, path: str) -> int:
    """bcc Mo with about n_target atoms (2 n^3): LAMMPS data file; returns the number of atoms."""
    n = max(1, int(round((n_target / 2.0) ** (1.0 / 3.0))))
    L = n * A0_MO
    lines = ["bcc Mo", "", f"{2 * n ** 3} atoms", "1 atom types", "", f"0 {L!r} xlo xhi", f"0 {L!r} ylo yhi",
             f"0 {L!r} zlo zhi", "", "Masses", "", f"1 {MASS_MO}", "", "Atoms # atomic", ""]
    k = 0
    for i in range(n):
        for j in range(n):
            for l in range(n):
                for b in ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)):
                    k += 1
                    x, y, z = ((i + b[0]) * A0_MO, (j + b[1]) * A0_MO, (l + b[2]) * A0_MO)
                    lines.append(f"{k} 1 {x!r} {y!r} {z!r}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return k


def time_run(style: str, model: str, snap: Dict[str, str], data: str, steps: int, workdir: str) -> Dict[str, float]:
    script = f"""
units metal
atom_style atomic
read_data {data}
{pair_lines(style, model, snap)}
velocity all create 300 4928459 loop geom
timestep 0.0005
fix 1 all nve
thermo {max(steps, 1)}
run 1
run {steps}
"""
    env = ls.lammps_env({"OMP_NUM_THREADS": "1", "MLIP_NUM_THREADS": "1"})
    out = ls.run_lmp(script, workdir, nprocs=1, env=env, timeout=7200).stdout
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", out)
    pairs = re.findall(r"^Pair\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)", out, re.M)
    loop_time, _, nsteps, natoms = loops[-1]
    loop_time, nsteps, natoms = float(loop_time), int(nsteps), int(natoms)
    pair = float(pairs[-1][1]) if pairs else float("nan")
    return {"atoms": natoms, "steps": nsteps, "us_per_atom_step": loop_time / (nsteps * natoms) * 1e6,
            "pair_us_per_atom_step": pair / (nsteps * natoms) * 1e6, "loop_s": loop_time}


def speed(model: str, snap: Dict[str, str], sizes: Sequence[int], atom_steps: float, repeats: int,
          tmp: str) -> List[Dict[str, object]]:
    rows = []
    print(f"\nSpeed: LAMMPS loop time, 1 MPI rank, 1 thread, fix nve 300 K (best of {repeats})")
    q = "qsnap" in snap
    print(f"{'atoms':>7} {'steps':>6} {'SNAP us/at-step':>16} {'MTP us/at-step':>15} {'MTP/SNAP':>9} "
          f"{'(Pair only)':>11}" + (f" {'qSNAP us/at-step':>17}" if q else ""))
    for size in sizes:
        data = os.path.join(tmp, f"bcc_{size}.data")
        n = bcc_data(size, data)
        steps = max(2, int(atom_steps / n))
        best: Dict[str, Dict[str, float]] = {}
        for _ in range(repeats):
            for style in ("snap", "mlip") + (("qsnap",) if q else ()):  # alternate: same machine load
                r = time_run(style, model, snap, data, steps, tmp)
                if style not in best or r["us_per_atom_step"] < best[style]["us_per_atom_step"]:
                    best[style] = r
        s, m = best["snap"], best["mlip"]
        ratio = m["us_per_atom_step"] / s["us_per_atom_step"]
        pratio = m["pair_us_per_atom_step"] / s["pair_us_per_atom_step"]
        print(f"{n:7d} {steps:6d} {s['us_per_atom_step']:16.2f} {m['us_per_atom_step']:15.2f} {ratio:9.2f} "
              f"{pratio:11.2f}" + (f" {best['qsnap']['us_per_atom_step']:17.2f}" if q else ""), flush=True)
        rows.append({"atoms": n, "steps": steps, "snap": s, "mtp": m, "ratio_mtp_over_snap": ratio,
                     "pair_ratio_mtp_over_snap": pratio, **({"qsnap": best["qsnap"]} if q else {})})
    return rows


# --------------------------------------------------------------------------------------------- accuracy


def lammps_frame(cell: np.ndarray):
    """Rotation Q with cell @ Q lower triangular, positive diagonal (LAMMPS' restricted triclinic)."""
    q, r = np.linalg.qr(cell.T)
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    q = q * d
    lower = cell @ q
    if lower[2, 2] <= 0:
        raise ValueError("left-handed cell")
    lower[np.abs(lower) < 1e-12] = 0.0
    return q, lower


def write_frame_data(fr, path: str) -> np.ndarray:
    q, L = lammps_frame(np.asarray(fr.cell, dtype=float))
    pos = np.asarray(fr.positions, dtype=float) @ q
    f = "{:.17g}"
    lines = ["mlearn", "", f"{len(pos)} atoms", "1 atom types", "", f"0 {f.format(L[0, 0])} xlo xhi",
             f"0 {f.format(L[1, 1])} ylo yhi", f"0 {f.format(L[2, 2])} zlo zhi",
             f"{f.format(L[1, 0])} {f.format(L[2, 0])} {f.format(L[2, 1])} xy xz yz", "", "Masses", "",
             f"1 {MASS_MO}", "", "Atoms # atomic", ""]
    lines += [f"{k + 1} 1 {f.format(p[0])} {f.format(p[1])} {f.format(p[2])}" for k, p in enumerate(pos)]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return q


def read_forces(path: str) -> np.ndarray:
    with open(path) as fh:
        lines = fh.read().splitlines()
    k = max(i for i, l in enumerate(lines) if l.startswith("ITEM: TIMESTEP"))
    n = int(lines[k + 3])
    h = next(i for i in range(k, len(lines)) if lines[i].startswith("ITEM: ATOMS"))
    d = np.array([[float(v) for v in l.split()] for l in lines[h + 1:h + 1 + n]])
    d = d[np.argsort(d[:, 0])]
    return d[:, 1:4]


def accuracy(style: str, model: str, snap: Dict[str, str], frames, tmp: str) -> Dict[str, float]:
    blocks, rots = [], []
    for k, fr in enumerate(frames):
        rots.append(write_frame_data(fr, os.path.join(tmp, f"test_{k}.data")))
        blocks.append(f"""
clear
units metal
atom_style atomic
atom_modify map array
box tilt large
read_data test_{k}.data
{pair_lines(style, model, snap)}
thermo_style custom step pe
thermo_modify format float %.17g norm no
dump d all custom 1 f_{style}_{k}.txt id fx fy fz
dump_modify d format float %.17g sort id
run 0
""")
    env = ls.lammps_env({"OMP_NUM_THREADS": "1", "MLIP_NUM_THREADS": "1"})
    out = ls.run_lmp("".join(blocks), tmp, env=env, timeout=3600, args=["-screen", "none"]).stdout
    with open(os.path.join(tmp, "log.lammps")) as fh:
        out = fh.read()
    rows = ls.parse_thermo(out)
    if len(rows) != len(frames):
        raise RuntimeError(f"{style}: {len(rows)} thermo rows for {len(frames)} structures")
    de, df = [], []
    for k, (fr, row, q) in enumerate(zip(frames, rows, rots)):
        n = len(fr.positions)
        de.append((row["PotEng"] - fr.energy) / n)
        f = read_forces(os.path.join(tmp, f"f_{style}_{k}.txt")) @ q.T  # back to the data's frame
        df.append((f - np.asarray(fr.forces)).ravel())
    de, df = np.array(de), np.concatenate(df)
    return {"structures": len(frames), "atoms": int(sum(len(fr.positions) for fr in frames)),
            "energy_mae_meV_per_atom": float(np.mean(np.abs(de))) * 1e3,
            "energy_rmse_meV_per_atom": float(np.sqrt(np.mean(de ** 2))) * 1e3,
            "force_mae": float(np.mean(np.abs(df))), "force_rmse": float(np.sqrt(np.mean(df ** 2)))}


# ------------------------------------------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mtp", help="exported Mo MTP (.pt); default: an untrained level-16 MTP, timing only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 16000], help="bcc Mo sizes (atoms)")
    ap.add_argument("--atom-steps", type=float, default=1e5, help="atom-steps per timing run (steps >= 2)")
    ap.add_argument("--repeats", type=int, default=2, help="timing repeats per style (best kept)")
    ap.add_argument("--test", help="mlearn test set (default: <shared>/mlearn/Mo/test.json)")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--json", help="results file (default benchmarks/results/bench_mtp_snap.json)")
    a = ap.parse_args(argv)

    reason = ls.unavailable_reason()
    if reason:
        print(f"cannot run LAMMPS: {reason}", file=sys.stderr)
        return 1
    results: Dict[str, object] = {"load_average": os.getloadavg()[0], "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            snap = {"snap": snap_files(tmp, "snap")}
        except FileNotFoundError as exc:
            print(f"SKIP: {exc}")
            return 0
        try:
            snap["qsnap"] = snap_files(tmp, "qsnap")
        except FileNotFoundError as exc:
            print(f"(no qSNAP: {exc})")
        trained = a.mtp is not None
        if trained:
            model = os.path.abspath(a.mtp)
            desc = model
        else:
            t0 = time.time()
            model = make_mtp(os.path.join(tmp, "mtp_l16_untrained.pt"))
            desc = f"UNTRAINED level-16 MTP (random coefficients, cutoff 5.0 A; built in {time.time() - t0:.1f} s): timing only"
        from mlip._core import Engine

        eng = Engine(model, 1)
        if list(eng.species) != ["Mo"]:
            print(f"error: {model} has species {list(eng.species)}, expected ['Mo']", file=sys.stderr)
            return 1
        results.update(mtp=desc, mtp_trained=trained, mtp_cutoff=float(eng.cutoff), snap_cutoff=snap["snap"]["cutoff"])
        print(f"MTP:  {desc} (family {eng.family}, cutoff {float(eng.cutoff):.2f} A)")
        print(f"SNAP: {shared_dir()}/peer_models/snap_Mo (twojmax 6, cutoff {snap['snap']['cutoff']:.2f} A)"
              + (" and qsnap_Mo" if "qsnap" in snap else ""))
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        if not a.no_speed:
            results["speed"] = speed(model, snap, a.sizes, a.atom_steps, a.repeats, tmp)
        if not a.no_accuracy:
            from mlip.data import read_mlearn

            test = a.test or os.path.join(shared_dir(), "mlearn", "Mo", "test.json")
            if not os.path.isfile(test):
                print(f"SKIP accuracy: {test} not found")
            else:
                frames = read_mlearn(test)
                acc = {k: accuracy(k, model, snap, frames, tmp) for k in snap}
                if trained:
                    acc["mtp"] = accuracy("mlip", model, snap, frames, tmp)
                results["accuracy"] = acc
                n_at = acc["snap"]["atoms"]
                print(f"\nAccuracy on {test} ({len(frames)} structures, {n_at} atoms), evaluated in LAMMPS")
                print(f"{'model':>6} {'E MAE meV/atom':>15} {'E RMSE':>8} {'F MAE eV/A':>11} {'F RMSE':>8}")
                for name, r in acc.items():
                    print(f"{name.upper():>6} {r['energy_mae_meV_per_atom']:15.2f} {r['energy_rmse_meV_per_atom']:8.2f} "
                          f"{r['force_mae']:11.3f} {r['force_rmse']:8.3f}")
                if not trained:
                    print("   MTP  (untrained: no accuracy; pass --mtp PATH for a trained export)")
    out = a.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_mtp_snap.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
