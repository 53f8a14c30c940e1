"""Training configuration: one YAML file reproduces a run.

Every section has defaults; unknown keys are errors that name the key (a typo in `pref_f` must not
silently train with the default).
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional

import yaml

DEFAULTS: Dict[str, Any] = {
    "seed": 1,
    "dtype": "float64",
    "threads": None,
    "output": "runs/mlip",
    "data": {
        "train": None,
        "validation": None,
        "val_fraction": 0.1,
        "type_map": None,
        "format": None,
        "generate": None,  # {kind: emt, ...}: make data with an ASE calculator when no files are given
    },
    "model": {"family": "deepmd"},
    "loss": {"energy": {"start": 0.02, "limit": 1.0}, "forces": {"start": 1000.0, "limit": 1.0},
             "virial": 0.0, "virial_per_atom": False},
    "optimizer": {
        "name": "adam",
        "lr": {"schedule": "exp", "start": 1e-3, "stop": 3.5e-8, "decay_steps": 5000},
        "clip_grad": None,
        "ema": None,
        "weight_decay": 0.0,
    },
    "training": {
        "steps": 1000,
        "batch_size": 1,
        "val_every": 100,
        "val_frames": None,
        "max_time": None,
        "schedule_by_time": False,
        "log_every": 10,
        "checkpoint_every": 100,
        "progress": True,
        "stat_frames": 20,
        "bias_refit_every": 100,  # steps; 0 = keep the initial energy reference
    },
    "export": {"dtype": None},
}

SECTIONS_FREE = {"model", "generate"}  # family-specific keys are checked by the model itself


def _merge(base: Dict[str, Any], over: Dict[str, Any], path: str) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        where = f"{path}.{k}" if path else k
        if k not in base:
            raise ValueError(f"unknown configuration key '{where}' (known: {sorted(base)})")
        if isinstance(base[k], dict) and k not in SECTIONS_FREE and k not in ("energy", "forces", "lr"):
            if not isinstance(v, dict):
                raise ValueError(f"configuration key '{where}' must be a mapping, got {v!r}")
            out[k] = _merge(base[k], v, where)
        elif k == "lr" and isinstance(v, dict):
            out[k] = {**base[k], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Defaults ← YAML file ← overrides. Relative data paths are resolved against the YAML's folder."""
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
            raise ValueError(f"'{path}': the configuration must be a mapping of sections")
        base_dir = os.path.dirname(os.path.abspath(path))
    cfg = _merge(DEFAULTS, raw, "")
    if overrides:
        cfg = _merge(cfg, overrides, "")
    data = cfg["data"]
    for key in ("train", "validation"):
        v = data[key]
        if isinstance(v, str):
            v = [v]
        if v is not None:
            data[key] = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p)) for p in v]
    if cfg["dtype"] not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {cfg['dtype']!r}")
    if "family" not in cfg["model"]:
        raise ValueError("model.family is required (deepmd, mtp, nequip)")
    return cfg
