"""The loss p_e·(ΔE/N)² + p_f/(3N)·Σ|ΔF|² + p_v/9·‖ΔW‖² per frame, weighted by frame weights and
averaged over the frames of a batch; frames missing a label simply drop that term. The mini-batch
(Adam) and the full-batch optimisers (varpro, lbfgs; MLIP-2's MTP loss) use this same formula.

`loss.huber` (mini-batch training only) replaces the square of a term's errors by ρ_δ(d) = d² for
|d| ≤ δ and δ(2|d| − δ) beyond (twice Huber's function: equal to the square for small errors, so the
prefactors keep their meaning, and linear in the tail). Squared errors fit the mean and let a few large
errors (close contacts in hot AIMD frames) steer the fit; a linear tail fits the bulk, which is what a
mean-absolute-error figure measures (MACE's and NequIP's L1/Huber losses, for the same reason)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mlip.graph import Batch


def _penalty(d: Tensor, delta: Optional[float]) -> Tensor:
    """d² (delta None), else ρ_δ(d): d² inside ±δ, δ(2|d| − δ) outside (continuous slope 2δ)."""
    if delta is None:
        return d.pow(2)
    return 2.0 * F.huber_loss(d, torch.zeros_like(d), reduction="none", delta=delta)


def loss_terms(pred: Dict[str, Tensor], batch: Batch, virial_per_atom: bool = False,
               huber: Optional[Dict[str, float]] = None) -> Dict[str, Tensor]:
    """Per-frame squared errors (before prefactors); with `huber` ({term: δ}, δ in eV/atom, eV/Å and eV
    or eV/atom for the virial), those terms' errors go through ρ_δ instead of the square."""
    huber = huber or {}
    n = batch.n_atoms
    de = (pred["energy"] - batch.energy) / n
    e_term = _penalty(de, huber.get("energy")) * batch.energy_mask
    df = _penalty(pred["forces"] - batch.forces, huber.get("forces")).sum(1) * batch.force_mask
    f_sum = torch.zeros_like(n).index_add_(0, batch.node_frame, df)
    f_term = f_sum / (3.0 * n)
    if "virial" in pred:
        dv = pred["virial"] - batch.virial
        if virial_per_atom:
            dv = dv / n[:, None, None]
        v_term = _penalty(dv, huber.get("virial")).sum((1, 2)) / 9.0 * batch.virial_mask
    else:
        v_term = torch.zeros_like(n)
    return {"energy": e_term, "forces": f_term, "virial": v_term}


def weighted_loss_sum(terms: Dict[str, Tensor], batch: Batch, pe: float, pf: float, pv: float) -> Tensor:
    """Σ_frames w·(p_e e + p_f f + p_v v), not divided by Σ w: full-batch optimisers add it over
    several batches and divide once (`mlip.train.full_batch`)."""
    per_frame = pe * terms["energy"] + pf * terms["forces"] + pv * terms["virial"]
    return (batch.weight * per_frame).sum()


def total_loss(terms: Dict[str, Tensor], batch: Batch, pe: float, pf: float, pv: float,
               total_weight: Optional[float] = None) -> Tensor:
    """The mini-batch loss: the weighted mean over the batch's frames. `total_weight`: the weight of
    the whole global batch when `batch` is one rank's share of it (data parallelism), so that the
    ranks' losses add up to the one-process loss."""
    norm = batch.weight.sum().clamp_min(1e-30) if total_weight is None else max(float(total_weight), 1e-30)
    return weighted_loss_sum(terms, batch, pe, pf, pv) / norm
