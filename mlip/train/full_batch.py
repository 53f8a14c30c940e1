"""Full-batch pieces of the quasi-Newton optimisers (`mlip.train.varpro`): the training set as a few
large batches, its loss and gradient, and the exact least-squares solve of a model's linear parameters.

The loss is the common one (`mlip.train.loss`): Σ_frames w·[p_e (ΔE/N)² + p_f/(3N) Σ|ΔF|² + p_v/9 ‖ΔW‖²]
divided by Σ_frames w, here over the whole set instead of one mini-batch.

Linear parameters. A model that is linear in some of its parameters for fixed values of the others
(the MTP: species and moment coefficients, for fixed radial coefficients) says so with two methods,

    model.linear_parameters() -> [name, ...]          parameter names, in column order
    model.linear_design(species, edge_index, edge_vec, node_frame, n_frames, need_virial)
        -> (E [n_frames, P], F [N, 3, P], V [n_frames, 3, 3, P] or None)

with energy = E ξ, forces = F ξ, virials = V ξ (ξ: those parameters flattened and concatenated).
`solve_linear` turns these into weighted least-squares rows of the loss above and solves them with an
incremental QR (never the normal equations: the MTP basis is very ill-conditioned).

Optionally, such a model also gives the gradient of the loss with respect to its other (nonlinear)
parameters from the cotangents of its predictions, without autograd through the edge graph:

    model.linear_design_vjp(species, edge_index, edge_vec, node_frame, edge_frame, gE, gF, gW)
        -> {parameter name: ∂L/∂parameter}     gE [n_frames], gF [N, 3], gW [n_frames, 3, 3] or None

(`mlip.train.projection` uses it for varpro's evaluations; without it, autograd does the same job).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from mlip.graph import Batch, Graph, collate
from mlip.models.base import predict
from mlip.train.loss import loss_terms, weighted_loss_sum

DESIGN_EDGES = 12000  # edges per block of least-squares rows (memory of the [N, 3, P] force rows)


@dataclass(frozen=True)
class LossWeights:
    """The (fixed) prefactors of the loss; virial_per_atom as `loss.virial_per_atom`."""

    energy: float
    forces: float
    virial: float
    virial_per_atom: bool = False


def group_by_edges(graphs: Sequence[Graph], max_edges: int) -> List[List[int]]:
    """Consecutive frames grouped greedily into blocks of at most `max_edges` edges (a frame with more
    edges than that is a block of its own)."""
    groups: List[List[int]] = []
    cur: List[int] = []
    n = 0
    for k, g in enumerate(graphs):
        ne = int(g.edge_index.shape[1])
        if cur and n + ne > max_edges:
            groups.append(cur)
            cur, n = [], 0
        cur.append(k)
        n += ne
    if cur:
        groups.append(cur)
    return groups


class FullBatch:
    """A set of frames as `Batch`es of ≤ max_edges edges (loss and gradient), each also split into
    blocks of ≤ DESIGN_EDGES edges (least-squares rows)."""

    def __init__(self, graphs: Sequence[Graph], max_edges: int = 20000) -> None:
        self.batches: List[Batch] = []
        self.design_batches: List[Batch] = []
        for group in group_by_edges(graphs, max_edges):
            chunk = [graphs[k] for k in group]
            self.batches.append(collate(chunk))
            for sub in group_by_edges(chunk, DESIGN_EDGES):
                self.design_batches.append(collate([chunk[k] for k in sub]))
        self.weight_sum = float(sum(float(b.weight.sum()) for b in self.batches))
        self.n_atoms = sum(int(b.species.shape[0]) for b in self.batches)
        self.n_edges = sum(int(b.edge_index.shape[1]) for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batch_loss_sum(model: Callable, batch: Batch, w: LossWeights, create_graph: bool) -> Tensor:
    """Σ_frames w × per-frame loss of one batch (not yet divided by Σ w)."""
    need_v = w.virial > 0 and bool(batch.virial_mask.any())
    pred = predict(model, batch, create_graph=create_graph, need_virial=need_v)
    terms = loss_terms(pred, batch, w.virial_per_atom)
    return weighted_loss_sum(terms, batch, w.energy, w.forces, w.virial)


def full_loss(model: Callable, data: FullBatch, w: LossWeights) -> float:
    """The loss over the whole set, without parameter gradients (validation)."""
    total = sum(float(batch_loss_sum(model, b, w, create_graph=False).detach()) for b in data.batches)
    return total / max(data.weight_sum, 1e-300)


def loss_and_grad(model: Callable, data: FullBatch, w: LossWeights, params: Sequence[Tensor]
                  ) -> Tuple[float, List[Tensor]]:
    """The loss over the whole set and its gradient with respect to `params` (batch by batch, so that
    only one batch's graph is alive at a time). `model` may be any callable with the model's
    signature (the joint L-BFGS passes a reparametrised one)."""
    grads = [torch.zeros_like(p) for p in params]
    total = 0.0
    for b in data.batches:
        loss = batch_loss_sum(model, b, w, create_graph=True) / data.weight_sum
        for acc, g in zip(grads, torch.autograd.grad(loss, list(params), allow_unused=True)):
            if g is not None:
                acc += g
        total += float(loss.detach())
    return total, grads


# ------------------------------------------------------------------------------------- linear solve
class IncrementalQR:
    """R and Qᵀy of a tall least-squares problem fed by row blocks (float64; only R, never AᵀA)."""

    def __init__(self, n: int) -> None:
        self.R = torch.zeros(0, n, dtype=torch.float64)
        self.qty = torch.zeros(0, dtype=torch.float64)
        self.lost = 0.0  # |y|² outside the range of Q (part of every residual)

    def add(self, rows: Tensor, rhs: Tensor) -> None:
        a = torch.cat([self.R, rows.to(torch.float64)])
        b = torch.cat([self.qty, rhs.to(torch.float64)])
        q, r = torch.linalg.qr(a, mode="reduced")
        self.R = r
        self.qty = q.T @ b
        self.lost += max(0.0, float(b @ b) - float(self.qty @ self.qty))

    def _svd(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        scale = torch.linalg.norm(self.R, dim=0)
        scale[scale == 0] = 1.0
        u, s, vt = torch.linalg.svd(self.R / scale, full_matrices=False)
        return scale, u, s, vt

    def whitening(self, rcond: float = 1e-13) -> Tensor:
        """T (n × k) with ξ = T z making the least-squares Hessian in z the identity (k = kept rank)."""
        scale, _, s, vt = self._svd()
        keep = s > rcond * s[0]
        return (vt[keep].T / s[keep]) / scale[:, None]

    def solve(self, rcond: float = 1e-13) -> Tensor:
        """Minimum-norm solution in column-scaled coordinates, singular values below rcond·s_max cut."""
        scale, u, s, vt = self._svd()
        keep = s > rcond * s[0]
        x = vt[keep].T @ ((u[:, keep].T @ self.qty) / s[keep])
        return x / scale

    def solve_toward(self, x0: Tensor, alpha: float, rcond: float = 1e-13) -> Tensor:
        """The ridge solution min |Rx − Qᵀy|² + α s_max² |D(x − x0)|² (D: the column scales): a step
        from x0 toward `solve()` that is shortest along the least-determined directions; α → 0 gives
        `solve()` on the kept rank, α → ∞ gives x0."""
        scale, u, s, vt = self._svd()
        keep = s > rcond * s[0]
        u, s, vt = u[:, keep], s[keep], vt[keep]
        z0 = x0.to(torch.float64) * scale
        r = self.qty - u @ (s * (vt @ z0))  # residual at x0, in the range of R
        z = z0 + vt.T @ ((s / (s * s + alpha * float(s[0]) ** 2)) * (u.T @ r))
        return z / scale

    def residual2(self, x: Tensor) -> float:
        return self.lost + float(((self.R @ x.to(torch.float64) - self.qty) ** 2).sum())


def linear_parameters(model: torch.nn.Module) -> List[Tensor]:
    """The parameters `model` is linear in (see the module docstring); a clear error if none."""
    if not hasattr(model, "linear_parameters") or not hasattr(model, "linear_design"):
        family = getattr(model, "family", type(model).__name__)
        raise ValueError(f"optimizer varpro needs a model that is linear in some parameters "
                         f"(linear_parameters/linear_design); family '{family}' is not; use adam or lbfgs")
    return [getattr(model, name) for name in model.linear_parameters()]


Design = Tuple[Tensor, Tensor, Optional[Tensor]]  # (E [n_frames, P], F [N, 3, P], V [n_frames, 3, 3, P] | None)


def batch_design(model: torch.nn.Module, b: Batch, w: LossWeights) -> Design:
    """The linear map (energies, forces, virials if the loss has them) of one batch."""
    need_v = w.virial > 0 and bool(b.virial_mask.any())
    return model.linear_design(b.species, b.edge_index, b.edge_vec, b.node_frame, b.n_frames, need_v)


def design_rows(model: torch.nn.Module, b: Batch, w: LossWeights, design: Optional[Design] = None
                ) -> Tuple[Tensor, Tensor]:
    """Weighted least-squares rows (energy, force, virial) of one batch: |rows ξ − rhs|² is that
    batch's Σ_frames w × per-frame loss. `design`: the batch's `batch_design`, if already computed."""
    need_v = w.virial > 0 and bool(b.virial_mask.any())
    E, F, V = design if design is not None else batch_design(model, b, w)
    n, wt = b.n_atoms, b.weight
    P = E.shape[1]
    rows, rhs = [], []
    if w.energy > 0 and bool(b.energy_mask.any()):
        sw = torch.sqrt(w.energy * wt) / n
        m = b.energy_mask
        rows.append((E * sw[:, None])[m])
        rhs.append((b.energy * sw)[m])
    if w.forces > 0 and bool(b.force_mask.any()):
        fr = b.node_frame.repeat_interleave(3)
        sw = torch.sqrt(w.forces * wt[fr] / (3.0 * n[fr]))
        m = b.force_mask.repeat_interleave(3)
        rows.append((F.reshape(-1, P) * sw[:, None])[m])
        rhs.append((b.forces.reshape(-1) * sw)[m])
    if need_v and V is not None:
        fr = torch.arange(b.n_frames).repeat_interleave(9)
        sw = torch.sqrt(w.virial * wt[fr] / 9.0)
        if w.virial_per_atom:
            sw = sw / n[fr]
        m = b.virial_mask.repeat_interleave(9)
        rows.append((V.reshape(-1, P) * sw[:, None])[m])
        rhs.append((b.virial.reshape(-1) * sw)[m])
    if not rows:
        return torch.zeros(0, P, dtype=E.dtype), torch.zeros(0, dtype=E.dtype)
    return torch.cat(rows), torch.cat(rhs)


def solve_linear(model: torch.nn.Module, data: FullBatch, w: LossWeights, rcond: float = 1e-13
                 ) -> Tuple[float, IncrementalQR]:
    """Set the model's linear parameters to the exact least-squares optimum of the loss over `data`
    for its current other parameters; returns (that loss, the factorisation)."""
    params = linear_parameters(model)
    qr = IncrementalQR(sum(p.numel() for p in params))
    scale = 1.0 / math.sqrt(max(data.weight_sum, 1e-300))
    for b in data.design_batches:
        r, y = design_rows(model, b, w)
        if r.shape[0]:
            qr.add(r * scale, y * scale)
    x = qr.solve(rcond)
    set_flat(params, x)
    return qr.residual2(x), qr


def set_flat(params: Sequence[Tensor], x: Tensor) -> None:
    """Copy the flat vector x into `params` (in order)."""
    off = 0
    with torch.no_grad():
        for p in params:
            p.copy_(x[off: off + p.numel()].reshape(p.shape).to(p.dtype))
            off += p.numel()


def get_flat(params: Sequence[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def nonlinear_parameters(model: torch.nn.Module, exclude: Optional[Sequence[Tensor]] = None) -> List[Tensor]:
    """Trainable parameters other than `exclude` (identity comparison)."""
    ids = {id(p) for p in (exclude or [])}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
