"""Extrapolation grade γ of MTP models (MaxVol active sets) and D-optimal selection of new data.

Feature rows (see `mlip.models.mtp`): per neighbourhood ("nbh") b_i = [onehot(t_i), B(i)], per
configuration ("cfg") b = [species counts, Σ_i B(i)]. Works with the Python `MTP` and with the scripted
model inside an export (`torch.jit.load(p).model`), both expose `grade_features`.

    rows, sources = feature_rows(model, frames, mode)          # mode "nbh" | "cfg"
    aset = build_active_set(model, frames, mode)               # MaxVol, installed into the model
    gammas = grade_frames(model, frames, mode)                 # per frame: [N] (nbh) or [1] (cfg)
    chosen, aset = select_frames(model, candidates, mode, threshold, max_select)

Calculator contract (wired by the lead in `mlip.calculator`): for an MTP export with an nbh active set,
`results['atom_gamma'] = model.grade(species, edge_index, edge_vec, n_local)` (per atom) and
`results['gamma'] = atom_gamma.max()`; with only a cfg active set `results['gamma'] =
model.grade_cfg(...)[0]`. Without an active set neither key is set.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mlip.active.graph import frame_graph
from mlip.active.maxvol import ActiveSet

MODES = ("nbh", "cfg")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"grade mode must be one of {MODES}, got {mode!r}")


def _model_info(model) -> Tuple[List[str], float, torch.dtype]:
    species = list(model.species)
    cutoff = float(model.cutoff)
    dtype = model.radial_coeffs.dtype if hasattr(model, "radial_coeffs") else torch.float64
    return species, cutoff, dtype


def feature_rows(model, frames: Sequence[Any], mode: str = "nbh") -> Tuple[np.ndarray, List[List[int]]]:
    """Feature matrix of `frames` and a source [frame, atom] (atom = -1 in cfg mode) per row."""
    _check_mode(mode)
    species, cutoff, dtype = _model_info(model)
    rows, sources = [], []
    with torch.no_grad():
        for k, fr in enumerate(frames):
            sp, ei, vec = frame_graph(fr, species, cutoff, dtype)
            f = model.grade_features(sp, ei, vec).double().numpy()
            if mode == "nbh":
                rows.append(f)
                sources.extend([[k, a] for a in range(f.shape[0])])
            else:
                rows.append(f.sum(0, keepdims=True))
                sources.append([k, -1])
    if not rows:
        raise ValueError("no configurations given")
    return np.concatenate(rows, 0), sources


def build_active_set(model, frames: Sequence[Any], mode: str = "nbh", tol: float = 1.0 + 1e-9,
                     rtol: float = 1e-9, install: bool = True) -> ActiveSet:
    """MaxVol active set of the training `frames`; installed into `model` (Python MTP) if asked."""
    X, sources = feature_rows(model, frames, mode)
    aset = ActiveSet.build(X, tol=tol, rtol=rtol, sources=sources)
    if install:
        install_active_set(model, mode, aset)
    return aset


def install_active_set(model, mode: str, aset: ActiveSet) -> None:
    _check_mode(mode)
    meta = {"mode": mode, **aset.to_dict()}
    model.set_active_set(mode, torch.from_numpy(aset.G), meta)


def active_set_of(model, mode: str) -> Optional[ActiveSet]:
    meta = getattr(model, "_active_meta", {}).get(mode)
    return ActiveSet.from_dict(meta) if meta else None


def grade_frames(model, frames: Sequence[Any], mode: str = "nbh") -> List[np.ndarray]:
    """γ per frame: per-atom array (nbh) or a one-element array (cfg), via the model's scripted path."""
    _check_mode(mode)
    species, cutoff, dtype = _model_info(model)
    out = []
    with torch.no_grad():
        for fr in frames:
            sp, ei, vec = frame_graph(fr, species, cutoff, dtype)
            n = int(sp.shape[0])
            g = model.grade(sp, ei, vec, n) if mode == "nbh" else model.grade_cfg(sp, ei, vec, n)
            out.append(g.double().numpy())
    return out


def select_frames(model, candidates: Sequence[Any], mode: str = "nbh", threshold: float = 1.0,
                  max_select: Optional[int] = None, update: bool = True) -> Tuple[List[int], ActiveSet]:
    """Candidates whose rows enter the active set by greedy volume-increasing swaps (γ > threshold),
    at most `max_select` configurations. Returns (candidate indices, the updated active set), and
    installs the new active set into the model if `update`."""
    _check_mode(mode)
    aset = active_set_of(model, mode)
    if aset is None:
        raise ValueError(f"the model has no '{mode}' active set: build one from the training set first "
                         f"(`mlip select MODEL --train TRAIN ...`)")
    X, sources = feature_rows(model, candidates, mode)
    groups = [s[0] for s in sources]
    chosen_rows = aset.select(X, threshold=threshold, groups=groups, max_groups=max_select,
                              sources=[["candidate"] + list(s) for s in sources])
    chosen = sorted({groups[r] for r in chosen_rows})
    if update:
        install_active_set(model, mode, aset)
    return chosen, aset
