"""Helpers shared by the benchmark scripts: locating ../shared/data, running a training from a recipe
with overrides (a wall-clock budget in minutes or hours; an interrupted run continued from its last
checkpoint), its learning curve, evaluating an export on a test set, and writing results as JSON next
to the scripts."""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MLIP_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import RESULTS  # noqa: E402  (one results directory for every script; MLIP_BENCH_RESULTS overrides it)

from mlip.checks import POSITIVE, arg_type  # noqa: E402

RUN_KEY = "bench_run.json"  # in a run directory: the recipe and budget it was started with (run_key)


def shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        print(f"SKIP: reference data not found at {p} (set MLIP_SHARED_DATA)")
        sys.exit(0)
    return p


def recipe_path(recipe: str) -> Path:
    """A recipe by name in training/ (`nequip_water.yaml`), or a path to any recipe file."""
    p = Path(recipe)
    return p if p.parent != Path(".") and p.is_file() else REPO / "training" / recipe


def add_run_args(ap: argparse.ArgumentParser, minutes: Optional[float]) -> None:
    """--minutes / --hours (one wall-clock budget; `minutes` the default) and --resume."""
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=arg_type(POSITIVE), default=None,
                        help=f"training budget, wall-clock minutes (default {minutes})" if minutes else
                        "wall-clock training budget in minutes (the schedule follows the clock)")
    budget.add_argument("--hours", type=arg_type(POSITIVE), default=None, help="the budget in hours instead")
    ap.add_argument("--resume", action="store_true",
                    help="continue the interrupted run in the run directory (without it, a checkpoint of the same "
                         "recipe and budget there is continued too; one of another recipe/budget is replaced)")
    ap.set_defaults(default_minutes=minutes)


def budget_seconds(args: argparse.Namespace) -> Optional[float]:
    """The wall-clock training budget in seconds (None: no budget)."""
    if args.hours:
        return args.hours * 3600.0
    minutes = args.minutes or args.default_minutes
    return minutes * 60.0 if minutes else None


def run_key(recipe: str, **budget: Any) -> Dict[str, Any]:
    """What identifies a run: the recipe (name and content) and the budget; a run directory holding a
    checkpoint with the same key is continued instead of started again."""
    text = recipe_path(recipe).read_bytes()
    return {"recipe": recipe, "recipe_sha256": hashlib.sha256(text).hexdigest(), **budget}


def resume_config(run_dir: str, key: Dict[str, Any], resume: bool) -> Optional[Dict[str, Any]]:
    """The configuration of the run to continue in `run_dir` (its own config.yaml, so the schedule,
    validation and checkpoint steps are those it started with), or None to start afresh. The
    checkpoint keeps the training seconds already spent: the budget counts only time trained."""
    from mlip.train.config import load_config

    last = os.path.join(run_dir, "checkpoints", "last.pt")
    stored_path = os.path.join(run_dir, RUN_KEY)
    stored = json.loads(Path(stored_path).read_text()) if os.path.isfile(stored_path) else None
    if not os.path.isfile(last) or stored != key:
        if resume:
            why = "no checkpoint" if not os.path.isfile(last) else f"a run of {stored}, not {key}"
            raise SystemExit(f"--resume: '{run_dir}' holds {why}")
        if os.path.isfile(last):
            print(f"'{run_dir}' holds a run of another recipe or budget ({stored}): starting again")
        return None
    print(f"resuming the run in '{run_dir}' from its last checkpoint")
    return load_config(os.path.join(run_dir, "config.yaml"))


def span_overrides(recipe: str, steps: int) -> Dict[str, Any]:
    """Overrides that lay the recipe's schedule over `steps` steps with as many learning-rate stairs as
    the recipe's own span (`training.steps`) has."""
    import yaml

    rec = yaml.safe_load(recipe_path(recipe).read_text())
    lr, nominal = rec.get("optimizer", {}).get("lr", {}), int(rec.get("training", {}).get("steps", steps))
    out: Dict[str, Any] = {"training": {"steps": steps}}
    if lr.get("decay_steps"):
        out["optimizer"] = {"lr": {"decay_steps": max(1, int(lr["decay_steps"]) * steps // nominal)}}
    return out


def train_recipe(recipe: str, overrides: Dict[str, Any], resume: bool = False,
                 config: Optional[Dict[str, Any]] = None, key: Optional[Dict[str, Any]] = None,
                 settings: Optional[List[str]] = None) -> Dict[str, Any]:
    """Train from training/<recipe> with overrides (merged like the file) and `settings` (`--set`
    KEY=VALUE items: one key each, also inside the model section) — or continue the run of `config`
    (`resume_config`) — and export its best checkpoint; returns the summary and the export path. `key`
    (`run_key`) is written into a new run directory so that an interrupted run can be recognised and
    continued."""
    from mlip.export import export_model
    from mlip.train.config import load_config, parse_settings
    from mlip.train.trainer import Trainer, load_checkpoint_model

    resume = resume or config is not None
    cfg = config if config is not None else load_config(str(recipe_path(recipe)), overrides, parse_settings(settings))
    t0 = time.time()
    tr = Trainer(cfg, resume=resume, overwrite=not resume)
    if key is not None and not resume:
        Path(cfg["output"], RUN_KEY).write_text(json.dumps(key, indent=1))
    summary = tr.run()
    summary["wall_s"] = time.time() - t0
    summary["n_parameters"] = sum(p.numel() for p in tr.model.parameters())
    model = load_checkpoint_model(os.path.join(cfg["output"], "checkpoints", "best.pt"))
    path = os.path.join(cfg["output"], "model.pt")
    export_model(model, path, dtype=cfg["dtype"])
    summary["model"] = path
    summary["config"] = cfg
    return summary


def learning_curve(run_dir: str, name: Optional[str] = None) -> List[Dict[str, float]]:
    """The validation rows of the run's metrics.csv — step, training seconds (summed over sittings),
    learning rate, energy RMSE (meV/atom), force RMSE (eV/Å), validation loss — for the results JSON;
    with `name`, the run's learning_curve.png is copied to benchmarks/results/<name>_curve.png."""
    rows = []
    path = os.path.join(run_dir, "metrics.csv")
    if os.path.isfile(path):
        with open(path) as fh:
            for r in csv.DictReader(fh):
                if r.get("val_energy_rmse"):
                    rows.append({"step": int(r["step"]), "seconds": float(r["time"]), "lr": float(r["lr"]),
                                 "energy_rmse_meV": float(r["val_energy_rmse"]) * 1e3,
                                 "force_rmse": float(r["val_force_rmse"]) if r.get("val_force_rmse") else None,
                                 "val_loss": float(r["val_loss"]) if r.get("val_loss") else None})
    png = os.path.join(run_dir, "learning_curve.png")
    if name and os.path.isfile(png):
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, RESULTS / f"{name}_curve.png")
    return rows


def evaluate(model_path: str, data_paths: List[str], threads: Optional[int] = None) -> Dict[str, float]:
    from mlip.cli.test import evaluate_export
    from mlip.data import read_frames

    frames = []
    for p in data_paths:
        frames.extend(read_frames(p))
    return evaluate_export(model_path, frames, threads)


def save(name: str, payload: Dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path
