"""Training configuration: one YAML file reproduces a run.

Every section has defaults; unknown keys are errors that name the key (a typo in `pref_f` must not
silently train with the default).
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Iterable, Optional, Tuple

import yaml

DEFAULTS: Dict[str, Any] = {
    "seed": 1,
    "dtype": "float64",
    "threads": None,
    "device": "cpu",  # cpu | cuda | auto (mlip.train.distributed.resolve_device)
    "output": "runs/mlip",
    "data": {
        "train": None,
        "validation": None,
        "val_fraction": 0.1,
        "test": None,  # files evaluated once at the end (summary.json), never used for fitting
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
        # varpro / lbfgs (full batch, mlip.train.varpro; null = that optimiser's default)
        "max_iter": None,
        "history": None,
        "patience": None,
        "max_time": None,
        "min_rel_improvement": None,
        "max_edges": None,
        "cycle_iter": None,
        "precondition": None,
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
        "stat_frames": 20,  # frames for the model's input statistics; null = all training frames
        "bias_refit_every": 100,  # steps; 0 = keep the initial energy reference
    },
    "export": {"dtype": None},
}

OPTIMIZERS = ("adam", "varpro", "lbfgs")  # adam: mini-batch (trainer.py); varpro, lbfgs: full batch (varpro.py)
SECTIONS_FREE = {"model", "generate"}  # family-specific keys are checked by the model itself


def merge_config(base: Dict[str, Any], over: Optional[Dict[str, Any]], path: str = "",
                 free: Iterable[str] = (), shallow: Iterable[str] = (),
                 what: str = "configuration") -> Dict[str, Any]:
    """`base` updated by `over`, recursively per section; a key not in `base` is an error naming its
    dotted path. Keys in `free` are replaced as a whole (their content is checked elsewhere), keys in
    `shallow` are updated one level deep ({**base, **over}). Shared by `mlip train` and `mlip al`."""
    free, shallow = set(free), set(shallow)
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        where = f"{path}.{k}" if path else k
        if k not in base:
            raise ValueError(f"unknown {what} key '{where}' (known: {sorted(base)})")
        if isinstance(base[k], dict) and k in shallow and (v is None or isinstance(v, dict)):
            out[k] = {**base[k], **copy.deepcopy(v or {})}
        elif isinstance(base[k], dict) and k not in free and k not in shallow:
            if not isinstance(v, dict):
                raise ValueError(f"{what} key '{where}' must be a mapping, got {v!r}")
            out[k] = merge_config(base[k], v, where, free, shallow, what)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _merge(base: Dict[str, Any], over: Dict[str, Any], path: str) -> Dict[str, Any]:
    return merge_config(base, over, path, free=SECTIONS_FREE | {"energy", "forces"}, shallow={"lr"})


def read_yaml_mapping(path: Optional[str]) -> Tuple[Dict[str, Any], str]:
    """(the YAML file's mapping, the folder relative paths in it are relative to); ({}, cwd) for no
    file. A missing file, invalid YAML or a non-mapping is one clear error naming the file."""
    if path is None:
        return {}, os.getcwd()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"configuration file '{path}' does not exist")
    with open(path) as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"'{path}' is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"'{path}': the configuration must be a mapping of sections")
    return raw, os.path.dirname(os.path.abspath(path))


def load_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Defaults ← YAML file ← overrides. Relative data paths and `model.init_from` are resolved against
    the YAML's folder."""
    raw, base_dir = read_yaml_mapping(path)
    cfg = _merge(DEFAULTS, raw, "")
    if overrides:  # --set model.level=8 changes one model key (the file's model section is replaced whole)
        cfg = merge_config(cfg, overrides, "", free=(SECTIONS_FREE - {"model"}) | {"energy", "forces"},
                           shallow={"lr", "model"})
    data = cfg["data"]
    for key in ("train", "validation", "test"):
        v = data[key]
        if isinstance(v, str):
            v = [v]
        if v is not None:
            data[key] = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p)) for p in v]
    init = cfg["model"].get("init_from")  # fine-tuning (mlip.train.finetune): resolved like the data
    if isinstance(init, str) and not os.path.isabs(init):
        cfg["model"]["init_from"] = os.path.normpath(os.path.join(base_dir, init))
    if cfg["dtype"] not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {cfg['dtype']!r}")
    if cfg["device"] not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be one of cpu, cuda, auto, got {cfg['device']!r}")
    if "family" not in cfg["model"]:
        raise ValueError("model.family is required (deepmd, mtp, nequip)")
    if cfg["optimizer"]["name"] not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {', '.join(OPTIMIZERS)}, got {cfg['optimizer']['name']!r}")
    return cfg
