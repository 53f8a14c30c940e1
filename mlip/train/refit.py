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
gains little (2.62 → 2.58), and with 64 readout features the solve overfits the training set: the
validation loss rises and the refit is not kept. Measured by `mlip test` on the mlearn Mo test set.

The solve uses the loss at its final (limit) prefactors over the whole training set, and is kept only
if the validation loss (`mlip.train.schedules.validation_loss`, the best-checkpoint criterion) does not
rise. Only `checkpoints/best.pt`'s evaluation weights change (what `mlip train` and `mlip export`
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


def refit_linear(model: AtomicModel, train_graphs: Sequence[Graph], weights: LossWeights,
                 score: Callable[[AtomicModel], float]) -> Dict[str, Any]:
    """Solve the model's linear parameters on `train_graphs` in place; undo it if `score` (lower is
    better, e.g. the validation loss) gets worse. Returns what happened, for the run's summary."""
    t0 = time.perf_counter()
    params = linear_parameters(model)
    before = get_flat(params).clone()
    score_before = float(score(model))
    with torch.enable_grad():
        train_loss, _ = solve_linear(model, FullBatch(train_graphs), weights)
    score_after = float(score(model))
    kept = score_after <= score_before
    if not kept:
        set_flat(params, before)
    return {"kept": kept, "validation_loss_before": score_before, "validation_loss_after": score_after,
            "train_loss_after": float(train_loss), "parameters": int(before.numel()),
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
