"""What a trained model is judged by: the exponential moving average of its weights (the weights that are
validated and exported) and its errors against labelled graphs, kept frame by frame for metrics and
parity plots, optionally shared among data-parallel ranks."""
from __future__ import annotations

import copy
from typing import Dict, Sequence

import torch

from mlip.graph import Graph, collate
from mlip.metrics import ErrorAccumulator
from mlip.models import AtomicModel
from mlip.models.base import predict
from mlip.train.distributed import Distributed


class EMA:
    """Exponential moving average of the parameters, evaluated and exported instead of the raw ones."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: torch.nn.Module) -> torch.nn.Module:
        m = copy.deepcopy(model)
        m.load_state_dict(self.shadow)
        return m


def evaluate_graphs(model: AtomicModel, graphs: Sequence[Graph], batch_size: int = 8) -> Dict[str, float]:
    """Error summary of `model` on labelled graphs (see mlip.metrics)."""
    return accumulate_graphs(model, graphs, batch_size).summary()


def accumulate_graphs(model: AtomicModel, graphs: Sequence[Graph], batch_size: int = 8) -> ErrorAccumulator:
    """Predictions of `model` against the labels of `graphs`, kept frame by frame (errors and parity
    data)."""
    acc = ErrorAccumulator(model.species)
    device = next(model.parameters()).device
    for k in range(0, len(graphs), batch_size):
        chunk = graphs[k: k + batch_size]
        b = collate(chunk).to(device)
        out = {key: v.detach().cpu() for key, v in predict(model, b, create_graph=False).items()}
        f = out["forces"].numpy()
        off = 0
        for n, g in enumerate(chunk):
            sl = slice(off, off + g.n_atoms)
            off += g.n_atoms
            acc.add(g.species.numpy(), float(out["energy"][n]), f[sl],
                    out["virial"][n].numpy(), g.energy,
                    None if g.forces is None else g.forces.numpy(),
                    None if g.virial is None else g.virial.numpy(), None)
    return acc


def accumulate_sharded(model: AtomicModel, graphs: Sequence[Graph], dist: Distributed) -> ErrorAccumulator:
    """`accumulate_graphs` with the frames shared among the ranks and the results gathered, so that
    every rank holds the errors of all frames (ranks in order)."""
    if not dist.active:
        return accumulate_graphs(model, graphs)
    mine = dist.shard(list(graphs))
    part = accumulate_graphs(model, mine) if mine else ErrorAccumulator(model.species)
    parts = dist.gather(part)
    acc = ErrorAccumulator(model.species)
    for a in parts:
        acc.merge(a)
    return acc
