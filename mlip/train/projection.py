"""One variable-projection evaluation (`mlip.train.varpro`) over the whole training set, on one or
several processes.

At nonlinear parameters θ (the MTP's radial coefficients) an evaluation is
 1. the design pass: per design batch, the model's linear map (E, F, V) (`batch_design`) and its
    weighted least-squares rows, reduced by an incremental QR;
 2. the exact linear solve ξ (`IncrementalQR.solve`), written into the model;
 3. the gradient pass: predictions E ξ, F ξ, V ξ from the designs kept since step 1 (the model is not
    evaluated a second time), the loss and its cotangents through the common loss code, and ∂L/∂θ from
    the model's `linear_design_vjp` (analytic for the MTP; autograd through the model otherwise).
The loss is the one at (θ, ξ) and, ξ being optimal, its θ-gradient at fixed ξ is the gradient of the
reduced loss (envelope theorem).

Parallelism. The design batches are split into `SEGMENTS` contiguous segments of about equal edge
counts, a number that does not depend on the number of workers; each segment is reduced on its own
(its QR factor, its loss and gradient) and the main process combines them in segment order, so one
and two workers give the same numbers (to round-off). Every process computes with one torch thread:
measured, two intra-op threads made an evaluation slower (index_add/index_select contention), two
processes on frame segments make it ~1.9x faster. Workers are persistent spawned processes that get
their segments' batches and a copy of the model once, then per evaluation only θ and ξ; each keeps
its segments' designs between the two passes. The main process takes the first share itself.
"""
from __future__ import annotations

import contextlib
import traceback
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from mlip.graph import Batch
from mlip.train.full_batch import (Design, FullBatch, IncrementalQR, LossWeights, batch_design, batch_loss_sum,
                                   design_rows, get_flat, linear_parameters, nonlinear_parameters, set_flat)
from mlip.train.loss import loss_terms, weighted_loss_sum

SEGMENTS = 4  # reduction units of an evaluation (fixed: results do not depend on the worker count)

# one segment's QR factor: (R [k, P], Qᵀy [k], |y|² outside the range of Q)
Factor = Tuple[Tensor, Tensor, float]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread (the module docstring says why)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def split_segments(sizes: Sequence[int], parts: int) -> List[List[int]]:
    """Indices 0..len(sizes)-1 in at most `parts` contiguous non-empty groups of about equal Σ size."""
    total = max(1, sum(sizes))
    groups: List[List[int]] = [[] for _ in range(parts)]
    cum = 0
    for k, s in enumerate(sizes):
        groups[min(parts - 1, int((cum + 0.5 * s) * parts / total))].append(k)
        cum += s
    return [g for g in groups if g]


def segment_design(model: torch.nn.Module, batches: Sequence[Batch], w: LossWeights, scale: float
                   ) -> Tuple[Factor, List[Design]]:
    """The QR factor of one segment's least-squares rows (scaled by `scale`) and its designs."""
    qr = IncrementalQR(sum(p.numel() for p in linear_parameters(model)))
    designs = []
    for b in batches:
        d = batch_design(model, b, w)
        r, y = design_rows(model, b, w, d)
        if r.shape[0]:
            qr.add(r * scale, y * scale)
        designs.append(d)
    return (qr.R, qr.qty, qr.lost), designs


def _cotangents(b: Batch, design: Design, xi: Tensor, w: LossWeights, weight_sum: float
                ) -> Tuple[float, Tensor, Tensor, Optional[Tensor]]:
    """The batch's share of the loss at ξ and its cotangents ∂L/∂(energy [B], forces [N, 3], virial
    [B, 3, 3] or None), from the design (the common loss code, so masks and weights are the same)."""
    E, F, V = design
    xi = xi.to(E.dtype)
    pred = {"energy": E @ xi, "forces": F @ xi}
    if V is not None:
        pred["virial"] = V @ xi
    leaves = {k: v.detach().requires_grad_(True) for k, v in pred.items()}
    with torch.enable_grad():
        loss = weighted_loss_sum(loss_terms(leaves, b, w.virial_per_atom), b, w.energy, w.forces, w.virial)
        loss = loss / weight_sum
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    g = {k: (gr if gr is not None else torch.zeros_like(leaves[k])) for k, gr in zip(leaves, grads)}
    return float(loss.detach()), g["energy"], g["forces"], g.get("virial")


def segment_gradient(model: torch.nn.Module, batches: Sequence[Batch], designs: Sequence[Design],
                     w: LossWeights, weight_sum: float) -> Tuple[float, List[Tensor]]:
    """One segment's loss and ∂L/∂θ at the model's current parameters (ξ already solved)."""
    xi = get_flat(linear_parameters(model))
    theta = nonlinear_parameters(model, linear_parameters(model))
    names = {id(p): n for n, p in model.named_parameters()}
    grads = [torch.zeros_like(p) for p in theta]
    total = 0.0
    fast = hasattr(model, "linear_design_vjp")
    for b, d in zip(batches, designs):
        if not fast:  # any linear model: autograd through the model (the gradient pass of old)
            with torch.enable_grad():
                loss = batch_loss_sum(model, b, w, create_graph=True) / weight_sum
                gs = torch.autograd.grad(loss, theta, allow_unused=True)
            for acc, g in zip(grads, gs):
                if g is not None:
                    acc += g
            total += float(loss.detach())
            continue
        loss, gE, gF, gW = _cotangents(b, d, xi, w, weight_sum)
        total += loss
        vjp = model.linear_design_vjp(b.species, b.edge_index, b.edge_vec, b.node_frame, b.edge_frame, gE, gF, gW)
        for acc, p in zip(grads, theta):
            if names[id(p)] in vjp:
                acc += vjp[names[id(p)]]
    return total, grads


class _Share:
    """The segments one process works on, with their designs between the two passes."""

    def __init__(self, model: torch.nn.Module, segments: List[List[Batch]], w: LossWeights,
                 weight_sum: float) -> None:
        self.model, self.segments, self.w, self.weight_sum = model, segments, w, weight_sum
        self.designs: List[List[Design]] = []

    def design(self, theta: Optional[Tensor]) -> List[Factor]:
        model = self.model
        if theta is not None:
            set_flat(nonlinear_parameters(model, linear_parameters(model)), theta)
        scale = 1.0 / max(self.weight_sum, 1e-300) ** 0.5
        out = [segment_design(model, seg, self.w, scale) for seg in self.segments]
        self.designs = [d for _, d in out]
        return [f for f, _ in out]

    def gradient(self, xi: Optional[Tensor]) -> List[Tuple[float, List[Tensor]]]:
        if xi is not None:
            set_flat(linear_parameters(self.model), xi)
        out = [segment_gradient(self.model, seg, d, self.w, self.weight_sum)
               for seg, d in zip(self.segments, self.designs)]
        self.designs = []
        return out


def _worker_main(conn: Any, share: _Share) -> None:  # pragma: no cover - runs in a child process
    """A worker process: answer ("design", θ) and ("gradient", ξ) for its share until ("close", _)."""
    torch.set_num_threads(1)
    while True:
        try:
            cmd, arg = conn.recv()
        except EOFError:
            return
        if cmd == "close":
            return
        try:
            conn.send(("ok", share.design(arg) if cmd == "design" else share.gradient(arg)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


class ProjectedEvaluator:
    """Evaluations of the reduced loss of `model` on `data` with `workers` processes (module docstring)."""

    def __init__(self, model: torch.nn.Module, data: FullBatch, w: LossWeights, workers: int = 1) -> None:
        self.model, self.w = model, w
        self.linear = linear_parameters(model)
        self.theta = nonlinear_parameters(model, self.linear)
        batches = data.design_batches
        segs = split_segments([int(b.edge_index.shape[1]) for b in batches], SEGMENTS)
        shares = split_segments([sum(int(batches[k].edge_index.shape[1]) for k in s) for s in segs],
                                max(1, min(int(workers), len(segs))))
        self.n_segments = len(segs)
        self.workers = len(shares)
        seg_batches = [[batches[k] for k in s] for s in segs]
        self.own = _Share(model, [seg_batches[s] for s in shares[0]], w, data.weight_sum)
        self.children: List[Tuple[Any, Any]] = []  # (process, connection)
        if len(shares) > 1:
            import copy
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            clone = copy.deepcopy(model)
            for share in shares[1:]:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, daemon=True, args=(
                    child, _Share(clone, [seg_batches[s] for s in share], w, data.weight_sum)))
                proc.start()
                child.close()
                self.children.append((proc, parent))

    def _ask(self, cmd: str, arg: Tensor) -> List[Any]:
        """Send `cmd` to every worker, do the main process's share, then collect (segment order)."""
        for _, conn in self.children:
            conn.send((cmd, arg))
        out = list(self.own.design(None) if cmd == "design" else self.own.gradient(None))
        for proc, conn in self.children:
            try:
                status, res = conn.recv()
            except EOFError:
                raise RuntimeError(f"varpro worker process {proc.pid} died (exit code {proc.exitcode})") from None
            if status != "ok":
                raise RuntimeError(f"varpro worker process {proc.pid} failed:\n{res}")
            out.extend(res)
        return out

    def evaluate(self, rcond: float = 1e-13) -> Tuple[float, List[Tensor]]:
        """Solve the linear parameters at the current θ (written into the model); return the loss and
        its gradient with respect to θ (in `nonlinear_parameters` order)."""
        with one_thread():
            factors = self._ask("design", get_flat(self.theta))
            qr = IncrementalQR(sum(p.numel() for p in self.linear))
            for R, qty, lost in factors:
                qr.add(R, qty)
                qr.lost += lost
            x = qr.solve(rcond)
            set_flat(self.linear, x)
            parts = self._ask("gradient", x)
        loss = 0.0
        grads = [torch.zeros_like(p) for p in self.theta]
        for seg_loss, seg_grads in parts:
            loss += seg_loss
            for acc, g in zip(grads, seg_grads):
                acc += g.to(acc.dtype)
        return loss, grads

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        for proc, conn in self.children:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
            conn.close()
        self.children = []

    def __enter__(self) -> "ProjectedEvaluator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
