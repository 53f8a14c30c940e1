"""Extrapolation grade γ for every family through one mechanism: per-atom `grade_features` rows b_i
(MTP: [onehot, B]; Deep Potential: [onehot, last hidden layer of the fitting net]; NequIP: [onehot,
scaled last invariant features φ_i]), a MaxVol active set on the training rows (`mlip.active.maxvol`),
and G = P A⁻¹ stored in the export, whose scripted `grade(...)` the C++ engine runs for the ASE
calculator and the LAMMPS pair_style alike:

    aset = build_active_set(model, train_frames)        # python model (eager or checkpoint)
    export_model(model, "model.pt", active_set=aset)    # G as a buffer + rows/projection in metadata
    MLIPCalculator("model.pt").results["atom_gamma"], ["gamma"]

    gammas = grade_frames(model, frames, aset)          # per frame: per-atom γ (python reference)
    chosen = select_candidates(aset, model, candidates, threshold=1.0, max_select=20)

Every row b is the gradient of the atomic energy E_i with respect to the model's last linear
parameters, so γ > 1 says: fitting these parameters to this neighbourhood would need coefficients
outside the span of the training neighbourhoods (Podryabinkin & Shapeev 2017; Lysogorskiy et al. 2023
use the same last-layer idea for ACE). γ ≤ 1 + tol on every training neighbourhood by construction.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mlip.active.graph import frame_graph
from mlip.active.maxvol import ActiveSet


def model_dtype(model) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dtype.is_floating_point:
            return t.dtype
    return torch.float64


def feature_rows(model, frames: Sequence[Any]) -> Tuple[np.ndarray, List[List[int]]]:
    """Per-atom grade features of `frames` ([Σ N, n_features], float64) and a [frame, atom] per row."""
    if not hasattr(model, "grade_features"):
        raise ValueError(f"family '{getattr(model, 'family', type(model).__name__)}' has no grade features")
    species, cutoff, dtype = list(model.species), float(model.cutoff), model_dtype(model)
    rows, sources = [], []
    with torch.no_grad():
        for k, fr in enumerate(frames):
            sp, ei, vec = frame_graph(fr, species, cutoff, dtype)
            f = model.grade_features(sp, ei, vec).detach().double().numpy()
            rows.append(f)
            sources.extend([[k, a] for a in range(f.shape[0])])
    if not rows:
        raise ValueError("no configurations given")
    return np.concatenate(rows, 0), sources


def build_active_set(model, frames: Sequence[Any], tol: float = 1.0 + 1e-9, rtol: float = 1e-9) -> ActiveSet:
    """MaxVol active set of the per-atom rows of the training `frames`."""
    X, sources = feature_rows(model, frames)
    return ActiveSet.build(X, tol=tol, rtol=rtol, sources=sources)


def grade_frames(model, frames: Sequence[Any], aset: ActiveSet) -> List[np.ndarray]:
    """Per-atom γ of every frame (the Python reference of the export's `grade`)."""
    out = []
    for fr in frames:
        X, _ = feature_rows(model, [fr])
        out.append(aset.gamma(X))
    return out


def select_candidates(aset: ActiveSet, model, candidates: Sequence[Any], threshold: float = 1.0,
                      max_select: Optional[int] = None, rows: Optional[np.ndarray] = None,
                      sources: Optional[List[List[int]]] = None) -> List[int]:
    """D-optimal batch: candidate configurations whose neighbourhoods enter the active set by greedy
    volume-increasing MaxVol swaps (|swap factor| > threshold), at most `max_select` configurations.
    Updates `aset` in place (later candidates are judged against the already chosen ones)."""
    if not len(candidates):
        return []
    if rows is None:
        rows, sources = feature_rows(model, candidates)
    groups = [s[0] for s in sources]
    chosen_rows = aset.select(rows, threshold=threshold, groups=groups, max_groups=max_select,
                              sources=[["candidate"] + list(s) for s in sources])
    return sorted({groups[r] for r in chosen_rows})
