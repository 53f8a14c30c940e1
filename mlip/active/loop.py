"""Active learning: train → explore → select → label → append → retrain, resumable at any moment.

    from mlip.active.loop import run_loop, load_al_config
    run_loop(load_al_config("training/al_cu.yaml"))          # `mlip al CONFIG.yaml`

Iteration k (directory OUT/iter_k/), each stage written to disk before the next begins:

1. train    `train/m{m}/` one `mlip train` run per committee member (seed + m) on init + all labels of
            earlier iterations, warm-started from iteration k−1's member m; `train/model_{m}.pt` exports
            (model 0 with a MaxVol active set on its training neighbourhoods when grade = gamma);
            `train/m{m}/done.json` (validation and test errors) marks a finished member.
2. explore  MD (ASE Langevin NVT at strained cells, or NPT with `pressures`; or LAMMPS) from seed
            structures over the grid temperatures × strains|pressures with the committee as the
            calculator; a snapshot every `every` steps with its grade (γ = max per-atom extrapolation
            grade, or the max per-atom force deviation of the committee); a run halts when the grade
            reaches `*_break`. `explore/run_{r}.xyz` + `run_{r}.json` per run.
3. select   candidates with grade in the trust window [lo, hi), D-optimal batch (greedy MaxVol swaps
            into model 0's active set of the training neighbourhoods; in deviation mode the batch is
            filled up by decreasing deviation), at most `max_labels`. `select/selected.xyz`,
            `select/done.json`. Converged (the loop stops) when at most `stop_fraction` of the
            snapshots reach `lo` and no run halted. strategy `random`: uniform among all snapshots
            (the baseline of benchmarks/bench_al.py).
4. label    the oracle (any ASE calculator, {"class": "module:Name", "kwargs": {...}}, default EMT)
            on each selected structure; each result is its own file `label/{j}.xyz` (renamed into
            place when complete) or `label/{j}.failed.json` (exception or non-finite result: recorded
            with the error, the loop goes on); `label/labels.xyz` + `label/done.json` at the end.

Killing the process at any moment and running again resumes: finished stages and files are kept,
a training run continues from its last checkpoint (bit-identical, see mlip.train.trainer), an MD run
or a label that did not finish is redone from its start with the same seed, so no label is lost,
duplicated or computed twice and the labelled set equals that of an uninterrupted run. The
configuration is saved in OUT/al_config.yaml; a re-run with a different one is refused (except
`iterations`). Progress is printed and logged to OUT/al.log; OUT/summary.csv has one row per
iteration (labels, grade statistics, errors); OUT/model*.pt are the latest trained models.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import signal
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

DEFAULTS: Dict[str, Any] = {
    "output": "runs/al",
    "seed": 1,
    "threads": 1,
    "iterations": 10,
    "max_labels_total": None,
    "init": {"data": None, "generate": None, "format": None, "type_map": None},
    "validation": None,  # files: validation set of every training run (default: none, errors on training set)
    "test": None,  # files: independent test set reported in the table
    "train": {},  # an `mlip train` configuration (data/output/seed/threads are set by the loop)
    "first_steps": None,  # training steps of iteration 0 (from scratch); default train.training.steps
    "committee": 1,
    "grade": "gamma",  # gamma | deviation
    "explore": {
        "engine": "ase",  # ase | lammps
        "seeds": None,  # structure files; default: the initial configurations
        "supercell": None,  # repeat the seeds, e.g. [2, 2, 2]
        "temperatures": [300.0],
        "strains": [0.0],  # isotropic linear strains of the seed cell
        "pressures": None,  # bar: NPT (ASE NPTBerendsen / LAMMPS fix npt) instead of NVT at fixed strains
        "steps": 500,
        "timestep": 2.0,  # fs
        "every": 10,  # a candidate snapshot every this many steps
        "friction": 0.02,  # Langevin, 1/fs
        "runs": None,  # MD runs per iteration drawn from the grid; None = the whole grid
    },
    "select": {
        "strategy": "dopt",  # dopt | random
        "gamma_lo": 2.0, "gamma_hi": 50.0, "gamma_break": None,
        "deviation_lo": 0.05, "deviation_hi": 0.5, "deviation_break": None,
        "max_labels": 20,
        "stop_fraction": 0.0,
    },
    "oracle": {"class": "ase.calculators.emt:EMT", "kwargs": {}},
}
FREE = {"train", "oracle", "init"}
SUMMARY_FIELDS = ["iteration", "train_frames", "runs", "halted", "snapshots", "grade_max", "grade_median",
                  "frac_ge_lo", "frac_ge_hi", "selected", "labelled", "failed", "val_force_rmse",
                  "test_energy_rmse", "test_force_rmse", "seconds"]


# ---------------------------------------------------------------------------------------- config
def _merge(base: Dict[str, Any], over: Dict[str, Any], path: str = "") -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        where = f"{path}.{k}" if path else k
        if k not in base:
            raise ValueError(f"unknown active-learning configuration key '{where}' (known: {sorted(base)})")
        if isinstance(base[k], dict) and k not in FREE:
            if not isinstance(v, dict):
                raise ValueError(f"configuration key '{where}' must be a mapping, got {v!r}")
            out[k] = _merge(base[k], v, where)
        elif k in FREE and isinstance(base[k], dict) and k == "init":
            out[k] = {**base[k], **(v or {})}
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_al_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Defaults ← YAML ← overrides; relative file paths resolved against the YAML's folder."""
    raw: Dict[str, Any] = {}
    base_dir = os.getcwd()
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"configuration file '{path}' does not exist")
        with open(path) as fh:
            try:
                raw = yaml.safe_load(fh) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"'{path}' is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"'{path}': the configuration must be a mapping")
        base_dir = os.path.dirname(os.path.abspath(path))
    cfg = _merge(DEFAULTS, raw)
    if overrides:
        cfg = _merge(cfg, overrides)

    def absolute(v):
        if v is None:
            return None
        v = [v] if isinstance(v, str) else list(v)
        return [p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p)) for p in v]

    cfg["init"]["data"] = absolute(cfg["init"]["data"])
    cfg["validation"] = absolute(cfg["validation"])
    cfg["test"] = absolute(cfg["test"])
    cfg["explore"]["seeds"] = absolute(cfg["explore"]["seeds"])
    if not os.path.isabs(cfg["output"]):
        cfg["output"] = os.path.normpath(os.path.join(os.getcwd(), cfg["output"]))
    check_config(cfg)
    return cfg


def check_config(cfg: Dict[str, Any]) -> None:
    if cfg["grade"] not in ("gamma", "deviation"):
        raise ValueError(f"grade must be 'gamma' or 'deviation', got {cfg['grade']!r}")
    if int(cfg["committee"]) < 1:
        raise ValueError(f"committee must be >= 1, got {cfg['committee']}")
    if cfg["grade"] == "deviation" and int(cfg["committee"]) < 2:
        raise ValueError("grade 'deviation' needs committee >= 2 models")
    s = cfg["select"]
    if s["strategy"] not in ("dopt", "random"):
        raise ValueError(f"select.strategy must be 'dopt' or 'random', got {s['strategy']!r}")
    lo, hi = window(cfg)[:2]
    if not lo < hi:
        raise ValueError(f"the selection window needs lo < hi, got [{lo}, {hi})")
    if cfg["grade"] == "gamma" and lo < 1.0:
        raise ValueError(f"select.gamma_lo must be >= 1 (γ <= 1 is interpolation), got {lo}")
    e = cfg["explore"]
    if e["engine"] not in ("ase", "lammps"):
        raise ValueError(f"explore.engine must be 'ase' or 'lammps', got {e['engine']!r}")
    if int(e["every"]) < 1 or int(e["steps"]) < 1:
        raise ValueError("explore.steps and explore.every must be >= 1")
    if not cfg["init"]["data"] and not cfg["init"]["generate"]:
        raise ValueError("init.data (labelled files) or init.generate is required")
    if "family" not in (cfg["train"].get("model") or {}):
        raise ValueError("train.model.family is required (deepmd, nequip, mtp)")


def window(cfg: Dict[str, Any]) -> Tuple[float, float, float]:
    s = cfg["select"]
    key = "gamma" if cfg["grade"] == "gamma" else "deviation"
    lo, hi = float(s[f"{key}_lo"]), float(s[f"{key}_hi"])
    brk = s[f"{key}_break"]
    return lo, hi, float(brk) if brk is not None else hi


# ---------------------------------------------------------------------------------------- files
def _atomic_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_json(path: str, obj: Any) -> None:
    _atomic_text(path, json.dumps(obj, indent=1, default=float))


def _read_json(path: str) -> Optional[Any]:
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _atomic_atoms(path: str, images: Sequence[Any]) -> None:
    import ase.io

    tmp = f"{path}.tmp{os.getpid()}.xyz"
    ase.io.write(tmp, list(images), format="extxyz")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_atoms(path: str) -> List[Any]:
    import ase.io

    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return []
    return list(ase.io.read(path, ":", format="extxyz"))


def _bare(atoms, info: Optional[Dict[str, Any]] = None):
    from ase import Atoms

    a = Atoms(atoms.get_chemical_symbols(), positions=atoms.get_positions(), cell=atoms.cell[:], pbc=atoms.pbc)
    a.info.update(info or {})
    return a


class _KillSwitch:
    """Test hook (MLIP_AL_TEST_KILL="stage:iteration:n"): SIGKILL this process at the n-th event of
    that stage (train: checkpoint written; explore: MD step; label: oracle call begins)."""

    def __init__(self) -> None:
        spec = os.environ.get("MLIP_AL_TEST_KILL", "")
        self.target = None
        if spec:
            stage, it, n = spec.split(":")
            self.target = (stage, int(it), int(n))
        self.count = 0

    def tick(self, stage: str, iteration: int) -> None:
        if self.target is None or self.target[:2] != (stage, iteration):
            return
        self.count += 1
        if self.count >= self.target[2]:
            os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------- loop
class ActiveLearning:
    def __init__(self, cfg: Dict[str, Any], log: bool = True) -> None:
        self.cfg = cfg
        self.out = cfg["output"]
        self.verbose = log
        self.kill = _KillSwitch()
        os.makedirs(self.out, exist_ok=True)
        self._check_saved_config()
        import torch

        torch.set_num_threads(int(cfg["threads"] or 1))
        self.lo, self.hi, self.brk = window(cfg)
        self._init_frames: Optional[List[Any]] = None
        self._test_frames: Optional[List[Any]] = None

    # ------------------------------------------------------------------ bookkeeping
    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if self.verbose:
            print(line, flush=True)
        with open(os.path.join(self.out, "al.log"), "a") as fh:
            fh.write(line + "\n")

    def _check_saved_config(self) -> None:
        path = os.path.join(self.out, "al_config.yaml")
        mine = {k: v for k, v in self.cfg.items() if k not in ("iterations", "output")}
        if os.path.isfile(path):
            with open(path) as fh:
                saved = yaml.safe_load(fh)
            saved = {k: v for k, v in saved.items() if k not in ("iterations", "output")}
            if json.dumps(saved, sort_keys=True, default=str) != json.dumps(mine, sort_keys=True, default=str):
                diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
                raise ValueError(f"'{self.out}' holds an active-learning run with a different configuration "
                                 f"(sections {diff} differ): use another output directory")
        else:
            _atomic_text(path, yaml.safe_dump(self.cfg, sort_keys=False))

    def it_dir(self, k: int, *parts: str) -> str:
        return os.path.join(self.out, f"iter_{k:03d}", *parts)

    # ------------------------------------------------------------------ data
    def init_path(self) -> str:
        path = os.path.join(self.out, "init.xyz")
        if not os.path.isfile(path):
            from mlip.data import read_frames

            icfg = self.cfg["init"]
            if icfg["data"]:
                frames = []
                for p in icfg["data"]:
                    frames.extend(read_frames(p, fmt=icfg.get("format"), type_map=icfg.get("type_map")))
            else:
                from mlip.datagen import generate_frames

                frames = generate_frames(**icfg["generate"], seed=int(self.cfg["seed"]))
            _atomic_atoms(path, [fr.to_atoms() for fr in frames])
            self.log(f"initial data: {len(frames)} labelled configurations -> {path}")
        return path

    def train_files(self, k: int) -> List[str]:
        files = [self.init_path()]
        for j in range(k):
            p = self.it_dir(j, "label", "labels.xyz")
            if os.path.isfile(p) and os.path.getsize(p) > 0:
                files.append(p)
        return files

    def species(self) -> List[str]:
        from mlip.data import read_frames

        if self._init_frames is None:
            self._init_frames = read_frames(self.init_path())
        sp = self.cfg["train"].get("model", {}).get("species")
        if sp:
            return list(sp)
        seen = sorted({s for fr in self._init_frames for s in fr.symbols})
        return seen

    def n_labels_so_far(self, k: int) -> int:
        n = 0
        for j in range(k):
            d = _read_json(self.it_dir(j, "label", "done.json"))
            if d:
                n += int(d["labelled"])
        return n

    # ------------------------------------------------------------------ stage 1: train
    def train_config(self, k: int, m: int) -> Dict[str, Any]:
        from mlip.train.config import load_config

        t = copy.deepcopy(self.cfg["train"])
        t.setdefault("model", {})["species"] = self.species()
        t["output"] = self.it_dir(k, "train", f"m{m}")
        t["seed"] = int(self.cfg["seed"]) + 1000 * m
        t["threads"] = int(self.cfg["threads"] or 1)
        data = dict(t.get("data") or {})
        data.update(train=self.train_files(k), validation=self.cfg["validation"], generate=None)
        if not self.cfg["validation"]:
            data["val_fraction"] = 0.0  # every label is for training; errors in the table are on the test set
        t["data"] = data
        tr = dict(t.get("training") or {})
        tr["progress"] = False
        if k == 0 and self.cfg["first_steps"]:
            tr["steps"] = int(self.cfg["first_steps"])
        tr.pop("max_time", None)
        tr["schedule_by_time"] = False  # resumable bit for bit
        t["training"] = tr
        return load_config(None, t)

    def stage_train(self, k: int) -> List[str]:
        import torch

        from mlip.export import export_model
        from mlip.train.trainer import EMA, Trainer, load_checkpoint_model

        paths = []
        for m in range(int(self.cfg["committee"])):
            mdir = self.it_dir(k, "train", f"m{m}")
            model_path = self.it_dir(k, "train", f"model_{m}.pt")
            paths.append(model_path)
            done = os.path.join(mdir, "done.json")
            if os.path.isfile(done):
                continue
            t0 = time.perf_counter()
            cfg = self.train_config(k, m)
            last = os.path.join(mdir, "checkpoints", "last.pt")
            resume = os.path.isfile(last)
            trainer = Trainer(cfg, resume=resume, overwrite=not resume)
            if not resume and k > 0:  # warm start from the previous iteration's member
                prev = self.it_dir(k - 1, "train", f"m{m}", "checkpoints", "last.pt")
                model = load_checkpoint_model(prev).to(trainer.dtype).train()
                for p in model.parameters():
                    p.requires_grad_(True)
                ocfg = cfg["optimizer"]
                trainer.model = model
                trainer.optimizer = torch.optim.Adam(model.parameters(), lr=ocfg["lr"]["start"],
                                                     weight_decay=float(ocfg.get("weight_decay") or 0.0),
                                                     fused=True)
                trainer.ema = EMA(model, ocfg["ema"]) if ocfg["ema"] else None
            self.log(f"iteration {k}: train model {m} on {len(trainer.train_frames)} configurations "
                     f"({'resumed at step ' + str(trainer.step) if resume else ('warm start' if k else 'from scratch')})")
            save = trainer.save_checkpoint

            def save_and_tick(name: str, _save=save) -> str:
                out = _save(name)
                if name == "last.pt":
                    self.kill.tick("train", k)
                return out

            trainer.save_checkpoint = save_and_tick
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                summary = trainer.run()
            model = load_checkpoint_model(last)
            aset = None
            if self.cfg["grade"] == "gamma" and m == 0:
                from mlip.active.nn_grade import build_active_set

                aset = build_active_set(model, trainer.train_frames)
            export_model(model, model_path, dtype="float64", active_set=aset)
            info: Dict[str, Any] = {"steps": summary["steps"], "validation": summary["validation"],
                                    "train_frames": len(trainer.train_frames),
                                    "seconds": time.perf_counter() - t0}
            if aset is not None:
                info["active_set_rank"] = aset.rank
            if self.cfg["test"] and m == 0:
                info["test"] = self.test_errors(model)
            _atomic_json(done, info)
            err = info.get("test") or info["validation"]
            self.log(f"iteration {k}: model {m} trained ({summary['steps']} steps, {info['seconds']:.0f} s); "
                     f"{'test' if 'test' in info else 'train-set'} errors: E {err.get('energy_rmse', float('nan'))*1e3:.2f} "
                     f"meV/atom, F {err.get('force_rmse', float('nan')):.4f} eV/Å")
        return paths

    def test_errors(self, model) -> Dict[str, float]:
        """Energy (per atom) and force errors of `model` on the independent test set."""
        from mlip.graph import build_graphs
        from mlip.active.nn_grade import model_dtype
        from mlip.train.trainer import evaluate_graphs, load_frames

        if self._test_frames is None:
            self._test_frames = load_frames(self.cfg["test"], {})
        graphs = build_graphs(self._test_frames, model.species, model.cutoff, model_dtype(model))
        s = evaluate_graphs(model, graphs)
        return {k: s[k] for k in ("energy_rmse", "energy_mae", "force_rmse", "force_mae", "n_frames") if k in s}

    # ------------------------------------------------------------------ stage 2: explore
    def grid(self, k: int) -> List[Tuple[int, float, float, Optional[float]]]:
        e = self.cfg["explore"]
        seeds = self.seed_structures()
        strains = list(e["strains"] or [0.0])
        pressures = list(e["pressures"]) if e["pressures"] else [None]
        full = [(s, float(T), float(eps), p) for s in range(len(seeds)) for T in e["temperatures"]
                for eps in strains for p in pressures]
        if e["runs"] is None or int(e["runs"]) >= len(full):
            return full
        rng = np.random.default_rng([int(self.cfg["seed"]), 7, k])
        pick = rng.choice(len(full), int(e["runs"]), replace=False)
        return [full[i] for i in sorted(pick)]

    def seed_structures(self) -> List[Any]:
        e = self.cfg["explore"]
        if e["seeds"]:
            from mlip.data import read_frames

            frames = []
            for p in e["seeds"]:
                frames.extend(read_frames(p))
            atoms = [fr.to_atoms() for fr in frames]
        else:
            atoms = _read_atoms(self.init_path())
        atoms = [_bare(a) for a in atoms]
        if e["supercell"]:
            atoms = [a.repeat(tuple(int(x) for x in e["supercell"])) for a in atoms]
        return atoms

    def grade_of(self, results: Dict[str, Any]) -> float:
        if self.cfg["grade"] == "gamma":
            return float(results.get("gamma", math.inf))
        return float(results.get("max_force_deviation", math.inf))

    def stage_explore(self, k: int, models: List[str]) -> Dict[str, Any]:
        d = self.it_dir(k, "explore")
        os.makedirs(d, exist_ok=True)
        done = os.path.join(d, "done.json")
        if os.path.isfile(done):
            return _read_json(done)
        grid = self.grid(k)
        seeds = self.seed_structures()
        todo = [r for r in range(len(grid)) if not os.path.isfile(os.path.join(d, f"run_{r:03d}.json"))]
        self.log(f"iteration {k}: explore {len(grid)} MD runs ({len(grid) - len(todo)} done before), "
                 f"{self.cfg['explore']['engine']}, grade {self.cfg['grade']} (break {self.brk:g})")
        calc = None
        for r in todo:
            s, T, eps, p = grid[r]
            if self.cfg["explore"]["engine"] == "lammps":
                snaps, info = self.md_lammps(k, r, seeds[s], T, eps, p, models)
            else:
                if calc is None:
                    from mlip.calculator import MLIPCalculator

                    calc = MLIPCalculator(models if self.cfg["committee"] > 1 else models[:1])
                snaps, info = self.md_ase(k, r, seeds[s], T, eps, p, calc)
            info.update(seed=s, temperature=T, strain=eps, pressure=p)
            _atomic_atoms(os.path.join(d, f"run_{r:03d}.xyz"), snaps)
            _atomic_json(os.path.join(d, f"run_{r:03d}.json"), info)
            self.log(f"  run {r}: seed {s} T {T:g} K strain {eps:+g}{'' if p is None else f' P {p:g} bar'}: "
                     f"{info['steps']} steps, max grade {info['max_grade']:.3g}"
                     f"{' HALTED' if info['halted'] else ''}{' (' + info['error'] + ')' if info.get('error') else ''}")
        runs = [_read_json(os.path.join(d, f"run_{r:03d}.json")) for r in range(len(grid))]
        summary = {"runs": len(runs), "halted": sum(bool(x["halted"]) for x in runs),
                   "max_grade": max((x["max_grade"] for x in runs), default=0.0)}
        _atomic_json(done, summary)
        return summary

    def _md_rng(self, k: int, r: int) -> np.random.Generator:
        return np.random.default_rng([int(self.cfg["seed"]), 11, k, r])

    def md_ase(self, k: int, r: int, seed_atoms, T: float, eps: float, p: Optional[float], calc
               ) -> Tuple[List[Any], Dict[str, Any]]:
        from ase import units
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        e = self.cfg["explore"]
        rng = self._md_rng(k, r)
        atoms = _bare(seed_atoms)
        if eps:
            atoms.set_cell(atoms.cell[:] * (1.0 + eps), scale_atoms=True)
        atoms.calc = calc
        MaxwellBoltzmannDistribution(atoms, temperature_K=T, rng=rng)
        Stationary(atoms)
        dt = float(e["timestep"]) * units.fs
        if p is None:
            from ase.constraints import FixCom

            atoms.set_constraint(FixCom())
            dyn = Langevin(atoms, dt, temperature_K=T, friction=float(e["friction"]) / units.fs, rng=rng,
                           fixcm=False)
        else:
            from ase.md.nptberendsen import NPTBerendsen

            dyn = NPTBerendsen(atoms, dt, temperature_K=T, pressure_au=float(p) * units.bar,
                               taut=100 * units.fs, taup=500 * units.fs, compressibility_au=1e-6 / units.bar)
        every = int(e["every"])
        snaps: List[Any] = []
        grades: List[float] = []
        halted, error, step = False, None, 0
        last: Optional[Tuple[int, float, Any]] = None  # the previous step, if unsampled and in the window
        try:
            for step in range(1, int(e["steps"]) + 1):
                dyn.run(1)
                self.kill.tick("explore", k)
                g = self.grade_of(calc.results)
                if not np.isfinite(g):
                    g = math.inf
                if g >= self.brk and last is not None:
                    # halting: the last configuration before the break is the most informative one
                    # still inside the trust window (snapshots every `every` steps may have missed it)
                    snaps.append(_bare(last[2], {"al_id": f"{k}:{r}:{last[0]}", "grade": last[1],
                                                 "temperature": T, "strain": eps, "step": last[0]}))
                    grades.append(last[1])
                if step % every == 0 or g >= self.brk:
                    snaps.append(_bare(atoms, {"al_id": f"{k}:{r}:{step}", "grade": g, "temperature": T,
                                               "strain": eps, "step": step}))
                    grades.append(g)
                    last = None
                elif self.lo <= g < self.hi:
                    last = (step, g, _bare(atoms))
                else:
                    last = None
                if g >= self.brk:
                    halted = True
                    break
        except Exception as exc:  # unphysical geometry (atoms on top of each other, ...): halt the run
            halted, error = True, f"{type(exc).__name__}: {exc}"
        info = {"steps": step, "halted": halted, "snapshots": len(snaps),
                "max_grade": float(max(grades)) if grades else (math.inf if halted else 0.0)}
        if error:
            info["error"] = error
        return snaps, info

    def md_lammps(self, k: int, r: int, seed_atoms, T: float, eps: float, p: Optional[float],
                  models: List[str]) -> Tuple[List[Any], Dict[str, Any]]:
        """LAMMPS MD driven by model 0 (`pair_style mlip`); snapshots dumped every `every` steps are
        graded afterwards with the ASE calculator (γ / committee deviation, same engine), and the
        trajectory is cut at the first snapshot reaching the break threshold."""
        from mlip.calculator import MLIPCalculator
        from mlip.lammps_support import run_lmp

        e = self.cfg["explore"]
        d = self.it_dir(k, "explore", f"lmp_{r:03d}")
        os.makedirs(d, exist_ok=True)
        atoms = _bare(seed_atoms)
        if eps:
            atoms.set_cell(atoms.cell[:] * (1.0 + eps), scale_atoms=True)
        import ase.io

        species = self.species()
        ase.io.write(os.path.join(d, "seed.data"), atoms, format="lammps-data", specorder=species,
                     masses=True)
        rng = self._md_rng(k, r)
        vseed, lseed = (int(x) for x in rng.integers(1, 900000000, 2))
        every = int(e["every"])
        ens = (f"fix 1 all npt temp {T} {T} $(100*dt) iso {p} {p} $(1000*dt)" if p is not None else
               f"fix 1 all nve\nfix 2 all langevin {T} {T} {1.0 / float(e['friction']) / 1000.0} {lseed} zero yes")
        script = f"""units metal
atom_style atomic
boundary p p p
read_data seed.data
pair_style mlip {os.path.abspath(models[0])}
pair_coeff * * {' '.join(species)}
timestep {float(e['timestep']) / 1000.0}
velocity all create {T} {vseed} dist gaussian mom yes rot no
{ens}
dump 1 all custom {every} traj.dump id type x y z
dump_modify 1 sort id
thermo {every}
run {int(e['steps'])}
"""
        run_lmp(script, d, timeout=3600)
        traj = ase.io.read(os.path.join(d, "traj.dump"), ":", format="lammps-dump-text")
        calc = MLIPCalculator(models if self.cfg["committee"] > 1 else models[:1])
        snaps, grades = [], []
        halted, step = False, 0
        for n, a in enumerate(traj[1:], start=1):
            step = n * every
            a = _bare(a)
            a.set_chemical_symbols([species[z - 1] for z in traj[n].get_atomic_numbers()])
            a.calc = calc
            a.get_potential_energy()
            g = self.grade_of(calc.results)
            snaps.append(_bare(a, {"al_id": f"{k}:{r}:{step}", "grade": g, "temperature": T, "strain": eps,
                                   "step": step}))
            grades.append(g)
            if g >= self.brk:
                halted = True
                break
        return snaps, {"steps": step, "halted": halted, "snapshots": len(snaps),
                       "max_grade": float(max(grades)) if grades else 0.0}

    # ------------------------------------------------------------------ stage 3: select
    def candidates(self, k: int) -> List[Any]:
        d = self.it_dir(k, "explore")
        out = []
        for r in range(len(self.grid(k))):
            out.extend(_read_atoms(os.path.join(d, f"run_{r:03d}.xyz")))
        return out

    def stage_select(self, k: int, models: List[str]) -> Dict[str, Any]:
        d = self.it_dir(k, "select")
        os.makedirs(d, exist_ok=True)
        done = os.path.join(d, "done.json")
        if os.path.isfile(done):
            return _read_json(done)
        cands = self.candidates(k)
        g = np.array([float(a.info.get("grade", math.inf)) for a in cands])
        runs = [_read_json(os.path.join(self.it_dir(k, "explore"), f"run_{r:03d}.json")) for r in range(len(self.grid(k)))]
        halted = sum(bool(x["halted"]) for x in runs)
        n = len(cands)
        stats = {"snapshots": n, "runs": len(runs), "halted": halted,
                 "grade_max": float(g.max()) if n else 0.0, "grade_median": float(np.median(g)) if n else 0.0,
                 "frac_ge_lo": float(np.mean(g >= self.lo)) if n else 0.0,
                 "frac_ge_hi": float(np.mean(g >= self.hi)) if n else 0.0}
        s = self.cfg["select"]
        cap = int(s["max_labels"])
        if self.cfg["max_labels_total"] is not None:
            cap = max(0, min(cap, int(self.cfg["max_labels_total"]) - self.n_labels_so_far(k)))
        converged = stats["frac_ge_lo"] <= float(s["stop_fraction"]) and halted == 0
        chosen: List[int] = []
        if s["strategy"] == "random":
            converged = False
            if n and cap:
                rng = np.random.default_rng([int(self.cfg["seed"]), 13, k])
                chosen = sorted(int(i) for i in rng.choice(n, min(cap, n), replace=False))
        elif not converged and cap:
            inwin = [i for i in range(n) if self.lo <= g[i] < self.hi]
            chosen = self.dopt(k, models, [cands[i] for i in inwin], g[inwin], cap)
            chosen = sorted(inwin[i] for i in chosen)
        sel = [_bare(cands[i], dict(cands[i].info)) for i in chosen]
        _atomic_atoms(os.path.join(d, "selected.xyz"), sel)
        stats.update(selected=len(chosen), in_window=int(np.sum((g >= self.lo) & (g < self.hi))),
                     converged=bool(converged), ids=[cands[i].info["al_id"] for i in chosen])
        _atomic_json(done, stats)
        self.log(f"iteration {k}: {n} snapshots from {len(runs)} runs ({halted} halted); grade max "
                 f"{stats['grade_max']:.3g}, median {stats['grade_median']:.3g}; {100 * stats['frac_ge_lo']:.1f}% >= "
                 f"{self.lo:g}, {stats['in_window']} in [{self.lo:g}, {self.hi:g}); selected {len(chosen)}"
                 f"{' -- converged' if converged else ''}")
        return stats

    def dopt(self, k: int, models: List[str], cands: List[Any], grades: np.ndarray, cap: int) -> List[int]:
        """D-optimal batch among in-window candidates: greedy MaxVol swaps into model 0's active set of
        its training neighbourhoods (then, with a committee deviation, filled by decreasing deviation)."""
        if not cands:
            return []
        from mlip.active.maxvol import ActiveSet
        from mlip.active.nn_grade import build_active_set, select_candidates
        from mlip.data import Frame, read_frames
        from mlip.export import read_metadata
        from mlip.train.trainer import load_checkpoint_model

        model = load_checkpoint_model(self.it_dir(k, "train", "m0", "checkpoints", "last.pt"))
        meta = read_metadata(models[0]).get("active_set", {}).get("nbh")
        if meta:
            aset = ActiveSet.from_dict(meta)
        else:
            train = []
            for p in self.train_files(k):
                train.extend(read_frames(p))
            aset = build_active_set(model, train)
        frames = [Frame.from_atoms(_bare(a)) for a in cands]
        chosen = select_candidates(aset, model, frames, threshold=1.0, max_select=cap)
        if self.cfg["grade"] == "deviation" and len(chosen) < cap:
            rest = [i for i in np.argsort(-grades, kind="stable") if i not in set(chosen)]
            chosen = sorted(chosen + [int(i) for i in rest[: cap - len(chosen)]])
        return chosen

    # ------------------------------------------------------------------ stage 4: label
    def stage_label(self, k: int) -> Dict[str, Any]:
        from mlip.datagen import make_calculator

        d = self.it_dir(k, "label")
        os.makedirs(d, exist_ok=True)
        done = os.path.join(d, "done.json")
        if os.path.isfile(done):
            return _read_json(done)
        sel = _read_atoms(self.it_dir(k, "select", "selected.xyz"))
        todo = [j for j in range(len(sel)) if not os.path.isfile(os.path.join(d, f"{j:04d}.xyz"))
                and not os.path.isfile(os.path.join(d, f"{j:04d}.failed.json"))]
        self.log(f"iteration {k}: label {len(todo)} of {len(sel)} selected configurations with "
                 f"{self.cfg['oracle'].get('class', 'ase.calculators.emt:EMT')}")
        oracle = None
        for j in todo:
            self.kill.tick("label", k)
            atoms = _bare(sel[j], {"al_id": sel[j].info.get("al_id"), "al_index": j, "al_iteration": k})
            try:
                if oracle is None:
                    oracle = make_calculator(self.cfg["oracle"])
                atoms.calc = oracle
                e = atoms.get_potential_energy()
                f = atoms.get_forces()
                stress = atoms.get_stress() if atoms.pbc.all() else None
                bad = [name for name, v in (("energy", e), ("forces", f), ("stress", stress))
                       if v is not None and not np.all(np.isfinite(v))]
                if bad:
                    raise FloatingPointError(f"the oracle returned non-finite {', '.join(bad)}")
            except Exception as exc:
                oracle = None  # a calculator that failed may be in a bad state: make a new one
                msg = f"{type(exc).__name__}: {exc}"
                _atomic_json(os.path.join(d, f"{j:04d}.failed.json"),
                             {"index": j, "al_id": atoms.info["al_id"], "error": msg})
                self.log(f"  label {j} ({atoms.info['al_id']}) FAILED: {msg}")
                continue
            from ase.calculators.singlepoint import SinglePointCalculator

            out = _bare(atoms, dict(atoms.info))
            res = {"energy": float(e), "forces": np.array(f)}
            if stress is not None:
                res["stress"] = np.array(stress)
            out.calc = SinglePointCalculator(out, **res)
            _atomic_atoms(os.path.join(d, f"{j:04d}.xyz"), [out])
        labelled, failed = [], []
        for j in range(len(sel)):
            p = os.path.join(d, f"{j:04d}.xyz")
            if os.path.isfile(p):
                labelled.extend(_read_atoms(p))
            else:
                failed.append(_read_json(os.path.join(d, f"{j:04d}.failed.json")))
        _atomic_atoms(os.path.join(d, "labels.xyz"), labelled)
        info = {"selected": len(sel), "labelled": len(labelled), "failed": len(failed), "failures": failed}
        _atomic_json(done, info)
        self.log(f"iteration {k}: {len(labelled)} labelled, {len(failed)} failed")
        return info

    # ------------------------------------------------------------------ driver
    def iteration_row(self, k: int, seconds: float) -> Dict[str, Any]:
        tr = _read_json(self.it_dir(k, "train", "m0", "done.json")) or {}
        se = _read_json(self.it_dir(k, "select", "done.json")) or {}
        la = _read_json(self.it_dir(k, "label", "done.json")) or {}
        test = tr.get("test") or {}
        return {"iteration": k, "train_frames": tr.get("train_frames"), "runs": se.get("runs"),
                "halted": se.get("halted"), "snapshots": se.get("snapshots"), "grade_max": se.get("grade_max"),
                "grade_median": se.get("grade_median"), "frac_ge_lo": se.get("frac_ge_lo"),
                "frac_ge_hi": se.get("frac_ge_hi"), "selected": se.get("selected", 0),
                "labelled": la.get("labelled", 0), "failed": la.get("failed", 0),
                "val_force_rmse": (tr.get("validation") or {}).get("force_rmse"),
                "test_energy_rmse": test.get("energy_rmse"), "test_force_rmse": test.get("force_rmse"),
                "seconds": round(seconds, 1)}

    def write_summary(self, rows: List[Dict[str, Any]]) -> None:
        path = os.path.join(self.out, "summary.csv")
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow(r)
        os.replace(tmp, path)

    def run(self) -> List[Dict[str, Any]]:
        rows: List[Dict[str, Any]] = []
        times_path = os.path.join(self.out, "times.json")
        times = _read_json(times_path) or {}
        self.init_path()
        for k in range(int(self.cfg["iterations"])):
            t0 = time.perf_counter()
            finished = os.path.isfile(self.it_dir(k, "done.json"))
            models = self.stage_train(k)
            self._publish(models)
            self.stage_explore(k, models)
            sel = self.stage_select(k, models)
            if not sel["converged"] and sel["selected"]:
                self.stage_label(k)
            if not finished:
                times[str(k)] = times.get(str(k), 0.0) + time.perf_counter() - t0
                _atomic_json(times_path, times)
                _atomic_json(self.it_dir(k, "done.json"), {"iteration": k})
            rows.append(self.iteration_row(k, times.get(str(k), 0.0)))
            self.write_summary(rows)
            if sel["converged"]:
                self.log(f"converged at iteration {k}: at most {float(self.cfg['select']['stop_fraction']):.1%} "
                         f"of the exploration snapshots reached {self.lo:g}")
                break
            budget = self.cfg["max_labels_total"]
            last = k == int(self.cfg["iterations"]) - 1
            spent = budget is not None and self.n_labels_so_far(k + 1) >= int(budget)
            if last or spent:
                if spent:
                    self.log(f"label budget ({budget}) spent")
                labels = _read_json(self.it_dir(k, "label", "done.json")) or {}
                if labels.get("labelled"):  # the last labels are not wasted: a final training
                    self.log(f"final training on the labels of iteration {k}")
                    models = self.stage_train(k + 1)
                    self._publish(models)
                    rows.append(self.iteration_row(k + 1, 0.0))
                    self.write_summary(rows)
                break
        print(format_table(rows), flush=True)
        return rows

    def _publish(self, models: List[str]) -> None:
        import shutil

        for m, p in enumerate(models):
            dst = os.path.join(self.out, "model.pt" if m == 0 else f"model_{m}.pt")
            tmp = dst + ".tmp"
            shutil.copyfile(p, tmp)
            os.replace(tmp, dst)


def format_table(rows: List[Dict[str, Any]]) -> str:
    head = (f"{'iter':>4} {'train':>6} {'runs':>5} {'halt':>5} {'snaps':>6} {'grade max':>10} {'median':>8} "
            f"{'>=lo':>6} {'sel':>4} {'lab':>4} {'fail':>4} {'test E meV/at':>13} {'test F eV/Å':>12} {'s':>6}")
    lines = [head, "-" * len(head)]

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) and v is not None else "-"

    for r in rows:
        te = r.get("test_energy_rmse")
        lines.append(f"{r['iteration']:>4} {f(r['train_frames'], 'd'):>6} {f(r['runs'], 'd'):>5} "
                     f"{f(r['halted'], 'd'):>5} {f(r['snapshots'], 'd'):>6} {f(r['grade_max'], '.3g'):>10} "
                     f"{f(r['grade_median'], '.3g'):>8} {f(r['frac_ge_lo'], '.1%'):>6} {r['selected']:>4} "
                     f"{r['labelled']:>4} {r['failed']:>4} {f(te * 1e3 if te is not None else None, '.2f'):>13} "
                     f"{f(r.get('test_force_rmse'), '.4f'):>12} {f(r['seconds'], '.0f'):>6}")
    return "\n".join(lines)


def run_loop(cfg: Dict[str, Any], log: bool = True) -> List[Dict[str, Any]]:
    return ActiveLearning(cfg, log=log).run()
