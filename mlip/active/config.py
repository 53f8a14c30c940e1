"""The active-learning configuration (`mlip al CONFIG.yaml`): defaults, YAML merge, checks.

Defaults ← YAML ← overrides, read and merged by the same `read_yaml_mapping` / `merge_config` as the
training recipes (`mlip.train.config`): an unknown key is an error naming its dotted path, and every
number is checked against its rule (`RULES`, `mlip.checks`). `train` is an `mlip train` recipe
(checked here like `mlip train` checks it) and `oracle` a calculator spec; both are taken as a whole
from the file, while `--set train.model.rcut=4.5` (settings) changes one key in them. Relative file
paths are resolved against the YAML's folder.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from mlip.checks import (FINITE, NONNEG, NONNEG_INT, POSITIVE, POSITIVE_INT, Flag, ListOf, Number,
                         check_values, optional)
from mlip.train.config import load_config, merge_config, read_yaml_mapping

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
    "first_steps": None,  # iteration 0 (from scratch): training steps (Adam) or evaluations (varpro/lbfgs max_iter)
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
        "continue": False,  # start each run from its seed's last explored state (earlier iterations)
        "continue_halted": False,  # with continue: a halted run's seed goes on from its last snapshot below lo
        "burn_in": 0,  # steps of trajectory age (from the seed structure) whose snapshots are not candidates
    },
    "select": {
        "strategy": "dopt",  # dopt | random | information (mlip.active.information)
        "gamma_lo": 2.0, "gamma_hi": 50.0, "gamma_break": None,
        "deviation_lo": 0.05, "deviation_hi": 0.5, "deviation_break": None,
        "max_labels": 20,
        "stop_fraction": 0.0,
        "target": "training",  # information: a batch by log-det gain over the training rows | by variance reduction over the pool
        "leverage_lo": 2.0,  # information: informative at mean leverage >= this × the training rows' (0: every snapshot; the batch fills the budget)
    },
    "oracle": {"class": "ase.calculators.emt:EMT", "kwargs": {}},
    "label": {
        "executor": "local",  # local | process | dask (mlip.active.executors)
        "workers": 2,  # process / dask LocalCluster workers
        "address": None,  # dask: a running scheduler (e.g. from dask-jobqueue) instead of a LocalCluster
        "threads": 1,  # OpenMP/BLAS threads per worker (process, dask LocalCluster)
    },
}
FREE = {"train", "oracle"}  # taken as a whole (checked by `mlip train` / the calculator)
SHALLOW = {"init"}  # updated one level deep


RULES = {
    "seed": NONNEG_INT, "threads": optional(POSITIVE_INT), "iterations": POSITIVE_INT,
    "max_labels_total": optional(NONNEG_INT), "first_steps": optional(POSITIVE_INT), "committee": POSITIVE_INT,
    "explore.supercell": optional(ListOf(POSITIVE_INT, min_len=3)),
    "explore.temperatures": ListOf(NONNEG, single=True, min_len=1),
    "explore.strains": ListOf(Number(low=-1, low_open=True), single=True, min_len=1),
    "explore.pressures": optional(ListOf(FINITE, single=True, min_len=1)),
    "explore.steps": POSITIVE_INT, "explore.every": POSITIVE_INT, "explore.timestep": POSITIVE,
    "explore.friction": NONNEG, "explore.runs": optional(POSITIVE_INT), "explore.continue": Flag(),
    "explore.continue_halted": Flag(), "explore.burn_in": NONNEG_INT, "select.leverage_lo": NONNEG,
    "select.gamma_lo": POSITIVE, "select.gamma_hi": POSITIVE, "select.gamma_break": optional(POSITIVE),
    "select.deviation_lo": NONNEG, "select.deviation_hi": POSITIVE, "select.deviation_break": optional(POSITIVE),
    "select.max_labels": NONNEG_INT, "select.stop_fraction": Number(low=0, high=1),
    "label.workers": POSITIVE_INT, "label.threads": POSITIVE_INT,
}


def _merge(base: Dict[str, Any], over: Optional[Dict[str, Any]], patch: bool = False) -> Dict[str, Any]:
    return merge_config(base, over, free=FREE, shallow=SHALLOW, what="active-learning configuration", patch=patch)


def load_al_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None,
                   settings: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Defaults ← YAML ← overrides (merged like the file) ← settings (`mlip.train.config.parse_settings`:
    `--set`, one key each, also inside `train`); relative file paths resolved against the YAML's folder."""
    raw, base_dir = read_yaml_mapping(path)
    cfg = _merge(DEFAULTS, raw)
    if overrides:
        cfg = _merge(cfg, overrides)
    if settings:
        cfg = _merge(cfg, settings, patch=True)
    check_values(cfg, RULES)
    if not isinstance(cfg["train"], dict):
        raise ValueError(f"train: must be an `mlip train` recipe (a mapping), got {cfg['train']!r}")

    def absolute(v):
        if v is None:
            return None
        v = [v] if isinstance(v, str) else list(v)
        return [p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p)) for p in v]

    cfg["init"]["data"] = absolute(cfg["init"]["data"])
    cfg["validation"] = absolute(cfg["validation"])
    cfg["test"] = absolute(cfg["test"])
    cfg["explore"]["seeds"] = absolute(cfg["explore"]["seeds"])
    model = cfg["train"].get("model") or {}
    if isinstance(model.get("init_from"), str):  # iteration 0 fine-tunes this trained model
        model["init_from"] = absolute(model["init_from"])[0]
    if not os.path.isabs(cfg["output"]):
        cfg["output"] = os.path.normpath(os.path.join(os.getcwd(), cfg["output"]))
    check_config(cfg)
    return cfg


def check_config(cfg: Dict[str, Any]) -> None:
    """One clear error per inconsistent setting (before anything is trained)."""
    if cfg["grade"] not in ("gamma", "deviation"):
        raise ValueError(f"grade must be 'gamma' or 'deviation', got {cfg['grade']!r}")
    if int(cfg["committee"]) < 1:
        raise ValueError(f"committee must be >= 1, got {cfg['committee']}")
    if cfg["grade"] == "deviation" and int(cfg["committee"]) < 2:
        raise ValueError("grade 'deviation' needs committee >= 2 models")
    s = cfg["select"]
    if s["target"] not in ("training", "pool"):
        raise ValueError(f"select.target must be 'training' or 'pool', got {s['target']!r}")
    if s["strategy"] not in ("dopt", "random", "information"):
        raise ValueError(f"select.strategy must be 'dopt', 'random' or 'information', got {s['strategy']!r}")
    lo, hi = window(cfg)[:2]
    if not lo < hi:
        raise ValueError(f"the selection window needs lo < hi, got [{lo}, {hi})")
    if cfg["grade"] == "gamma" and lo < 1.0:
        raise ValueError(f"select.gamma_lo must be >= 1 (γ <= 1 is interpolation), got {lo}")
    if cfg["label"]["executor"] not in ("local", "process", "dask"):
        raise ValueError(f"label.executor must be one of local, process, dask, got {cfg['label']['executor']!r}")
    e = cfg["explore"]
    if e["engine"] not in ("ase", "lammps"):
        raise ValueError(f"explore.engine must be 'ase' or 'lammps', got {e['engine']!r}")
    if int(e["every"]) < 1 or int(e["steps"]) < 1:
        raise ValueError("explore.steps and explore.every must be >= 1")
    if not cfg["init"]["data"] and not cfg["init"]["generate"]:
        raise ValueError("init.data (labelled files) or init.generate is required")
    model = cfg["train"].get("model") or {}
    if "family" not in model:
        raise ValueError("train.model.family is required (deepmd, nequip, mtp)")
    try:  # the training recipe, checked as `mlip train` checks it (the loop sets data and output)
        load_config(None, {k: v for k, v in cfg["train"].items() if k != "output"})
    except ValueError as exc:
        raise ValueError(f"train.{exc}") from None


def window(cfg: Dict[str, Any]) -> Tuple[float, float, float]:
    """(lo, hi, break) of the trust window of the configured grade."""
    s = cfg["select"]
    key = "gamma" if cfg["grade"] == "gamma" else "deviation"
    lo, hi = float(s[f"{key}_lo"]), float(s[f"{key}_hi"])
    brk = s[f"{key}_break"]
    return lo, hi, float(brk) if brk is not None else hi
