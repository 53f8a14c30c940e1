"""The exact least-squares refit of a model's linear parameters at the end of mini-batch training
(`training.readout_refit`).

Why: Adam on mini-batches of 1–4 frames, averaged by an EMA, leaves the last linear layer near but not
at the optimum of the training loss. The shortfall shows in the energies: one number per frame against
3N force components, so the loss constrains them least. On mlearn Mo, a NequIP-style model stopped
with a systematic energy error that follows the cell volume (±3–6 meV/atom over the elastic set) and a
+4.7 meV/atom offset on every vacancy cell. Re-solving its 16 readout weights and the energy reference
exactly (the variable projection the MTP's varpro does at every step, `mlip.train.full_batch`) at the
run's own limit prefactors (energy 25, forces 3) took the test energy MAE from 3.75 to 3.29 meV/atom
(forces 0.1027 → 0.1030 eV/Å); at an energy prefactor of 1000, to 2.74. A run trained at energy 1000
gains little (2.62 → 2.58; the ridge path picks α = 1e-6, same test MAE), and with 64 readout features
the solve overfits the training set: every point of the ridge path raises the validation loss (4.35e-2
→ 4.55e-2 exact, 4.37e-2 at α = 1), so the trained weights are kept. Measured by `mlip test` on the mlearn Mo test set.

The solve uses the loss at its final (limit) prefactors over the whole training set. Beside the exact
solution, a few ridge solutions pulled toward the trained weights (`RIDGE`) are scored, and the one with
the lowest validation loss (`mlip.train.schedules.validation_loss`, the best-checkpoint criterion) is
kept, or the trained weights if none is lower. Only `checkpoints/best.pt`'s evaluation weights change (what `mlip train` and `mlip export`
export); its raw weights and optimiser state stay those of training, so a resumed run continues the
same trajectory.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Sequence

import torch

from mlip.graph import Graph
from mlip.io.safe_write import atomic_write_buffered
from mlip.models.base import AtomicModel
from mlip.train.finetune import load_checkpoint_model, read_checkpoint
from mlip.train.full_batch import FullBatch, LossWeights, get_flat, linear_parameters, set_flat, solve_linear
from mlip.train.schedules import Prefactor


def has_linear_part(model: torch.nn.Module) -> bool:
    """True if the model declares linear parameters (`mlip.train.full_batch`'s contract)."""
    return hasattr(model, "linear_parameters") and hasattr(model, "linear_design")


def final_weights(pref: Mapping[str, Prefactor], virial_per_atom: bool) -> LossWeights:
    """The loss weights training ends with (the prefactors' limits)."""
    return LossWeights(pref["energy"].limit, pref["forces"].limit, pref["virial"].limit, bool(virial_per_atom))


# ridge strengths tried, relative to the largest squared singular value of the (column-scaled) design:
# 0 is the exact least-squares solve; the others pull the solution toward the trained weights along the
# directions the training set determines least (where a wide readout overfits ~200 frame energies)
RIDGE = (0.0, 1e-6, 1e-4, 1e-2, 1.0)


def refit_linear(model: AtomicModel, train_graphs: Sequence[Graph], weights: LossWeights,
                 score: Callable[[AtomicModel], float]) -> Dict[str, Any]:
    """Solve the model's linear parameters on `train_graphs` in place, exactly and with each `RIDGE`
    strength toward the trained weights, and keep whichever gives the lowest `score` (e.g. the
    validation loss), the trained weights included. Returns what happened, for the run's summary."""
    t0 = time.perf_counter()
    params = linear_parameters(model)
    before = get_flat(params).clone()
    score_before = float(score(model))
    with torch.enable_grad():
        _, qr = solve_linear(model, FullBatch(train_graphs), weights)
    exact = get_flat(params).clone()
    scores = {}
    for alpha in RIDGE:
        set_flat(params, exact if alpha == 0.0 else qr.solve_toward(before, alpha))
        scores[alpha] = float(score(model))
    alpha = min(scores, key=scores.get)
    kept = scores[alpha] <= score_before
    x = (exact if alpha == 0.0 else qr.solve_toward(before, alpha)) if kept else before
    set_flat(params, x)
    return {"kept": kept, "ridge": alpha if kept else None, "validation_loss_before": score_before,
            "validation_loss_after": min(scores[alpha], score_before),
            "validation_loss_by_ridge": {str(a): v for a, v in scores.items()},
            "train_loss_after": qr.residual2(x.to(torch.float64)), "parameters": int(before.numel()),
            "seconds": time.perf_counter() - t0}


def refit_checkpoint(path: str, train_graphs: Sequence[Graph], weights: LossWeights,
                     score: Callable[[AtomicModel], float]) -> Dict[str, Any]:
    """`refit_linear` on the evaluation weights of a checkpoint, written back (atomically) with a
    `readout_refit` record. A checkpoint that already carries one is left alone: the solve depends only
    on the other weights, so it would give the same parameters again."""
    ckpt = read_checkpoint(path)
    if ckpt.get("readout_refit"):
        return ckpt["readout_refit"]
    model = load_checkpoint_model(path)
    if not has_linear_part(model):
        raise ValueError(f"training.readout_refit: family '{model.family}' has no linear readout to refit "
                         "(linear_parameters/linear_design)")
    info = refit_linear(model, train_graphs, weights, score)
    if info["kept"]:
        ckpt["eval_model"] = model.state_dict()
    ckpt["readout_refit"] = info
    atomic_write_buffered(path, lambda buf: torch.save(ckpt, buf))
    return info
