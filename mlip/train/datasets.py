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


def subtract_baseline(baseline: Any, graphs: Sequence[Any], chunk: int = 16) -> list:
    """The graphs with a frozen baseline's energies, forces and virials taken out of their labels
    (Δ-learning: computed once, in float64, instead of at every training step). Missing labels stay
    missing; the graphs' tensors are shared, only the labels are new."""
    import copy
    import dataclasses

    import torch

    from mlip.graph import collate
    from mlip.models.base import predict

    model = copy.deepcopy(baseline).double().eval()
    out = []
    for k in range(0, len(graphs), chunk):
        part = list(graphs[k: k + chunk])
        batch = collate([dataclasses.replace(g, edge_vec=g.edge_vec.double()) for g in part])
        pred = predict(model, batch)
        start = 0
        for i, g in enumerate(part):
            n = g.n_atoms
            f = pred["forces"][start: start + n]
            start += n
            out.append(dataclasses.replace(
                g,
                energy=None if g.energy is None else float(g.energy) - float(pred["energy"][i]),
                forces=None if g.forces is None else g.forces - f.to(g.forces.dtype),
                virial=None if g.virial is None else g.virial - pred["virial"][i].to(g.virial.dtype)))
    return out
