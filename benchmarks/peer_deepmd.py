"""DeePMD-kit (TensorFlow backend) as the peer of our Deep Potential: water accuracy for a wall-clock
budget, and `pair_style deepmd` speed in LAMMPS. Runs with any Python that has numpy + ase (the
project venv or the peers venv); DeePMD-kit itself is called through the peers venv's `dp` and `lmp`
(see benchmarks/peers.py; `python benchmarks/peers.py install` makes it).

    python benchmarks/peer_deepmd.py water  --minutes 30 [--precision float64|float32] [--threads 1]
    python benchmarks/peer_deepmd.py lammps [--sizes 1000 10000] [--ranks 1 2] [--ours model.pt]
                                            [--atom-steps 2e5] [--model frozen.pb] [--no-compress]
    python benchmarks/peer_deepmd.py ase    [--sizes 100 1000] [--threads 1] [--ours model.pt]

`water`: exactly the hyper-parameters of training/water_dp.yaml (DeePMD-kit's se_e2_a water example):
se_e2_a, rcut 6, rcut_smth 0.5, sel [46, 92], embedding [25, 50, 100] (type_one_side), axis 16,
fitting [240, 240, 240] with resnet_dt, exp LR 1e-3 → the recipe's stop (read from it) with 200 decays, prefactors
e 0.02 → 1, f 1000 → 1, batch 1; train data_0 + data_1, validate data_2. DeePMD-kit has no time budget,
so a short throughput probe (not counted) fixes `numb_steps` so that the schedule completes in the
budget, as benchmarks/bench_water.py does for ours; a run that overshoots the budget by more than
25 % is stopped and its last checkpoint is used (reported as `schedule_completed: false`). Then
`dp freeze`, `dp compress`, and `dp test` on data_2 for both → energy RMSE per atom and force RMSE.
Writes benchmarks/results/water_deepmd_<precision>.json.

`lammps`: a DeePMD model of the same architecture, trained for a few steps only (speed does not
depend on the weights), frozen and compressed, timed with `pair_style deepmd` (fix nve, water boxes
of about the requested sizes, 1 TF thread per rank) on 1 and 2 MPI ranks: µs per atom-step and the
Pair time per step. `--ours model.pt` times our `pair_style mlip` on the same data file and input
(needs the project venv). Writes benchmarks/results/lammps_deepmd.json.

`ase`: the same frozen (and compressed) model through DeePMD-kit's ASE calculator
(`deepmd.calculator.DP`, run in the peers venv) and, with `--ours`, our `MLIPCalculator` on the same
water boxes (about 100 and 1000 atoms), timed with the protocol of benchmarks/peer_mace.py (warm-up
calls, then force calls each after a small displacement). Writes benchmarks/results/ase_deepmd.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

REPO = peers.REPO
RESULTS = peers.RESULTS
SHARED = Path(os.environ.get("MLIP_SHARED_DATA", REPO.parent / "shared" / "data"))
TYPE_MAP = ["O", "H"]
MASSES = {"O": 15.9994, "H": 1.00794}


class Skip(RuntimeError):
    """Missing peer or data: the message is printed as a SKIP line and the script exits 0."""


# ----------------------------------------------------------------------------------------------
# input (hyper-parameters of training/water_dp.yaml)

def recipe_lr() -> Dict[str, float]:
    """The water recipe's learning rate {start, stop}: DeePMD-kit always gets the recipe's own, so a change
    of the recipe's schedule reaches both codes of the race."""
    import yaml  # a dependency of deepmd-kit too, so present in either venv

    lr = yaml.safe_load((REPO / "training" / "water_dp.yaml").read_text())["optimizer"]["lr"]
    return {"start": float(lr["start"]), "stop": float(lr["stop"])}


def dp_input(train: Sequence[str], valid: Sequence[str], steps: int, decay_steps: int, *, seed: int = 1,
             precision: str = "float64", disp_freq: int = 100, save_freq: int = 1000, val_batches: int = 1,
             stop_lr: Optional[float] = None) -> Dict:
    """DeePMD-kit's input.json for the water recipe (`stop_lr`: the recipe's unless asked otherwise)."""
    prec = {"float64": "float64", "float32": "float32"}[precision]
    lr = recipe_lr()
    stop_lr = lr["stop"] if stop_lr is None else stop_lr
    return {
        "model": {
            "type_map": TYPE_MAP,
            "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut_smth": 0.5, "rcut": 6.0,
                           "neuron": [25, 50, 100], "resnet_dt": False, "axis_neuron": 16,
                           "type_one_side": True, "precision": prec, "seed": seed},
            "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "precision": prec, "seed": seed},
        },
        "learning_rate": {"type": "exp", "decay_steps": int(decay_steps), "start_lr": lr["start"], "stop_lr": float(stop_lr)},
        "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1.0, "start_pref_f": 1000.0, "limit_pref_f": 1.0,
                 "start_pref_v": 0.0, "limit_pref_v": 0.0},
        "training": {
            "training_data": {"systems": [str(s) for s in train], "batch_size": 1},
            "validation_data": {"systems": [str(s) for s in valid], "batch_size": 1, "numb_btch": int(val_batches)},
            "numb_steps": int(steps), "seed": seed, "disp_file": "lcurve.out", "disp_freq": int(disp_freq),
            "save_freq": int(save_freq), "save_ckpt": "model.ckpt", "max_ckpt_keep": 2,
        },
    }


def n_parameters(neuron=(25, 50, 100), axis=16, fitting=(240, 240, 240), n_types=2, one_side=True) -> int:
    """Trainable parameters of se_e2_a + energy fitting (resnet_dt in the fitting only), counted
    as DeePMD-kit builds them (one embedding net per neighbour type with type_one_side)."""
    emb, d = 0, 1
    for w in neuron:
        emb += d * w + w
        d = w
    n_emb = n_types if one_side else n_types * n_types
    fit, d = 0, neuron[-1] * axis
    for w in fitting:
        fit += d * w + w + (w if d == w else 0)  # timestep vector of resnet_dt on equal-width layers
        d = w
    fit += d + 1
    return n_emb * emb + n_types * fit


# ----------------------------------------------------------------------------------------------
# running dp

def _dp(paths, args: Sequence[str], cwd: Path, env, log_name: str, timeout: Optional[float] = None,
        hard_stop: Optional[float] = None) -> Dict:
    """Run `dp --tf ARGS` in cwd, log to cwd/log_name; returns returncode, wall time, output, stopped."""
    cmd = [str(paths["dp"]), "--tf", *args]
    t0 = time.time()
    stopped = False
    with open(cwd / log_name, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                el = time.time() - t0
                if (hard_stop is not None and el > hard_stop) or (timeout is not None and el > timeout):
                    stopped = True
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    out = (cwd / log_name).read_text(errors="replace")
    return {"returncode": proc.returncode, "wall_s": time.time() - t0, "out": out, "stopped": stopped, "cmd": cmd}


def _check(res: Dict, what: str) -> None:
    if res["returncode"] != 0 and not res["stopped"]:
        tail = "\n".join(res["out"].splitlines()[-25:])
        raise RuntimeError(f"{what} failed (exit {res['returncode']}): {' '.join(res['cmd'])}\n{tail}")


_BATCH_RES = (re.compile(r"Batch\s+(\d+): total wall time = ([0-9.eE+-]+) s"),      # 3.x
              re.compile(r"batch\s+(\d+)\s+training time\s+([0-9.eE+-]+)\s*s"))      # 2.x


def training_times(out: str) -> List[tuple]:
    """(batch, seconds since the previous report) from DeePMD-kit's training log."""
    for rx in _BATCH_RES:
        found = rx.findall(out)
        if found:
            return [(int(b), float(t)) for b, t in found]
    return []


def train(workdir: Path, train_sys, valid_sys, steps: int, decay_steps: int, precision: str, threads: int,
          disp_freq: int, save_freq: int, hard_stop: Optional[float] = None, seed: int = 1,
          stop_lr: Optional[float] = None) -> Dict:
    """`dp train` of the water recipe (`dp_input`) in workdir."""
    cfg = dp_input(train_sys, valid_sys, steps, decay_steps, seed=seed, precision=precision,
                   disp_freq=disp_freq, save_freq=save_freq, stop_lr=stop_lr)
    return run_training(workdir, cfg, threads, hard_stop)


def run_training(workdir: Path, cfg: Dict, threads: int, hard_stop: Optional[float] = None) -> Dict:
    """`dp train` of the input dict `cfg` in workdir: the run's output, its (batch, seconds) reports
    (`times`), the steps done (fewer than planned if `hard_stop` seconds stopped it) and `train_s`."""
    paths = peers.require("deepmd")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.json").write_text(json.dumps(cfg, indent=1))
    env = peers.lammps_env(threads=threads)
    res = _dp(paths, ["train", "input.json"], workdir, env, "train.log", hard_stop=hard_stop)
    _check(res, "dp train")
    times = training_times(res["out"])
    last = times[-1][0] if times else 0
    res.update(times=times, steps_done=last if res["stopped"] else int(cfg["training"]["numb_steps"]),
               train_s=sum(t for _, t in times))
    return res


def probe_rate(probe: Dict, probe_steps: int) -> float:
    """Training steps per second of a probe run, over the reports of its last three quarters (TF's
    first hundred steps are slower; a 60-step probe under-estimated the rate by 10 %, so DeePMD-kit
    finished its water schedule in 88 % of the budget)."""
    times = probe["times"]
    if not times:
        raise RuntimeError("the probe run reported no training times (see its train.log)")
    late = [(b1, b2, t) for (b1, _), (b2, t) in zip(times[:-1], times[1:]) if b1 >= probe_steps // 4]
    if late:
        return sum(b2 - b1 for b1, b2, _ in late) / max(sum(t for _, _, t in late), 1e-9)
    return times[-1][0] / max(sum(t for _, t in times), 1e-9)


def budget_plan(probe: Dict, probe_steps: int, budget: float) -> Dict[str, float]:
    """From a probe run, the plan of a run that fills `budget` seconds: its rate (steps/s), the start-up
    seconds, `steps` (97 % of budget x rate), `every` (reports and checkpoints, ~20 per run) and the
    `hard_stop` (start-up + 1.25x the budget + 60 s) at which the run is stopped."""
    rate = probe_rate(probe, probe_steps)
    startup = max(0.0, probe["wall_s"] - probe["train_s"])
    steps = max(200, int(rate * budget * 0.97))
    return {"rate": rate, "startup": startup, "steps": steps, "every": max(100, steps // 20),
            "hard_stop": startup + 1.25 * budget + 60}


def freeze(workdir: Path, out: str = "frozen.pb", threads: int = 1) -> Path:
    paths = peers.require("deepmd")
    res = _dp(paths, ["freeze", "-c", ".", "-o", out], workdir, peers.lammps_env(threads=threads), "freeze.log", timeout=1800)
    _check(res, "dp freeze")
    return workdir / out


def compress(workdir: Path, frozen: str = "frozen.pb", out: str = "compressed.pb", threads: int = 1) -> Dict:
    paths = peers.require("deepmd")
    res = _dp(paths, ["compress", "-i", frozen, "-o", out, "-t", "input.json"], workdir,
              peers.lammps_env(threads=threads), "compress.log", timeout=3600)
    _check(res, "dp compress")
    return {"path": workdir / out, "wall_s": res["wall_s"]}


_TEST_KEYS = {"energy_mae": r"Energy MAE\s*:", "energy_rmse": r"Energy RMSE\s*:",
              "energy_mae_per_atom": r"Energy MAE/Natoms\s*:", "energy_rmse_per_atom": r"Energy RMSE/Natoms\s*:",
              "force_mae": r"Force\s+MAE\s*:", "force_rmse": r"Force\s+RMSE\s*:"}


def dp_test(model: Path, system: Path, workdir: Path, threads: int = 1, n_frames: int = 100000) -> Dict[str, float]:
    """`dp test` on one system: energy/force MAE and RMSE (eV, eV/Å; per-atom energies in eV/atom)."""
    paths = peers.require("deepmd")
    res = _dp(paths, ["test", "-m", str(model), "-s", str(system), "-n", str(n_frames)], workdir,
              peers.lammps_env(threads=threads), f"test_{model.stem}.log", timeout=3600)
    _check(res, "dp test")
    out: Dict[str, float] = {"wall_s": res["wall_s"]}
    for key, pat in _TEST_KEYS.items():
        m = re.findall(pat + r"\s*([0-9.eE+-]+)", res["out"])
        if m:
            out[key] = float(m[-1])
    m = re.findall(r"number of test data\s*:\s*(\d+)", res["out"])
    if m:
        out["frames"] = int(m[-1])
    return out


def _water_systems() -> Dict[str, List[Path]]:
    water = SHARED / "water"
    sys_ = {"train": [water / "data_0", water / "data_1"], "valid": [water / "data_2"]}
    missing = [str(p) for v in sys_.values() for p in v if not (p / "type.raw").exists()]
    if missing:
        raise Skip(f"water data not found ({', '.join(missing)}; set MLIP_SHARED_DATA)")
    return sys_


def _n_frames(systems: Sequence[Path]) -> int:
    return sum(int(np.load(s, mmap_mode="r").shape[0]) for d in systems for s in sorted(Path(d).glob("set.*/energy.npy")))


# ----------------------------------------------------------------------------------------------
# water accuracy for a wall-clock budget

def water_benchmark(minutes: float, precision: str = "float64", threads: int = 1, output: Optional[str] = None,
                    probe_steps: int = 400, do_compress: bool = True, save_name: Optional[str] = None,
                    seed: int = 1) -> Dict:
    peers.require("deepmd")
    systems = _water_systems()
    root = Path(output or REPO / "runs" / f"peer_deepmd_water_{precision}").resolve()  # dp runs in its workdir
    budget = minutes * 60.0
    t_all = time.time()

    # throughput probe (not counted)
    disp = max(5, probe_steps // 8)
    probe = train(root / "probe", systems["train"], systems["valid"], probe_steps, max(1, probe_steps // 200), precision,
                  threads, disp_freq=disp, save_freq=10**9)
    plan = budget_plan(probe, probe_steps, budget)
    rate, startup, steps, every = plan["rate"], plan["startup"], plan["steps"], plan["every"]
    decay = max(1, steps // 200)
    print(f"probe: {rate:.2f} steps/s (start-up {startup:.0f} s) -> numb_steps {steps}, decay_steps {decay} "
          f"for {minutes} min", flush=True)

    run = train(root / "train", systems["train"], systems["valid"], steps, decay, precision, threads,
                disp_freq=every, save_freq=every, hard_stop=plan["hard_stop"], seed=seed)
    wd = root / "train"
    frozen = freeze(wd, threads=threads)
    res: Dict = {
        "code": "DeePMD-kit", "backend": "tensorflow", "dtype": precision, "threads": threads, "minutes": minutes,
        "seed": seed,
        "steps_planned": steps, "steps": run["steps_done"], "decay_steps": decay, "schedule_completed": not run["stopped"],
        "lr": recipe_lr(),
        "probe_steps_per_s": rate, "train_s": run["train_s"], "train_wall_s": run["wall_s"], "startup_s": run["wall_s"] - run["train_s"],
        "frames_per_s": run["steps_done"] / max(run["train_s"], 1e-9),
        "n_parameters": n_parameters(), "val_frames": _n_frames(systems["valid"]),
    }
    test = dp_test(frozen, systems["valid"][0], wd, threads)
    res.update({"val_energy_rmse_meV_per_atom": test.get("energy_rmse_per_atom", math.nan) * 1e3,
                "val_force_rmse_eV_A": test.get("force_rmse", math.nan),
                "val_energy_mae_meV_per_atom": test.get("energy_mae_per_atom", math.nan) * 1e3,
                "val_force_mae_eV_A": test.get("force_mae", math.nan), "dp_test_s": test["wall_s"]})
    if do_compress:
        try:
            c = compress(wd, threads=threads)
            tc = dp_test(c["path"], systems["valid"][0], wd, threads)
            res["compressed"] = {"compress_s": c["wall_s"], "val_energy_rmse_meV_per_atom": tc.get("energy_rmse_per_atom", math.nan) * 1e3,
                                 "val_force_rmse_eV_A": tc.get("force_rmse", math.nan), "dp_test_s": tc["wall_s"]}
        except RuntimeError as e:  # keep the uncompressed result
            res["compressed"] = {"error": str(e).splitlines()[0]}
    res["versions"] = _versions()
    res["wall_s"] = time.time() - t_all
    res["workdir"] = str(root)
    path = save(save_name or f"water_deepmd_{precision}", res)
    print(f"DeePMD-kit water ({precision}, {threads} thread(s), {minutes} min): {res['steps']}/{steps} steps, "
          f"{res['frames_per_s']:.2f} frames/s; data_2 energy RMSE {res['val_energy_rmse_meV_per_atom']:.3f} meV/atom, "
          f"force RMSE {res['val_force_rmse_eV_A']:.4f} eV/Å")
    if "compressed" in res and "val_force_rmse_eV_A" in res["compressed"]:
        c = res["compressed"]
        print(f"  compressed: energy RMSE {c['val_energy_rmse_meV_per_atom']:.3f} meV/atom, force RMSE "
              f"{c['val_force_rmse_eV_A']:.4f} eV/Å (compress {c['compress_s']:.0f} s)")
    print("written", path)
    return res


# ----------------------------------------------------------------------------------------------
# a model for the speed comparison

def build_speed_model(workdir: Path, steps: int = 10, precision: str = "float64", do_compress: bool = True,
                      threads: int = 1) -> Dict[str, Path]:
    """Same architecture as the water benchmark, trained for `steps` steps on the water data (needed
    for DeePMD-kit's statistics; speed does not depend on the weights), frozen (and compressed)."""
    systems = _water_systems()
    train(workdir, systems["train"], systems["valid"], steps, 1, precision, threads, disp_freq=max(1, steps), save_freq=max(1, steps))
    out = {"plain": freeze(workdir, threads=threads)}
    if do_compress:
        out["compressed"] = compress(workdir, threads=threads)["path"]
    return out


# ----------------------------------------------------------------------------------------------
# structures and LAMMPS timing

def water_box(n_atoms: int, seed: int = 0, density: float = 1.0):
    """Cubic box of k³ water molecules (k³·3 ≈ n_atoms) on a simple-cubic lattice at `density` g/cm³,
    randomly oriented (O–H 0.9572 Å, H–O–H 104.52°), as ASE Atoms (symbols O, H, H, ...)."""
    from ase import Atoms

    k = max(2, int(round((n_atoms / 3.0) ** (1.0 / 3.0))))
    a = (18.01528 / 6.02214076e23 / density * 1e24) ** (1.0 / 3.0)  # Å per molecule
    rng = np.random.default_rng(seed)
    th = math.radians(104.52) / 2
    mol = np.array([[0.0, 0.0, 0.0], [0.9572 * math.sin(th), 0.0, 0.9572 * math.cos(th)],
                    [-0.9572 * math.sin(th), 0.0, 0.9572 * math.cos(th)]])
    pos, sym = [], []
    for idx in np.ndindex(k, k, k):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        pos.extend((np.asarray(idx) + 0.5) * a + mol @ rot.T)
        sym.extend(["O", "H", "H"])
    atoms = Atoms(sym, positions=np.array(pos), cell=np.eye(3) * k * a, pbc=True)
    atoms.wrap()
    return atoms


def write_lammps_data(atoms, path: Path, elements: Sequence[str] = TYPE_MAP) -> Path:
    """atom_style atomic data file with one type per element in `elements` order (masses included)."""
    from ase.io import write

    write(str(path), atoms, format="lammps-data", specorder=list(elements), masses=True, atom_style="atomic", units="metal")
    return Path(path)


def lammps_input(data: Path, pair_lines: Sequence[str], steps: int, timestep: float = 0.0005, warmup: int = 3) -> str:
    """fix nve from 300 K; `run warmup` first (graph optimisation, allocations), then the timed `run steps`."""
    return "\n".join(["units metal", "atom_style atomic", "boundary p p p", f"read_data {data}", *pair_lines,
                      "velocity all create 300 4928459 loop geom", f"timestep {timestep}", "fix 1 all nve",
                      f"thermo {max(steps, 1)}", f"run {warmup}", f"run {steps}", ""])


def parse_lammps(out: str) -> Dict[str, float]:
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", out)
    pairs = re.findall(r"^Pair\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)", out, re.M)
    if not loops:
        raise RuntimeError("no 'Loop time' in LAMMPS output:\n" + "\n".join(out.splitlines()[-25:]))
    cpu = re.findall(r"([0-9.]+)% CPU use with", out)
    loop, ranks, n, natoms = loops[-1]
    loop, n, natoms = float(loop), int(n), int(natoms)
    return {"atoms": natoms, "ranks": int(ranks), "steps": n, "loop_s": loop,
            "us_per_atom_step": loop / max(n * natoms, 1) * 1e6,
            "pair_ms_per_step": (float(pairs[-1][1]) / max(n, 1) * 1e3) if pairs else math.nan,
            "cpu_use_pct": float(cpu[-1]) if cpu else math.nan,
            # LAMMPS' "% CPU use" (per rank): on a busy machine this estimates the time with a core to itself
            "cpu_us_per_atom_step": loop / max(n * natoms, 1) * 1e6 * (float(cpu[-1]) / 100.0 if cpu else math.nan)}


def time_pair_deepmd(model: Path, data: Path, steps: int, ranks: int = 1, workdir: Optional[Path] = None,
                     threads: int = 1, timeout: float = 3600) -> Dict[str, float]:
    """Time `pair_style deepmd MODEL` (pair_coeff * * O H) on a data file with the peers venv's
    `lmp` (under its `mpirun -np ranks` when ranks > 1), `threads` TF threads per rank."""
    paths = peers.require("deepmd")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="peer_lmp_"))
    script = lammps_input(Path(data).resolve(), [f"pair_style deepmd {Path(model).resolve()}", "pair_coeff * * " + " ".join(TYPE_MAP)], steps)
    (workdir / "in.deepmd").write_text(script)
    cmd = [str(paths["lmp"]), "-in", "in.deepmd", "-log", "none", "-nocite"]
    if ranks > 1:
        cmd = [str(paths["mpirun"]), "-np", str(ranks), *cmd]
    p = subprocess.run(cmd, cwd=workdir, env=peers.lammps_env(threads=threads), capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    (workdir / f"log_deepmd_{ranks}.txt").write_text(out)
    if p.returncode != 0 or "ERROR" in out:
        err = next((ln for ln in out.splitlines() if "ERROR" in ln), "\n".join(out.splitlines()[-15:]))
        raise RuntimeError(f"lmp (pair_style deepmd) failed: {err}")
    return parse_lammps(out)


def time_pair_mlip(model: Path, data: Path, steps: int, ranks: int = 1, workdir: Optional[Path] = None,
                   threads: int = 1) -> Dict[str, float]:
    """The same input with our `pair_style mlip` (project venv: mlip.lammps_support)."""
    from mlip import lammps_support as ls

    reason = ls.unavailable_reason()
    if reason:
        raise Skip(f"pair_style mlip unavailable: {reason}")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mlip_lmp_"))
    script = lammps_input(Path(data).resolve(), [f"pair_style mlip {Path(model).resolve()} threads {threads}",
                                                 "pair_coeff * * " + " ".join(TYPE_MAP)], steps)
    out = ls.run_lmp(script, str(workdir), nprocs=ranks, env=ls.lammps_env(), timeout=3600).stdout
    return parse_lammps(out)


def lammps_benchmark(sizes: Sequence[int] = (1000, 10000), ranks: Sequence[int] = (1, 2), atom_steps: float = 2e5,
                     model: Optional[str] = None, do_compress: bool = True, ours: Optional[str] = None,
                     precision: str = "float64", workdir: Optional[str] = None, save_name: str = "lammps_deepmd") -> Dict:
    peers.require("deepmd")
    wd = Path(workdir or tempfile.mkdtemp(prefix="peer_deepmd_lmp_"))
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if model:
        models = {"plain": Path(model)}
    else:
        models = build_speed_model(wd / "model", precision=precision, do_compress=do_compress)
    print(f"model: {'given ' + model if model else 'DeePMD-kit se_e2_a water architecture (10 training steps), ' + precision}"
          f" [built in {time.time() - t0:.0f} s]; {os.cpu_count()} cores", flush=True)
    rows: List[Dict] = []
    print(f"{'code':>18} {'atoms':>7} {'ranks':>5} {'steps':>5} {'us/atom-step':>13} {'Pair ms/step':>13} {'CPU use %':>9}")
    for size in sizes:
        atoms = water_box(size)
        data = write_lammps_data(atoms, wd / f"water_{len(atoms)}.data")
        steps = max(2, int(atom_steps / len(atoms)))
        runs = [(f"deepmd {k}", lambda r, m=m: time_pair_deepmd(m, data, steps, r, wd)) for k, m in models.items()]
        if ours:
            runs.append(("mlip", lambda r: time_pair_mlip(Path(ours), data, steps, r, wd)))
        for name, fn in runs:
            for r in ranks:
                try:
                    row = {"code": name, **fn(r)}
                except (RuntimeError, subprocess.TimeoutExpired, Skip) as e:
                    row = {"code": name, "atoms": len(atoms), "ranks": r, "error": str(e).splitlines()[0]}
                    print(f"{name:>18} {len(atoms):7d} {r:5d}  ERROR {row['error']}", flush=True)
                else:
                    print(f"{name:>18} {row['atoms']:7d} {r:5d} {row['steps']:5d} {row['us_per_atom_step']:13.2f} "
                          f"{row['pair_ms_per_step']:13.2f} {row['cpu_use_pct']:9.1f}", flush=True)
                rows.append(row)
    res = {"structure": "water box (simple-cubic lattice of randomly oriented H2O, 1 g/cm3)", "precision": precision,
           "model": model or "se_e2_a water architecture, 10 training steps", "ours": ours, "rows": rows,
           "threads_per_rank": 1, "versions": _versions(), "wall_s": time.time() - t0}
    print("written", save(save_name, res))
    return res


# ----------------------------------------------------------------------------------------------
# ASE calculators

def _ase_child(models: Sequence[str], sizes: Sequence[int], threads: int, calls: Optional[int], atom_calls: float,
               out: str) -> None:
    """Inside the peers venv: time deepmd.calculator.DP for each "label=model.pb"."""
    import peer_mace
    from deepmd.calculator import DP

    rows = []
    for spec in models:
        label, _, path = spec.partition("=")
        calc = DP(model=path)
        for n in sizes:
            atoms = water_box(n)
            r = peer_mace.time_calculator(calc, atoms, peer_mace.calls_for(len(atoms), calls, atom_calls))
            rows.append({"code": label, "system": "water", "dtype": "float64", "threads": threads, **r})
    Path(out).write_text(json.dumps(rows))


def ase_benchmark(sizes: Sequence[int] = (100, 1000), threads: int = 1, calls: Optional[int] = None,
                  atom_calls: float = 2e4, model: Optional[str] = None, do_compress: bool = True,
                  ours: Optional[str] = None, workdir: Optional[str] = None, save_name: str = "ase_deepmd") -> Dict:
    import peer_mace

    peers.require("deepmd")
    wd = Path(workdir or tempfile.mkdtemp(prefix="peer_deepmd_ase_"))
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    models = {"plain": Path(model)} if model else build_speed_model(wd / "model", do_compress=do_compress)
    specs = [f"DeePMD-kit{'' if k == 'plain' else ' ' + k}={Path(m).resolve()}" for k, m in models.items()]
    out = wd / "deepmd_ase.json"
    cmd = [str(peers.venv_python()), os.path.abspath(__file__), "ase-child", "--models", *specs,
           "--sizes", *map(str, sizes), "--threads", str(threads), "--atom-calls", str(atom_calls), "--json", str(out)]
    if calls:
        cmd += ["--calls", str(calls)]
    p = subprocess.run(cmd, env=peers.lammps_env(threads=threads), capture_output=True, text=True)
    if p.returncode != 0 or not out.exists():
        raise RuntimeError("DeePMD-kit ASE timing failed: " + "\n".join((p.stdout + p.stderr).splitlines()[-10:]))
    rows = json.loads(out.read_text())
    if ours:
        import torch

        torch.set_num_threads(threads)
        rows += peer_mace.run_ours([f"DP (water_dp.yaml architecture)={ours}"], "water", sizes, threads, calls, atom_calls)
    print(f"{'calculator':>26} {'atoms':>6} {'calls':>5} {'ms/call':>10} {'us/atom':>9} {'cpu us/atom':>11}")
    for r in rows:
        name = r.get("label") or r["code"]
        print(f"{name[:26]:>26} {r['atoms']:6d} {r['calls']:5d} {r['ms_per_call']:10.2f} {r['us_per_atom']:9.2f} "
              f"{r['cpu_us_per_atom']:11.2f}", flush=True)
    res = {"system": "water", "threads": threads, "model": model or "se_e2_a water architecture, 10 training steps",
           "ours": ours, "rows": rows, "versions": _versions(), "wall_s": time.time() - t0}
    print("written", save(save_name, res))
    return res


# ----------------------------------------------------------------------------------------------

def _versions() -> Dict[str, Optional[str]]:
    try:
        return peers._installed_versions(peers.venv_dir(), ["deepmd-kit", "tensorflow-cpu", "lammps"])
    except Exception:
        return {}


def save(name: str, payload: Dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("water", help="train/freeze/compress/test on the water example for a wall-clock budget")
    w.add_argument("--minutes", type=float, default=30.0)
    w.add_argument("--precision", "--dtype", dest="precision", default="float64", choices=["float64", "float32"])
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--probe-steps", type=int, default=400)
    w.add_argument("--seed", type=int, default=1, help="DeePMD-kit's seed (weights and frame order)")
    w.add_argument("--no-compress", action="store_true")
    w.add_argument("--output", help="work directory (default runs/peer_deepmd_water_<precision>)")
    w.add_argument("--save-name", help="results JSON name (default water_deepmd_<precision>)")
    lm = sub.add_parser("lammps", help="pair_style deepmd speed (µs/atom-step) on water boxes")
    lm.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    lm.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    lm.add_argument("--atom-steps", type=float, default=2e5, help="atom-steps per measurement")
    lm.add_argument("--model", help="a frozen DeePMD model (.pb) instead of building one")
    lm.add_argument("--no-compress", action="store_true")
    lm.add_argument("--ours", help="also time our pair_style mlip with this exported model (O H)")
    lm.add_argument("--precision", default="float64", choices=["float64", "float32"])
    lm.add_argument("--workdir")
    lm.add_argument("--save-name", default="lammps_deepmd")
    ae = sub.add_parser("ase", help="DeePMD-kit's ASE calculator vs ours (ms per force call) on water boxes")
    ae.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ae.add_argument("--threads", type=int, default=1)
    ae.add_argument("--calls", type=int, help="timed calls per case (default: atom-calls / atoms, at least 3)")
    ae.add_argument("--atom-calls", type=float, default=2e4)
    ae.add_argument("--model", help="a frozen DeePMD model (.pb) instead of building one")
    ae.add_argument("--no-compress", action="store_true")
    ae.add_argument("--ours", help="also time our MLIPCalculator with this exported model (O H)")
    ae.add_argument("--workdir")
    ae.add_argument("--save-name", default="ase_deepmd")
    ch = sub.add_parser("ase-child", help=argparse.SUPPRESS)
    ch.add_argument("--models", nargs="+", required=True)
    ch.add_argument("--sizes", type=int, nargs="+", required=True)
    ch.add_argument("--threads", type=int, default=1)
    ch.add_argument("--calls", type=int)
    ch.add_argument("--atom-calls", type=float, default=2e4)
    ch.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "water":
            water_benchmark(a.minutes, a.precision, a.threads, a.output, a.probe_steps, not a.no_compress, a.save_name,
                            a.seed)
        elif a.cmd == "lammps":
            lammps_benchmark(a.sizes, a.ranks, a.atom_steps, a.model, not a.no_compress, a.ours, a.precision,
                             a.workdir, a.save_name)
        elif a.cmd == "ase":
            ase_benchmark(a.sizes, a.threads, a.calls, a.atom_calls, a.model, not a.no_compress, a.ours, a.workdir,
                          a.save_name)
        else:
            _ase_child(a.models, a.sizes, a.threads, a.calls, a.atom_calls, a.json)
    except (Skip, peers.PeerUnavailable) as e:
        print(f"SKIP: DeePMD-kit benchmark: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
