"""The frames a training configuration names: read from its files, or generated with an ASE calculator
(`data.generate`), then split into training and validation (`data.val_fraction`). Kept apart from the
trainer so that the active-learning loop and the benchmarks read data exactly as training does."""
from __future__ import annotations

from typing import Any, Dict, Sequence


def load_frames(paths: Sequence[str], cfg_data: Dict[str, Any]) -> list:
    """Every frame of `paths`, in order, read with the config's `data.format` / `data.type_map`."""
    from mlip.data import read_frames

    frames = []
    for p in paths:
        frames.extend(read_frames(p, fmt=cfg_data.get("format"), type_map=cfg_data.get("type_map")))
    return frames


def prepare_data(cfg: Dict[str, Any]) -> tuple:
    """(train_frames, val_frames) from files, or generated with an ASE calculator when asked."""
    from mlip.data import split_frames

    data = cfg["data"]
    if data["train"]:
        train = load_frames(data["train"], data)
    elif data["generate"]:
        from mlip.datagen import generate_frames

        train = generate_frames(**data["generate"], seed=cfg["seed"])
    else:
        raise ValueError("data.train is empty: give training files (or data.generate for synthetic data)")
    if data["validation"]:
        val = load_frames(data["validation"], data)
    elif data["val_fraction"] and len(train) > 1:
        train, val = split_frames(train, data["val_fraction"], cfg["seed"])
    else:
        val = []
    if not train:
        raise ValueError("no training frames after the train/validation split")
    return train, val
