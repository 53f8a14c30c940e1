"""NequIP (the package, nequip 0.19.x) trained on the DeePMD water example: the peer of our NequIP-style
model in benchmarks/bench_water.py (training/nequip_water.yaml), same architecture, same split (train
data_0 + data_1, validate on all of data_2), same wall-clock budget and threads.

    python benchmarks/peer_nequip_water.py --minutes 30 [--threads 1] [--dtype float32] [--quick]

Run with the project venv; NequIP itself runs as child processes in its own venv (`.peers-venv-nequip`,
benchmarks/peers.py; `python benchmarks/peers.py install --only nequip` makes it):

1. the water data are read with `mlip.data.read_frames` and written as extxyz into the work directory
   (train.xyz: data_0 + data_1; val.xyz: the first 20 frames of data_2, which is what our trainer
   validates on during training (`val_frames: 20`); test.xyz: all of data_2);
2. a nequip config (config.yaml, hydra) is written and `nequip-train -cn config` runs it;
3. the final model (EMA weights, saved by our callback when the budget ends) and the best checkpoint of
   nequip's ModelCheckpoint (by validation loss, what our trainer exports) are evaluated on all of
   data_2 with nequip's ASE calculator (eager model) in the nequip venv; the predictions are scored in
   this process by `mlip.metrics.ErrorAccumulator`, as `mlip.cli.test.evaluate_export` scores ours.

Hyper-parameters, training/nequip_water.yaml → nequip config:
  species O, H → type_names [O, H]; cutoff 4.5 → r_max 4.5; l_max 2 → l_max 2, parity true (both
  parities, as ours); num_features 32; num_layers 3; num_basis 8 → num_bessels 8, bessel_trainable true
  (ours learns the frequencies); envelope_p 6 → polynomial_cutoff_p 6; radial 2 × 64 →
  radial_mlp_depth 2, radial_mlp_width 64; head_hidden 16 → readout_mlp_hidden_layers_depth 1, width 16;
  float32 → model_dtype float32 (nequip keeps positions and the global dtype in float64, its design);
  avg_num_neighbors ← the training data (nequip: mean over all training frames; ours: 20 frames);
  energy scale ← RMS of the force components (ours: one trainable value per species, initialised
  alike → per_type_energy_scales: forces_rms, trainable); energy shift ← per-species least-squares
  energies of the training frames (ours, `fit_energy_bias`; passed as a dict). Ours refits that
  reference from the recent residuals every 100 steps (`bias_refit_every`); nequip has no such step,
  so its shifts are made trainable instead (per_type_energy_shifts_trainable: true).
  Loss p_e (ΔE/N)² + p_f mean(ΔF²), p_e 1, p_f 100 → EnergyForceLoss(per_atom_energy: true,
  coeffs total_energy 1, forces 100); nequip normalises the coefficients to sum 1, i.e. its loss is
  ours / 101, so the gradient-norm clip 100 becomes gradient_clip_val 100 / 101 (Adam itself does
  not see the factor). Batch size 1, shuffled. Adam lr 5e-3 → 1e-5: ours is a staircase of 50 stairs
  driven by the clock (training.schedule_by_time); nequip's config takes any Lightning callback, so
  the same clock-driven staircase is set on the optimizer before every step by `ClockLR` below (no
  torch LR scheduler could follow the clock). EMA 0.99 → EMALightningModule(ema_decay 0.99) (nequip
  ramps the decay as min(0.99, (1+n)/(10+n)) over the first steps; ours does not). Seed 1.
  Validation: ours every ~1/20 of the budget on 20 frames; here every `--val-every` steps (default one
  epoch, 240 steps) on the same 20 frames, loss-weighted metrics as ours (checkpoint `best` by it).
  ModelCheckpoint saves at the end of a training epoch (save_on_train_epoch_end): with nequip 0.19.1
  and Lightning 2.6.6 a checkpoint written at `on_validation_end` (the default when validating
  within an epoch) catches the EMA weights swapped in, and loading it fails ("EMA module loaded in a
  state where it does not contain EMA weights"), since Lightning calls the callbacks' hook before
  EMALightningModule's, which swaps back. Lightning validates once more when the Timer stops it.
  nequip's data pipeline builds neighbour lists per step (ASEDataset + NeighborListTransform,
  matscipy), DataLoader without workers; the model runs eager (compile_mode eager, nequip's default).

Budget: Lightning's `max_time` (Timer: seconds since training started, validation included, as ours);
start-up (imports, data, statistics) is reported apart (`startup_s`). frames/s = steps × batch / the
training seconds up to the last step (`last_step_s`: periodic validations included, as ours; the
validation Lightning runs when the Timer stops it is not, it is in `train_s`).
Writes benchmarks/results/water_nequip_peer_<dtype>.json (--quick: quick_water_nequip_peer_<dtype>.json,
a ~1-minute smoke: 15 s of training, validation every 10 steps, 8 test frames).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402  (stdlib only: this module is also imported by nequip-train, in the nequip venv)

HERE = Path(__file__).resolve().parent
REPO = peers.REPO
SHARED = Path(os.environ.get("MLIP_SHARED_DATA", REPO.parent / "shared" / "data"))
SPECIES = ["O", "H"]
RECIPE = REPO / "training" / "nequip_water.yaml"
TIMING = "timing.json"  # written by ClockLR into the work directory


# ----------------------------------------------------------------------------------------------
# the clock-driven learning rate and the timing record (instantiated by nequip-train via hydra)

def clock_lr(start: float, stop: float, stairs: int, budget_s: float, threads: int, out: str):
    """A Lightning callback (built here so that this module imports without lightning): before every
    step lr = start·rate^⌊stairs·t/budget⌋, rate = (stop/start)^(1/stairs), t the training seconds —
    ours (mlip.train.schedules.LRSchedule, exp, by time). It records steps, training seconds and the
    validation curve in `out`, and saves the final state (EMA weights included) as final.ckpt."""
    import lightning
    import torch

    class ClockLR(lightning.pytorch.Callback):
        def __init__(self) -> None:
            self.t0, self.last_step_s, self.curve, self.lr = 0.0, 0.0, [], start
            self.rate = (stop / start) ** (1.0 / stairs)

        def setup(self, trainer, pl_module, stage) -> None:
            torch.set_num_threads(int(threads))

        def on_train_start(self, trainer, pl_module) -> None:
            self.t0, self.wall0 = time.perf_counter(), time.time()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            t = time.perf_counter() - self.t0
            self.lr = max(stop, start * self.rate ** math.floor(stairs * min(1.0, t / budget_s)))
            for opt in trainer.optimizers:
                for g in opt.param_groups:
                    g["lr"] = self.lr

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.last_step_s = time.perf_counter() - self.t0

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or not self.t0:
                return
            m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val0_epoch/")}
            self.curve.append({"step": int(trainer.global_step), "seconds": time.perf_counter() - self.t0, "lr": self.lr,
                               "energy_rmse_meV": m.get("val0_epoch/per_atom_energy_rmse", math.nan) * 1e3,
                               "force_rmse": m.get("val0_epoch/forces_rmse"), "val_loss": m.get("val0_epoch/weighted_sum")})
            self._write(trainer, done=False)

        def on_train_end(self, trainer, pl_module) -> None:
            self._write(trainer, done=True)
            trainer.save_checkpoint(str(Path(out).with_name("final.ckpt")))

        def _write(self, trainer, done: bool) -> None:
            rec = {"train_start_wall": self.wall0, "train_s": time.perf_counter() - self.t0, "last_step_s": self.last_step_s,
                   "steps": int(trainer.global_step), "last_lr": self.lr, "done": done, "learning_curve": self.curve}
            Path(out).write_text(json.dumps(rec, indent=1))

    return ClockLR()


# ----------------------------------------------------------------------------------------------
# data and config (project venv)

def write_data(wd: Path, val_frames: int, test_frames: Optional[int]) -> Dict[str, Any]:
    """train/val/test extxyz from the DeePMD systems; per-species least-squares energies of train."""
    import numpy as np

    from mlip.data import read_frames, write_extxyz

    water = SHARED / "water"
    if not (water / "data_2" / "type.raw").exists():
        raise SystemExit(f"SKIP: water data not found at {water} (set MLIP_SHARED_DATA)")
    train = [f for d in ("data_0", "data_1") for f in read_frames(str(water / d))]
    test = read_frames(str(water / "data_2"))[:test_frames]
    val = read_frames(str(water / "data_2"))[:val_frames]
    wd.mkdir(parents=True, exist_ok=True)
    for name, frames in (("train", train), ("val", val), ("test", test)):
        write_extxyz(frames, wd / f"{name}.xyz")
    counts = np.array([[list(f.symbols).count(s) for s in SPECIES] for f in train], dtype=float)
    shifts = np.linalg.lstsq(counts, np.array([f.energy for f in train]), rcond=None)[0]  # = mlip fit_energy_bias
    return {"train": len(train), "val": len(val), "test": test, "shifts": [float(x) for x in shifts]}


def nequip_config(wd: Path, budget_s: float, threads: int, dtype: str, shifts: List[float], val_every: int,
                  epoch: int, seed: int = 1) -> Dict[str, Any]:
    """The nequip-train config (see the module docstring for the mapping from nequip_water.yaml).
    `epoch`: training frames (= steps per epoch at batch size 1)."""
    import yaml

    from peer_nequip import NEQUIP_KW  # the architecture mapping of the ASE speed comparison

    rec = yaml.safe_load(RECIPE.read_text())
    m, opt = rec["model"], rec["optimizer"]
    pe, pf = float(rec["loss"]["energy"]["start"]), float(rec["loss"]["forces"]["start"])
    lr = opt["lr"]
    stairs = max(1, int(rec["training"]["steps"]) // int(lr["decay_steps"]))
    model = {**NEQUIP_KW, "r_max": float(m["cutoff"]), "num_layers": m["num_layers"], "l_max": m["l_max"],
             "num_features": m["num_features"], "num_bessels": m["num_basis"], "polynomial_cutoff_p": m["envelope_p"],
             "radial_mlp_depth": m["radial_layers"], "radial_mlp_width": m["radial_hidden"],
             "readout_mlp_hidden_layers_width": m["head_hidden"],
             "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
             "per_type_energy_scales": "${training_data_stats:forces_rms}", "per_type_energy_scales_trainable": True,
             "per_type_energy_shifts": dict(zip(SPECIES, shifts)), "per_type_energy_shifts_trainable": True}
    model = {"_target_": "nequip.model.NequIPGNNModel", "seed": seed, "model_dtype": dtype, "type_names": SPECIES,
             "compile_mode": "eager", **model}
    per_atom_e = {"_target_": "nequip.data.PerAtomModifier", "field": "total_energy"}

    def metric(name: str, field: Any, kind: str, coeff: Optional[float] = None) -> Dict[str, Any]:
        return {"name": name, "field": field, "coeff": coeff, "metric": {"_target_": f"nequip.train.{kind}"}}

    val_metrics = {"_target_": "nequip.train.MetricsManager", "metrics": [
        metric("per_atom_energy_mse", per_atom_e, "MeanSquaredError", pe), metric("forces_mse", "forces", "MeanSquaredError", pf),
        metric("per_atom_energy_rmse", per_atom_e, "RootMeanSquaredError"), metric("forces_rmse", "forces", "RootMeanSquaredError"),
        metric("per_atom_energy_mae", per_atom_e, "MeanAbsoluteError"), metric("forces_mae", "forces", "MeanAbsoluteError")]}
    loader = {"_target_": "torch.utils.data.DataLoader", "num_workers": 0}
    clip = opt.get("clip_grad")
    return {
        "run": ["train"],
        "hydra": {"run": {"dir": str(wd / "train")}, "job": {"chdir": False}},
        "data": {"_target_": "nequip.data.datamodule.ASEDataModule", "seed": seed,
                 "train_file_path": str(wd / "train.xyz"), "val_file_path": str(wd / "val.xyz"),
                 "transforms": [{"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                                 "model_type_names": SPECIES, "chemical_species_to_atom_type_map": {s: s for s in SPECIES}},
                                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": float(m["cutoff"])}],
                 "train_dataloader": {**loader, "batch_size": int(rec["training"]["batch_size"]), "shuffle": True},
                 "val_dataloader": {**loader, "batch_size": 5},
                 "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager", "type_names": SPECIES,
                                   "dataloader_kwargs": {"batch_size": 10}}},
        "trainer": {"_target_": "lightning.Trainer", "accelerator": "cpu", "devices": 1, "max_epochs": -1,
                    "max_time": _ddhhmmss(budget_s), "val_check_interval": int(val_every) if val_every < epoch else 1.0,
                    "check_val_every_n_epoch": 1, "num_sanity_val_steps": 0, "log_every_n_steps": 50,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    **({"gradient_clip_val": float(clip) / (pe + pf), "gradient_clip_algorithm": "norm"} if clip else {}),
                    "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(wd / "train"), "name": "csv"},
                    "callbacks": [{"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": str(wd / "train"),
                                   "filename": "best", "monitor": "val0_epoch/weighted_sum", "mode": "min", "save_last": False,
                                   "save_on_train_epoch_end": True},  # not at on_validation_end: see above
                                  {"_target_": "peer_nequip_water.clock_lr", "start": float(lr["start"]), "stop": float(lr["stop"]),
                                   "stairs": stairs, "budget_s": float(budget_s), "threads": int(threads), "out": str(wd / TIMING)}]},
        "training_module": {"_target_": "nequip.train.EMALightningModule", "ema_decay": float(opt["ema"]),
                            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                                     "coeffs": {"total_energy": pe, "forces": pf}},
                            "val_metrics": val_metrics, "optimizer": {"_target_": "torch.optim.Adam", "lr": float(lr["start"])},
                            "model": model},
    }


def _ddhhmmss(seconds: float) -> str:
    """Lightning's max_time string (hydra hands a dict over as a DictConfig, which Timer rejects)."""
    s = max(1, int(round(seconds)))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ----------------------------------------------------------------------------------------------
# running the children (nequip venv)

def _env(threads: int) -> Dict[str, str]:
    env = peers.lammps_env(peers.venv_dir("nequip"), threads=threads)
    env["PYTHONPATH"] = str(HERE)  # nequip-train imports `peer_nequip_water.clock_lr`
    env["HYDRA_FULL_ERROR"] = "1"
    return env


def run_child(cmd: List[str], cwd: Path, env: Dict[str, str], log: Path, hard_stop: float) -> Dict[str, Any]:
    """Run `cmd`, output to `log`; killed (process group) after `hard_stop` seconds."""
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                if time.time() - t0 > hard_stop:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(60)
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); {log}:\n{tail}")
    return {"start_wall": t0, "wall_s": time.time() - t0}


def eval_child(ckpt: str, xyz: str, out: str, threads: int) -> None:
    """In the nequip venv: nequip's ASE calculator on the checkpoint (EMA weights) for every frame."""
    import warnings

    import ase.io
    import e3nn
    import lightning
    import nequip
    import numpy as np
    import torch
    from nequip.integrations.ase import NequIPCalculator

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    calc = NequIPCalculator._from_saved_model(ckpt, device="cpu", chemical_species_to_atom_type_map=True)
    energies, forces = [], []
    t0 = time.perf_counter()
    for atoms in ase.io.iread(xyz, format="extxyz"):
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
    np.savez(out, energy=np.array(energies), forces=np.concatenate(forces), s=time.perf_counter() - t0,
             n_parameters=sum(p.numel() for p in calc.model.parameters()),
             versions=json.dumps({"nequip": nequip.__version__, "e3nn": e3nn.__version__, "torch": torch.__version__,
                                  "lightning": lightning.__version__}))


def evaluate(wd: Path, ckpt: Path, test: List, threads: int) -> Dict[str, Any]:
    """Errors on the test frames, scored like mlip.cli.test.evaluate_export (mlip.metrics)."""
    import numpy as np

    from mlip.graph import species_indices
    from mlip.metrics import ErrorAccumulator

    out = wd / f"pred_{ckpt.stem}.npz"
    py = str(peers.venv_python(peers.venv_dir("nequip")))
    run_child([py, str(Path(__file__).resolve()), "eval-child", str(ckpt), str(wd / "test.xyz"), str(out), str(threads)],
              wd, _env(threads), wd / f"eval_{ckpt.stem}.log", hard_stop=3600)
    p = np.load(out)
    acc, a = ErrorAccumulator(SPECIES), 0
    for k, f in enumerate(test):
        n = len(f.symbols)
        atoms = f.to_atoms()
        vol = abs(atoms.cell.volume) if atoms.pbc.all() else None
        acc.add(species_indices(f.symbols, SPECIES, f.source), float(p["energy"][k]), p["forces"][a:a + n], None,
                f.energy, f.forces, f.virial, vol, group=f.group)
        a += n
    s = acc.summary()
    # the per-atom energy error split into its mean (a constant offset: the reference energy that the
    # trainable per-type shifts did not reach) and its spread about that mean
    de = np.array([(float(p["energy"][k]) - f.energy) / len(f.symbols) for k, f in enumerate(test)])
    return {"checkpoint": str(ckpt), "eval_s": float(p["s"]), "n_parameters": int(p["n_parameters"]),
            "versions": json.loads(str(p["versions"])), "val_frames": s.get("n_frames"),
            "val_energy_rmse_meV_per_atom": s["energy_rmse"] * 1e3, "val_force_rmse_eV_A": s["force_rmse"],
            "val_energy_mae_meV_per_atom": s["energy_mae"] * 1e3, "val_force_mae_eV_A": s["force_mae"],
            "val_energy_mean_error_meV_per_atom": float(de.mean()) * 1e3,
            "val_energy_std_meV_per_atom": float(de.std()) * 1e3, "summary": s}


# ----------------------------------------------------------------------------------------------

def water_benchmark(minutes: float, threads: int, dtype: str, output: Optional[str], quick: bool,
                    val_every: Optional[int], save_name: Optional[str]) -> Dict[str, Any]:
    import yaml

    paths = peers.require("nequip")
    t_all = time.time()
    budget = minutes * 60.0
    wd = Path(output or REPO / "runs" / f"{'quick_' if quick else ''}peer_nequip_water_{dtype}").resolve()
    data = write_data(wd, val_frames=4 if quick else 20, test_frames=8 if quick else None)
    val_every = val_every or (10 if quick else data["train"])  # default: one epoch
    cfg = nequip_config(wd, budget, threads, dtype, data["shifts"], val_every, data["train"])
    plain = type("NoAliases", (yaml.SafeDumper,), {"ignore_aliases": lambda self, data: True})
    (wd / "config.yaml").write_text(yaml.dump(cfg, Dumper=plain, sort_keys=False))
    for stale in (wd / TIMING, wd / "final.ckpt", wd / "train" / "best.ckpt"):
        stale.unlink(missing_ok=True)
    print(f"NequIP water ({dtype}, {threads} thread(s), {minutes:g} min): training in {wd} ...", flush=True)
    run = run_child([str(paths["python"].with_name("nequip-train")), "-cn", "config"], wd, _env(threads),
                    wd / "train.log", hard_stop=budget * 1.25 + 900)
    tm = json.loads((wd / TIMING).read_text())
    res: Dict[str, Any] = {
        "code": "NequIP", "dtype": dtype, "threads": threads, "minutes": minutes, "quick": quick,
        "steps": tm["steps"], "batch_size": 1, "train_s": tm["train_s"], "last_step_s": tm["last_step_s"],
        "frames_per_s": tm["steps"] * 1 / max(tm["last_step_s"], 1e-9),
        "startup_s": tm["train_start_wall"] - run["start_wall"], "train_wall_s": run["wall_s"], "last_lr": tm["last_lr"],
        "train_frames": data["train"], "val_frames_during_training": data["val"], "val_every_steps": val_every,
        "energy_shifts_eV": dict(zip(SPECIES, data["shifts"])),
    }
    final = evaluate(wd, wd / "final.ckpt", data["test"], threads)
    keys = [k for k in final if k.startswith("val_") or k in ("n_parameters", "eval_s")]
    res.update({k: final[k] for k in keys})
    res["versions"] = final["versions"]
    res["nequip_version"] = final["versions"]["nequip"]
    res["evaluated"] = "final (EMA weights at the end of the budget)"
    best = wd / "train" / "best.ckpt"
    if best.exists() and not quick:  # what our trainer exports: the best validation loss (EMA weights)
        try:
            b = evaluate(wd, best, data["test"], threads)
            res["best_checkpoint"] = {k: b[k] for k in keys}
        except RuntimeError as e:  # keep the final model's result
            res["best_checkpoint"] = {"error": str(e).splitlines()[0]}
    res.update({"learning_curve": tm["learning_curve"], "config": cfg, "workdir": str(wd),
                "wall_s": time.time() - t_all})
    path = peers.RESULTS / f"{save_name or ('quick_' if quick else '') + 'water_nequip_peer_' + dtype}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, default=str))
    print(f"NequIP {res['nequip_version']} water ({dtype}, {threads} thread(s), {minutes:g} min): {res['steps']} steps, "
          f"{res['frames_per_s']:.2f} frames/s (start-up {res['startup_s']:.0f} s, training {res['train_s']:.0f} s); "
          f"data_2 ({res['val_frames']} frames) energy RMSE {res['val_energy_rmse_meV_per_atom']:.3f} meV/atom, "
          f"force RMSE {res['val_force_rmse_eV_A']:.4f} eV/Å; {res['n_parameters']} parameters; energy error per atom: "
          f"mean {res['val_energy_mean_error_meV_per_atom']:.3f}, spread (std) {res['val_energy_std_meV_per_atom']:.3f} meV")
    if "val_force_rmse_eV_A" in res.get("best_checkpoint", {}):
        b = res["best_checkpoint"]
        print(f"  best checkpoint: energy RMSE {b['val_energy_rmse_meV_per_atom']:.3f} meV/atom, "
              f"force RMSE {b['val_force_rmse_eV_A']:.4f} eV/Å")
    print("written", path)
    return res


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval-child"]:  # inside the nequip venv
        eval_child(argv[1], argv[2], argv[3], int(argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, help="training budget, wall-clock minutes (default 30; --quick: 0.25)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--val-every", type=int, help="validation every N steps (default one epoch; --quick: 10)")
    ap.add_argument("--output", help="work directory (default runs/peer_nequip_water_<dtype>)")
    ap.add_argument("--save-name", help="results JSON stem (default water_nequip_peer_<dtype>)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 15 s of training, 8 test frames; "
                    "writes quick_water_nequip_peer_<dtype>.json")
    a = ap.parse_args(argv)
    minutes = a.minutes or (0.25 if a.quick else 30.0)
    try:
        water_benchmark(minutes, a.threads, a.dtype, a.output, a.quick, a.val_every, a.save_name)
    except peers.PeerUnavailable as e:
        print(f"SKIP: NequIP water benchmark: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
