"""Full-batch quasi-Newton optimisers of the Trainer (`optimizer.name: varpro | lbfgs`), for models
that are linear in part of their parameters (the MTP; see `mlip.train.full_batch` for the interface).

varpro   variable projection (the MLIP-2 way of fitting an MTP, with fewer evaluations): strong-Wolfe
         L-BFGS over the nonlinear parameters only; every evaluation first solves the linear ones
         exactly by least squares, so the gradient is that of the reduced loss (envelope theorem).
         An evaluation (`mlip.train.projection`) reuses the least-squares designs for the loss and
         takes the gradient from the model's analytic `linear_design_vjp` (MTP); it runs on as many
         processes as the recipe's `threads` (frame segments; the same numbers on 1 or N).
         With a validation set, the validation loss at every evaluation selects the parameters kept
         (early stopping: a long fit keeps lowering the training loss while unseen energies get
         worse) and `patience` counts evaluations without a relative improvement of
         `min_rel_improvement`; without one, the training loss does.
lbfgs    joint L-BFGS over all parameters in cycles of [exact linear solve → L-BFGS of `cycle_iter`
         iterations], the linear block in whitened coordinates of the current least-squares problem
         (`precondition`); stops when a cycle no longer improves the loss. A model without a linear
         part gets plain full-batch L-BFGS.

Both stop at `max_iter` evaluations, at `max_time` seconds (the Trainer's clock: the whole run, a
resumed one included), or when `should_stop()` says so (the Trainer's SIGTERM/SIGINT flag: the run
then finishes, saves and evaluates). Resuming restarts L-BFGS
from the checkpointed parameters with an empty history (the curvature pairs are not saved), so a
resumed fit is not bit-identical to an uninterrupted one; evaluation count, best validation loss,
patience counter and best parameters carry over.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import torch

from mlip.train.full_batch import (FullBatch, LossWeights, full_loss, get_flat, linear_parameters,
                                   loss_and_grad, nonlinear_parameters, set_flat, solve_linear)
from mlip.train.projection import ProjectedEvaluator, one_thread

# per optimiser: its options (optimizer.<key> in the recipe) and their defaults
OPTIONS: Dict[str, Dict[str, Any]] = {
    "varpro": {"max_iter": 2000, "history": 100, "patience": 30, "max_time": None,
               "min_rel_improvement": 1e-6, "max_edges": 20000},
    "lbfgs": {"max_iter": 2000, "history": 100, "max_time": None, "min_rel_improvement": 1e-6,
              "max_edges": 20000, "cycle_iter": 400, "precondition": True},
}
FULL_BATCH_KEYS = sorted({k for opts in OPTIONS.values() for k in opts})

# on_eval(evaluation number, training loss, validation loss or None, new best?)
EvalCallback = Callable[[int, float, Optional[float], bool], None]


class _Stop(Exception):
    """Raised inside the L-BFGS closure to end a fit between evaluations."""


def resolve_options(ocfg: Dict[str, Any]) -> Dict[str, Any]:
    """The options of optimiser `ocfg['name']`: its defaults ← the recipe's non-null values; a key of
    another optimiser is an error naming it."""
    name = ocfg["name"]
    opts = dict(OPTIONS[name])
    for key in FULL_BATCH_KEYS:
        val = ocfg.get(key)
        if val is None:
            continue
        if key not in opts:
            users = [n for n, o in OPTIONS.items() if key in o]
            raise ValueError(f"optimizer.{key} applies to optimizer {' / '.join(users)}, not '{name}'")
        opts[key] = val
    if ocfg.get("ema"):
        raise ValueError(f"optimizer.ema applies to optimizer adam, not '{name}'")
    for key in ("max_iter", "history", "patience", "cycle_iter", "max_edges"):
        if key in opts and int(opts[key]) < 1:
            raise ValueError(f"optimizer.{key} must be a positive integer, got {opts[key]!r}")
    return opts


def make_optimizer(name: str, model: torch.nn.Module, train: FullBatch, val: Optional[FullBatch],
                   w: LossWeights, opts: Dict[str, Any], log: Callable[[str], None] = print):
    cls = {"varpro": VarPro, "lbfgs": JointLBFGS}[name]
    return cls(model, train, val, w, opts, log)


def _lbfgs(params: List[torch.Tensor], n_iter: int, n_eval: int, history: int) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(params, lr=1.0, max_iter=n_iter, max_eval=n_eval, history_size=history,
                             tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")


class _FullBatchOptimizer:
    """What the Trainer needs of a full-batch optimiser: `run(should_stop, on_eval)`, `opts`, `w`,
    `state` (evaluation count `n`, `best_n`, `kept_loss`), and `state_dict`/`load_state_dict`, which
    carry that bookkeeping through checkpoints where Adam's state goes."""

    name = "?"

    def __init__(self, model: torch.nn.Module, train: FullBatch, val: Optional[FullBatch],
                 w: LossWeights, opts: Dict[str, Any], log: Callable[[str], None] = print) -> None:
        self.model, self.train, self.val, self.w, self.opts, self.log = model, train, val, w, opts, log
        self.state: Dict[str, Any] = {"n": 0, "best": math.inf, "best_n": None, "kept_loss": None}

    def state_dict(self) -> Dict[str, Any]:
        return {"name": self.name, **self.state}

    def load_state_dict(self, d: Dict[str, Any]) -> None:
        if d.get("name") != self.name:
            raise ValueError(f"the checkpoint holds optimizer '{d.get('name', 'adam')}' state, "
                             f"the recipe asks for '{self.name}'")
        self.state.update({k: v for k, v in d.items() if k != "name"})


class VarPro(_FullBatchOptimizer):
    """Variable projection (see the module docstring)."""

    name = "varpro"

    def __init__(self, model: torch.nn.Module, train: FullBatch, val: Optional[FullBatch],
                 w: LossWeights, opts: Dict[str, Any], log: Callable[[str], None] = print) -> None:
        super().__init__(model, train, val, w, opts, log)
        self.linear = linear_parameters(model)
        self.theta = nonlinear_parameters(model, self.linear)
        if not self.theta:
            raise ValueError("optimizer varpro: the model has no nonlinear parameters to optimise")
        self.state.update(best_val=math.inf, since=0, best_params=None)
        # evaluation processes: the recipe's `threads` (the Trainer set torch's thread count from it)
        self.workers = max(1, torch.get_num_threads())
        self.evaluator: Optional[ProjectedEvaluator] = None

    def _params(self) -> List[torch.Tensor]:
        return self.theta + self.linear

    def _evaluate(self, on_eval: EvalCallback) -> float:
        st = self.state
        if self.evaluator is None:
            self.evaluator = ProjectedEvaluator(self.model, self.train, self.w, self.workers)
            if self.evaluator.workers > 1:
                self.log(f"  varpro: evaluations on {self.evaluator.workers} processes "
                         f"({self.evaluator.n_segments} segments)")
        loss, grads = self.evaluator.evaluate()
        for p, g in zip(self.theta, grads):
            p.grad = g
        st["n"] += 1
        # selection criterion: the validation loss if there is a validation set (the training loss
        # then only drives L-BFGS), else the training loss
        crit, key, val_loss = loss, "best", None
        if self.val is not None:
            with one_thread():  # as the evaluation: the same numbers whatever the worker count
                val_loss = full_loss(self.model, self.val, self.w)
            crit, key = val_loss, "best_val"
            st["best"] = min(st["best"], loss)
        st["since"] = 0 if crit < st[key] * (1.0 - float(self.opts["min_rel_improvement"])) else st["since"] + 1
        improved = crit < st[key]
        if improved:
            st[key] = crit
            st["best_params"] = get_flat(self._params()).clone()
            st["best_n"] = st["n"]
            st["kept_loss"] = loss  # training loss of the parameters kept so far
        if st["n"] % 5 == 0 or st["n"] == 1:
            extra = (f", validation {val_loss:.6e} (best {st['best_val']:.6e} at evaluation {st['best_n']})"
                     if val_loss is not None else "")
            self.log(f"  varpro evaluation {st['n']}: loss {loss:.6e} (best {st['best']:.6e}{extra})")
        on_eval(st["n"], loss, val_loss, improved)
        return loss

    def run(self, should_stop: Callable[[], bool], on_eval: EvalCallback) -> None:
        """Fit until a stopping rule fires; the model is left at the best parameters seen."""
        st, o = self.state, self.opts
        remaining = int(o["max_iter"]) - st["n"]
        if remaining > 0 and st["since"] < int(o["patience"]):
            opt = _lbfgs(self.theta, remaining, remaining, int(o["history"]))

            def closure() -> torch.Tensor:
                if should_stop() or st["since"] >= int(o["patience"]):
                    raise _Stop()
                opt.zero_grad()
                return torch.tensor(self._evaluate(on_eval), dtype=torch.float64)

            try:
                opt.step(closure)
            except _Stop:
                pass
            finally:
                if self.evaluator is not None:
                    self.evaluator.close()
                    self.evaluator = None
        if st["best_params"] is not None:
            set_flat(self._params(), st["best_params"])
        best = st["best_val"] if self.val is not None else st["best"]
        what = "validation" if self.val is not None else "training"
        self.log(f"  varpro done after {st['n']} evaluations: best {what} loss {best:.6e} at evaluation "
                 f"{st['best_n']} (the parameters kept)")


class JointLBFGS(_FullBatchOptimizer):
    """Joint L-BFGS in cycles (see the module docstring)."""

    name = "lbfgs"

    def __init__(self, model: torch.nn.Module, train: FullBatch, val: Optional[FullBatch],
                 w: LossWeights, opts: Dict[str, Any], log: Callable[[str], None] = print) -> None:
        super().__init__(model, train, val, w, opts, log)
        self.has_linear = hasattr(model, "linear_design")
        self.linear = linear_parameters(model) if self.has_linear else []
        self.theta = nonlinear_parameters(model, self.linear)
        self.state["done"] = False

    def _cycle_params(self):
        """(parameters L-BFGS moves, the callable evaluated, write-back) for one cycle."""
        model = self.model
        if not self.has_linear:
            return [p for p in model.parameters() if p.requires_grad], model, lambda: None
        loss, qr = solve_linear(model, self.train, self.w)
        self.log(f"  linear least squares: loss {loss:.6e}")
        if not self.opts["precondition"]:
            return [p for p in model.parameters() if p.requires_grad], model, lambda: None
        T = qr.whitening().to(self.theta[0].dtype if self.theta else torch.float64)
        xi0 = get_flat(self.linear)
        z = torch.linalg.lstsq(T, xi0.unsqueeze(1)).solution.squeeze(1).clone().requires_grad_(True)
        xi_perp = (xi0 - T @ z.detach()).detach()
        names = list(model.linear_parameters())
        shapes = [p.shape for p in self.linear]
        sizes = [p.numel() for p in self.linear]

        def fn(sp, ei, vec):
            parts = torch.split(T @ z + xi_perp, sizes)
            return torch.func.functional_call(
                model, {n: x.reshape(s) for n, x, s in zip(names, parts, shapes)}, (sp, ei, vec))

        def write_back() -> None:
            set_flat(self.linear, T @ z.detach() + xi_perp)

        return [z] + self.theta, fn, write_back

    def run(self, should_stop: Callable[[], bool], on_eval: EvalCallback) -> None:
        st, o = self.state, self.opts
        all_params = [p for p in self.model.parameters() if p.requires_grad]
        while not st["done"] and st["n"] < int(o["max_iter"]) and not should_stop():
            params, fn, write_back = self._cycle_params()
            cyc = {"n": 0, "loss": math.inf}
            n_iter = int(o["cycle_iter"])
            opt = _lbfgs(params, n_iter, int(n_iter * 1.25), int(o["history"]))

            def closure() -> torch.Tensor:
                if should_stop():
                    raise _Stop()
                opt.zero_grad()
                loss, grads = loss_and_grad(fn, self.train, self.w, params)
                for p, g in zip(params, grads):
                    p.grad = g
                cyc["n"] += 1
                cyc["loss"] = loss
                on_eval(st["n"] + cyc["n"], loss, None, False)
                if (st["n"] + cyc["n"]) % 25 == 0:
                    self.log(f"  lbfgs evaluation {st['n'] + cyc['n']}: loss {loss:.6e}")
                return torch.tensor(loss, dtype=torch.float64)

            snapshot = get_flat(all_params).clone()
            try:
                opt.step(closure)
            except _Stop:
                pass
            write_back()
            st["n"] += max(cyc["n"], 1)
            loss = cyc["loss"]
            if not math.isfinite(loss):
                set_flat(all_params, snapshot)
                self.log("  non-finite loss: restored the previous parameters and stopped")
                break
            st["kept_loss"] = loss
            val = f", validation {full_loss(self.model, self.val, self.w):.6e}" if self.val is not None else ""
            self.log(f"  lbfgs cycle end at {st['n']} evaluations: loss {loss:.6e}{val}")
            if loss > st["best"] * (1.0 - float(o["min_rel_improvement"])):
                st["done"] = True
            else:
                st["best"], st["best_n"] = loss, st["n"]
        if self.has_linear:
            st["kept_loss"], _ = solve_linear(self.model, self.train, self.w)
            self.log(f"  final linear least squares: loss {st['kept_loss']:.6e}")
