"""Training configuration: one YAML file reproduces a run.

Every section has defaults; unknown keys are errors that name the key (a typo in `pref_f` must not
silently train with the default), and every value is checked against its rule (`RULES`, `mlip.checks`):
`training.steps: must be a positive integer, got -5`. The `model` section is checked against the
family's constructor (`model.rcutt: unknown key (did you mean rcut?)`), `data.generate` against
`mlip.datagen.generate_frames`.

`--set KEY=VALUE` (`parse_settings`) changes exactly one key, at any depth, also inside sections that
the file replaces as a whole (`model`, `data.generate`, `loss.energy`): `--set model.rcut=4.5` keeps the
rest of the recipe's `model` section.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Iterable, Optional, Tuple

import yaml

from mlip.checks import (FRACTION, NONNEG, NONNEG_INT, POSITIVE, POSITIVE_INT, Choice, Flag, ListOf,
                         Number, Text, check_call_keys, check_keys, check_values, did_you_mean, optional)
from mlip.data.dataset import FORMATS
from mlip.train.schedules import BASES, PLATEAU_DEFAULTS, SCHEDULES

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
             "virial": 0.0, "virial_per_atom": False, "huber": None},
    "optimizer": {
        "name": "adam",
        # exp | cosine | constant | plateau (+ base, factor, patience, threshold): mlip.train.schedules
        "lr": {"schedule": "exp", "start": 1e-3, "stop": 3.5e-8, "decay_steps": 5000},
        "clip_grad": None,
        "ema": None,
        "weight_decay": 0.0,
        # true: AdamW's decay, θ ← θ(1 − lr·wd) apart from the adaptive step (a regulariser whose
        # strength does not depend on the gradient's scale); false: Adam's L2 term added to the gradient
        "decoupled_weight_decay": False,
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
        "max_time": None,  # seconds of training (summed over resumed sittings)
        "schedule_by_time": False,  # with max_time: the schedule's progress is the budget fraction
        "log_every": 10,
        "checkpoint_every": 100,
        "progress": True,
        "stat_frames": 20,  # frames for the model's input statistics; null = all training frames
        "bias_refit_every": 100,  # steps; 0 = keep the initial energy reference
        "readout_refit": False,  # at the end: best.pt's linear readout solved exactly (mlip.train.refit)
    },
    "export": {"dtype": None},
}

OPTIMIZERS = ("adam", "varpro", "lbfgs")  # adam: mini-batch (trainer.py); varpro, lbfgs: full batch (varpro.py)
SECTIONS_FREE = {"model", "generate"}  # family-specific keys are checked by the model itself
LOSS_TERMS = {"energy", "forces", "virial"}  # a number or {start, limit}: replaced whole, or patched key by key
LOSS_FREE = LOSS_TERMS | {"huber"}  # loss.huber: {term: δ}, patched key by key as well


def merge_config(base: Dict[str, Any], over: Optional[Dict[str, Any]], path: str = "",
                 free: Iterable[str] = (), shallow: Iterable[str] = (),
                 what: str = "configuration", patch: bool = False) -> Dict[str, Any]:
    """`base` updated by `over`, recursively per section; a key not in `base` is an error naming its
    dotted path. Keys in `free` are replaced as a whole (their content is checked elsewhere), keys in
    `shallow` are updated one level deep ({**base, **over}). With `patch` (the `--set` overrides),
    `free` and `shallow` sections are updated key by key too, at any depth: only the keys that `over`
    names change. Shared by `mlip train` and `mlip al`."""
    free, shallow = set(free), set(shallow)
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        where = f"{path}.{k}" if path else k
        if k not in base:
            raise ValueError(f"{where}: unknown {what} key{did_you_mean(k, base)}")
        if patch and (k in free or k in shallow):
            if isinstance(v, dict) and (base[k] is None or isinstance(base[k], dict)):
                out[k] = _patch(base[k] or {}, v)
            elif isinstance(base[k], dict) and k in shallow:
                raise ValueError(f"{what} key '{where}' must be a mapping, got {v!r}")
            else:
                out[k] = copy.deepcopy(v)
        elif isinstance(base[k], dict) and k in shallow and (v is None or isinstance(v, dict)):
            out[k] = {**base[k], **copy.deepcopy(v or {})}
        elif isinstance(base[k], dict) and k not in free and k not in shallow:
            if not isinstance(v, dict):
                raise ValueError(f"{what} key '{where}' must be a mapping, got {v!r}")
            out[k] = merge_config(base[k], v, where, free, shallow, what, patch)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _patch(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """`base` with the keys of `over` set, recursively into sub-mappings (no key checks: the content
    of free sections is checked by whoever uses it)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _patch(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_settings(items: Optional[Iterable[str]]) -> Dict[str, Any]:
    """`--set training.steps=200 --set model.rcut=4.5` → the nested mapping of the keys to set
    (values parsed as YAML); pass it as `settings` to `load_config` / `load_al_config`."""
    over: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got '{item}'")
        key, val = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"--set: '{key}' is not a dotted key such as training.steps")
        try:
            value = yaml.safe_load(val)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {key}: '{val}' is not a valid YAML value: "
                             f"{str(exc).splitlines()[0]}") from None
        node = over
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ValueError(f"--set {key}: '{p}' was already set to a value")
            node = node[p]
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"--set {key}: its keys were already set one by one")
        node[parts[-1]] = value
    return over


def _merge(base: Dict[str, Any], over: Dict[str, Any], path: str) -> Dict[str, Any]:
    return merge_config(base, over, path, free=SECTIONS_FREE | LOSS_FREE, shallow={"lr"})


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


def load_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None,
                settings: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Defaults ← YAML file ← overrides (a recipe: merged like the file) ← settings (`parse_settings`:
    `--set`, one key each). Relative data paths, `model.init_from` and `model.baseline` are resolved against the YAML's
    folder. Every key and value is checked (`validate_config`)."""
    raw, base_dir = read_yaml_mapping(path)
    cfg = _merge(DEFAULTS, raw, "")
    if overrides:
        cfg = _merge(cfg, overrides, "")
    if settings:  # --set model.rcut=4.5 changes one key, also inside the file's model section
        cfg = merge_config(cfg, settings, "", free=SECTIONS_FREE | LOSS_FREE, shallow={"lr"},
                           patch=True)
    validate_config(cfg)
    data = cfg["data"]
    for key in ("train", "validation", "test"):
        v = data[key]
        if v is not None:
            data[key] = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p)) for p in v]
    for key in ("init_from", "baseline"):  # fine-tuning (mlip.train.finetune), Δ-learning: files like the data
        ref = cfg["model"].get(key)
        if isinstance(ref, str) and not os.path.isabs(ref):
            cfg["model"][key] = os.path.normpath(os.path.join(base_dir, ref))
    return cfg


_FILES = optional(ListOf(Text(), single=True))
_PREFACTOR = Number(low=0)
# The rule of every value with a fixed place in the recipe (sections `model`, `data.generate` and the
# loss prefactors are checked in `validate_config` against what consumes them).
RULES = {
    "seed": NONNEG_INT,
    "threads": optional(POSITIVE_INT),
    "device": Choice(("cpu", "cuda", "auto")),
    "output": Text(),
    "data.train": _FILES, "data.validation": _FILES, "data.test": _FILES,
    "data.val_fraction": FRACTION,
    "data.type_map": optional(ListOf(Text())),
    "data.format": optional(Choice(FORMATS)),
    "loss.virial_per_atom": Flag(),
    "optimizer.clip_grad": optional(POSITIVE),
    "optimizer.ema": optional(Number(low=0, high=1, high_open=True)),
    "optimizer.weight_decay": NONNEG,
    "optimizer.decoupled_weight_decay": Flag(),
    "optimizer.lr.schedule": Choice(SCHEDULES),
    "optimizer.lr.start": POSITIVE, "optimizer.lr.stop": POSITIVE,
    "optimizer.lr.decay_steps": POSITIVE_INT, "optimizer.lr.warmup_steps": NONNEG_INT,
    "optimizer.lr.base": Choice(BASES),  # plateau: the step/clock-driven schedule it multiplies
    "optimizer.lr.factor": Number(low=0, high=1, low_open=True, high_open=True),
    "optimizer.lr.patience": POSITIVE_INT,  # validations without improvement
    "optimizer.lr.threshold": Number(low=0, high=1, high_open=True),  # relative improvement that counts
    **{f"optimizer.{k}": optional(POSITIVE_INT) for k in ("max_iter", "history", "patience", "max_edges",
                                                           "cycle_iter")},
    "optimizer.max_time": optional(POSITIVE),
    "optimizer.min_rel_improvement": optional(NONNEG),
    "optimizer.precondition": optional(Flag()),
    **{f"training.{k}": POSITIVE_INT for k in ("steps", "batch_size", "val_every", "log_every",
                                                "checkpoint_every")},
    "training.val_frames": optional(POSITIVE_INT),
    "training.max_time": optional(POSITIVE),
    "training.schedule_by_time": Flag(),
    "training.progress": Flag(),
    "training.stat_frames": optional(POSITIVE_INT),
    "training.bias_refit_every": optional(NONNEG_INT),
    "training.readout_refit": Flag(),
    "export.dtype": optional(Choice(("float64", "float32"))),
}
LR_KEYS = ("schedule", "start", "stop", "decay_steps", "warmup_steps", *PLATEAU_DEFAULTS)
MODEL_RUN_KEYS = {"family": Text(), "init_from": Text(), "freeze": ListOf(Text(), single=True), "from_file": Text()}


def _check_schedule(lr: Dict[str, Any], training: Dict[str, Any]) -> None:
    """Keys that belong to another schedule, and a clock-driven staircase that could not decay inside
    the budget (its stairs are decay_steps / steps of the budget: fewer than one stair never decays)."""
    kind = lr.get("schedule", "exp")
    for key in PLATEAU_DEFAULTS:
        if key in lr and kind != "plateau":
            raise ValueError(f"optimizer.lr.{key}: only with schedule plateau (the schedule is {kind}), got {lr[key]!r}")
    base = lr.get("base", PLATEAU_DEFAULTS["base"]) if kind == "plateau" else kind
    if base == "exp" and training["schedule_by_time"] and training["max_time"] and lr.get("decay_steps") \
            and lr["decay_steps"] > training["steps"]:
        raise ValueError(f"optimizer.lr.decay_steps: must be at most training.steps ({training['steps']}) with "
                         f"training.schedule_by_time (the budget holds steps/decay_steps stairs), got {lr['decay_steps']}")


def _check_huber(cfg: Dict[str, Any]) -> None:
    """loss.huber: {term: δ > 0} for some of energy/forces/virial, and only with a mini-batch optimiser
    (varpro solves a linear least-squares problem; `mlip.train.loss`)."""
    huber = cfg["loss"]["huber"]
    if huber is None:
        return
    if not isinstance(huber, dict):
        raise ValueError(f"loss.huber: must be a mapping of loss terms to δ, e.g. {{forces: 0.05}}, got {huber!r}")
    check_keys("loss.huber", huber, sorted(LOSS_TERMS))
    check_values(huber, {k: POSITIVE for k in LOSS_TERMS}, prefix="loss.huber.")
    if cfg["optimizer"]["name"] != "adam":  # the trainer's own test for a full-batch optimiser
        raise ValueError(f"loss.huber: only with the mini-batch optimiser (adam); optimizer.name "
                         f"{cfg['optimizer']['name']} fits squared errors")


def validate_config(cfg: Dict[str, Any]) -> None:
    """Check every key and value of a merged recipe (normalising in place): `RULES`, the loss
    prefactors, `model` against the family's constructor, `data.generate` against
    `generate_frames`. One `ValueError` naming the dotted key, the rule and the value."""
    if cfg["dtype"] not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {cfg['dtype']!r}")
    if cfg["optimizer"]["name"] not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {', '.join(OPTIMIZERS)}, got {cfg['optimizer']['name']!r}")
    for where, v in (("model", cfg["model"]), ("optimizer.lr", cfg["optimizer"]["lr"])):
        if not isinstance(v, dict):
            raise ValueError(f"{where}: must be a mapping, got {v!r}")
    check_keys("optimizer.lr", cfg["optimizer"]["lr"], LR_KEYS)
    check_values(cfg, RULES)
    _check_schedule(cfg["optimizer"]["lr"], cfg["training"])
    for key in ("energy", "forces", "virial"):
        spec = cfg["loss"][key]
        if isinstance(spec, dict):
            check_keys(f"loss.{key}", spec, ("start", "limit"))
            check_values(spec, {"start": _PREFACTOR, "limit": _PREFACTOR}, prefix=f"loss.{key}.")
        elif spec is not None:
            cfg["loss"][key] = _PREFACTOR.check(f"loss.{key}", spec)
    _check_huber(cfg)
    model = cfg["model"]
    if "family" not in model:
        raise ValueError("model.family is required (deepmd, mtp, nequip)")
    from mlip.models import FAMILIES, model_class

    family = Choice(tuple(FAMILIES)).check("model.family", model["family"])
    check_call_keys("model", model, model_class(family), extra=MODEL_RUN_KEYS, what=f"key for family {family}")
    gen = cfg["data"]["generate"]
    if gen is not None:
        if not isinstance(gen, dict):
            raise ValueError(f"data.generate: must be a mapping (kind, element, n_frames, ...), got {gen!r}")
        from mlip.datagen import generate_frames

        if "seed" in gen:
            raise ValueError("data.generate.seed: unknown key (the recipe's top-level seed is used)")
        check_call_keys("data.generate", gen, generate_frames)
