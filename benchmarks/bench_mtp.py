"""MTP acceptance figures.

    python benchmarks/bench_mtp.py reference      # level16.mtp vs MLIP-2's own numbers (1001 cfgs)
    python benchmarks/bench_mtp.py mlearn RUN_DIR [--element Mo]   # test MAE/RMSE of a trained run
    python benchmarks/bench_mtp.py grade RUN_DIR --element Mo       # γ on train / strained / hot cfgs

`reference` evaluates through the Python model, the TorchScript export, the ASE calculator
`mlip.calculator.MLIPCalculator` (C++ engine, native MTP kernel) and, when LAMMPS is installed,
`pair_style mlip` (`run 0` on every --lammps-every-th configuration).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

SHARED = os.environ.get("MLIP_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def _efv_model(model, fr):
    from mlip.graph import frame_edges
    from mlip.models.base import forces_virials_from_edges

    sp, ei, vec = frame_edges(fr, model.species, model.cutoff)
    vec.requires_grad_(True)
    e = model(sp, ei, vec).sum()
    (g,) = torch.autograd.grad(e, vec)
    f, ev = forces_virials_from_edges(g, ei, vec.detach(), len(sp))
    return float(e.detach()), f.numpy(), ev.sum(0).numpy()


def reference(args) -> dict:
    from mlip.graph import frame_edges
    from mlip.data import read_cfg
    from mlip.export import export_model
    from mlip.models.mtp import MTP

    pot = os.path.join(SHARED, "mtp_reference", "level16.mtp")
    cfg = os.path.join(SHARED, "mtp_reference", "level16_mlip2_efs.cfg")
    if not os.path.exists(pot):
        print(f"skip: {pot} not present")
        return {}
    frames = read_cfg(cfg, type_map=["Cu"])
    model = MTP.from_mtp_file(pot, species=["Cu"])
    out = {"n_cfg": len(frames)}
    t = time.time()
    err = np.zeros(3)
    for fr in frames:
        e, f, w = _efv_model(model, fr)
        err = np.maximum(err, [abs(e - fr.energy), np.abs(f - fr.forces).max(), np.abs(w - fr.virial).max()])
    out["python"] = {"max_dE": err[0], "max_dF": err[1], "max_dW": err[2], "time_s": time.time() - t}
    path = "/tmp/bench_mtp_level16.pt"
    export_model(model, path, dtype="float64")
    ts = torch.jit.load(path)
    t = time.time()
    err = np.zeros(3)
    for fr in frames:
        sp, ei, vec = frame_edges(fr, ["Cu"], ts.cutoff)
        ae, f, w, _ = ts(sp, ei, vec, len(sp), False)
        err = np.maximum(err, [abs(float(ae.sum()) - fr.energy), np.abs(f.numpy() - fr.forces).max(),
                               np.abs(w.numpy() - fr.virial).max()])
    out["export"] = {"max_dE": err[0], "max_dF": err[1], "max_dW": err[2], "time_s": time.time() - t}
    try:
        from mlip.calculator import MLIPCalculator

        calc = MLIPCalculator(path)
    except Exception as exc:  # compiled extension not built
        out["ase_calculator"] = f"skipped ({type(exc).__name__}: {exc})"
    else:
        t = time.time()
        err = np.zeros(3)
        for fr in frames:
            atoms = fr.to_atoms()
            atoms.calc = calc
            e = atoms.get_potential_energy()
            f = atoms.get_forces()
            w = -atoms.get_stress(voigt=False) * atoms.get_volume()
            err = np.maximum(err, [abs(e - fr.energy), np.abs(f - fr.forces).max(), np.abs(w - fr.virial).max()])
        out["ase_calculator"] = {"max_dE": err[0], "max_dF": err[1], "max_dW": err[2], "time_s": time.time() - t}
    out["lammps"] = _reference_lammps(path, frames[::max(1, getattr(args, "lammps_every", 10))])
    out["print_precision"] = {"E": 1e-12, "F": 1e-6, "W": 1e-5}
    return out


def _reference_lammps(model: str, frames) -> dict:
    """Max |ΔE|, |ΔF|, |ΔW| of pair_style mlip against MLIP-2's numbers (cubic cells: no rotation)."""
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_mtp_snap import read_forces, write_frame_data

    from mlip import lammps_support as ls

    reason = ls.unavailable_reason()
    if reason:
        return {"skipped": reason}
    blocks = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, fr in enumerate(frames):
            write_frame_data(fr, os.path.join(tmp, f"c{k}.data"))
            blocks.append(f"""
clear
units metal
atom_style atomic
atom_modify map array
read_data c{k}.data
pair_style mlip {model} threads 1
pair_coeff * * Cu
compute pv all pressure NULL virial
variable vol equal vol
thermo_style custom step pe c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6] v_vol
thermo_modify format float %.17g norm no
dump d all custom 1 f{k}.txt id fx fy fz
dump_modify d format float %.17g sort id
run 0
""")
        t = time.time()
        ls.run_lmp("".join(blocks), tmp, env=ls.lammps_env(), timeout=3600, args=["-screen", "none"])
        rows = ls.parse_thermo(open(os.path.join(tmp, "log.lammps")).read())
        err = np.zeros(3)
        for k, (fr, row) in enumerate(zip(frames, rows)):
            w = ls.virial_from_thermo(row)
            f = read_forces(os.path.join(tmp, f"f{k}.txt"))
            err = np.maximum(err, [abs(row["PotEng"] - fr.energy), np.abs(f - fr.forces).max(), np.abs(w - fr.virial).max()])
    return {"n_cfg": len(frames), "max_dE": err[0], "max_dF": err[1], "max_dW": err[2], "time_s": time.time() - t}


def mlearn(args) -> dict:
    from mlip.data import read_frames
    from mlip.graph import build_graphs
    from mlip.models.mtp import MTP
    from mlip.train.evaluation import evaluate_graphs

    model = MTP.from_export(os.path.join(args.run, "model.pt")).double()
    out = {}
    for split in ("training", "test"):
        frames = read_frames(os.path.join(SHARED, "mlearn", args.element, f"{split}.json"))
        out[split] = evaluate_graphs(model, build_graphs(frames, model.species, model.cutoff, torch.float64))
    spath = os.path.join(args.run, "summary.json")  # a `mlip train` run directory
    if os.path.exists(spath):
        out["train_time_s"] = json.load(open(spath)).get("elapsed_s")
    out["level"] = model.level
    return out


def grade(args) -> dict:
    from mlip.active.grade import build_active_set, grade_frames
    from mlip.data import read_frames
    from mlip.models.mtp import MTP

    model = MTP.from_export(os.path.join(args.run, "model.pt")).double()
    train = read_frames(os.path.join(SHARED, "mlearn", args.element, "training.json"))
    test = read_frames(os.path.join(SHARED, "mlearn", args.element, "test.json"))
    out = {}
    for mode in ("nbh", "cfg"):
        t = time.time()
        a = build_active_set(model, train, mode)
        g_train = max(float(x.max()) for x in grade_frames(model, train, a))
        g_test = [float(x.max()) for x in grade_frames(model, test, a)]
        strained, hot = train[0].copy(), train[0].copy()
        strained.positions = strained.positions * 1.2
        strained.cell = strained.cell * 1.2
        rng = np.random.default_rng(0)
        hot.positions = hot.positions + rng.normal(scale=0.35, size=hot.positions.shape)
        out[mode] = {"rank": a.rank, "n_features": a.n_features, "build_s": time.time() - t,
                     "max_gamma_train": g_train, "max_gamma_test": max(g_test),
                     "median_gamma_test": float(np.median(g_test)),
                     "gamma_strained_20pct": float(grade_frames(model, [strained], a)[0].max()),
                     "gamma_hot_0.35A": float(grade_frames(model, [hot], a)[0].max())}
    return out


def main(argv=None) -> int:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["reference", "mlearn", "grade"])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--element", default="Mo")
    ap.add_argument("--lammps-every", type=int, default=10, help="reference: LAMMPS on every k-th configuration")
    args = ap.parse_args(argv)
    res = {"reference": reference, "mlearn": mlearn, "grade": grade}[args.what](args)
    print(json.dumps(res, indent=1, default=float))
    if res and args.what in ("reference", "grade"):
        name = "mtp_reference" if args.what == "reference" else f"mtp_grade_{args.element}"
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{name}.json")
        with open(path, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
        print("written", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
