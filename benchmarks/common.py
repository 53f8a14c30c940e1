"""Helpers shared by the benchmark scripts: locating ../shared/data, running a training from a recipe
with overrides, evaluating an export on a test set, and writing results as JSON next to the scripts."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MLIP_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import RESULTS  # noqa: E402  (one results directory for every script; MLIP_BENCH_RESULTS overrides it)


def shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        print(f"SKIP: reference data not found at {p} (set MLIP_SHARED_DATA)")
        sys.exit(0)
    return p


def train_recipe(recipe: str, overrides: Dict[str, Any], resume: bool = False) -> Dict[str, Any]:
    """Train from training/<recipe> with overrides; returns the summary and the export path."""
    from mlip.export import export_model
    from mlip.train.config import load_config
    from mlip.train.trainer import Trainer, load_checkpoint_model

    cfg = load_config(str(REPO / "training" / recipe), overrides)
    t0 = time.time()
    tr = Trainer(cfg, resume=resume, overwrite=not resume)
    summary = tr.run()
    summary["wall_s"] = time.time() - t0
    summary["n_parameters"] = sum(p.numel() for p in tr.model.parameters())
    model = load_checkpoint_model(os.path.join(cfg["output"], "checkpoints", "best.pt"))
    path = os.path.join(cfg["output"], "model.pt")
    export_model(model, path, dtype=cfg["dtype"])
    summary["model"] = path
    summary["config"] = cfg
    return summary


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
