"""The training loop shared by all families; `optimizer.name` picks how the parameters move:

adam            mini-batches, LR schedule, EMA, clipping (the default; every family);
varpro, lbfgs   full-batch quasi-Newton with an exact solve of the linear parameters, for models
                linear in part of their parameters (the MTP): `mlip.train.varpro`. A step is then
                one evaluation of the loss over the whole training set.
Both write the same run directory: config.yaml, metrics.csv, checkpoints/{last,best}.pt (readable
by `load_checkpoint_model`), summary.json (best.pt's validation, and test metrics if data.test is given), plots.

Reproducibility contract (adam): the batch drawn at step t is a pure function of (seed, t); the
learning rate and the loss prefactors are functions of t (or, clock-driven, of the training seconds)
and of the `plateau` schedule's state; the checkpoint stores model, EMA, optimiser, schedule state and
elapsed training seconds, so a run resumed from `last.pt` produces the same parameters as one that
never stopped (clock-driven: the same as one whose clock read the same seconds at each step). A resumed varpro /
lbfgs run restarts L-BFGS from the checkpointed parameters with an empty history (see varpro.py).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import yaml

from mlip.graph import build_graphs, collate, fit_energy_bias
from mlip.io.safe_write import atomic_write, atomic_write_buffered, ensure_dir, open_append
from mlip.data.summary import data_summary
from mlip.metrics import ErrorAccumulator, format_summary
from mlip.models import AtomicModel, build_model, model_class
from mlip.models.base import predict
from mlip.train.finetune import (apply_freeze, check_compatible, check_freeze_optimizer, load_checkpoint_model,
                                  load_init_model, read_checkpoint, refit_energy_reference, split_model_config)
from mlip.train.distributed import Distributed, RankLost, resolve_device
from mlip.train.loss import loss_terms, total_loss
from mlip.train.schedules import LRSchedule, Prefactor, validation_loss
from mlip.train.datasets import load_frames, prepare_data, subtract_baseline
from mlip.train.evaluation import EMA, accumulate_graphs, accumulate_sharded

CSV_FIELDS = ["step", "time", "lr", "loss", "pe", "pf", "pv", "val_energy_rmse", "val_force_rmse",
              "val_virial_rmse_per_atom", "val_loss"]


def _dtype(name: str) -> torch.dtype:
    return torch.float64 if name == "float64" else torch.float32


def keep_rows_until(csv_path: str, step: int) -> None:
    """Rewrite a metrics.csv (atomically) without the rows after `step` (and without a last row cut
    short by a kill): what a resumed run is about to write again."""
    with open(csv_path, newline="") as fh:
        lines = fh.read().splitlines(keepends=True)
    kept = lines[:1]
    for line in lines[1:]:
        if not line.endswith("\n"):
            break  # cut short
        head = line.split(",", 1)[0]
        try:
            if int(float(head)) > step:
                break
        except ValueError:
            break
        kept.append(line)
    if len(kept) != len(lines):
        atomic_write(csv_path, "".join(kept))


# Parameters that weight decay leaves alone (the last component of the parameter's name): biases, the
# per-species energy scale (NequIP-style) and reference energies (MTP species_coeffs), DP's ResNet
# timestep dt, and trainable Bessel frequencies. Each has a natural non-zero value, so pulling it toward
# zero biases the model instead of smoothing it.
_NO_DECAY = re.compile(r"^(bias|head_b\d+|dt|energy_scale|freqs|species_coeffs)$")


def _decay_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Adam's parameter groups: weight decay acts on weights (matrices, e3nn-style flattened linear
    weights, radial and readout coefficients), not on the parameters `_NO_DECAY` names. Without decay
    there is one group, as before, so the optimiser state of older checkpoints loads unchanged."""
    decay: List[torch.Tensor] = []
    spare: List[torch.Tensor] = []
    for name, p in model.named_parameters():
        (spare if weight_decay <= 0.0 or _NO_DECAY.match(name.rsplit(".", 1)[-1]) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": spare, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class Trainer:
    def __init__(self, cfg: Dict[str, Any], resume: bool = False, overwrite: bool = False,
                 dist: Optional[Distributed] = None) -> None:
        self.cfg = cfg
        # data parallelism (mlip.train.distributed): one process unless the environment holds a group
        self.device = resolve_device(cfg.get("device") or "cpu")
        self.dist = dist if dist is not None else Distributed.from_env(self.device)
        self.out = cfg["output"]
        self.ckpt_dir = os.path.join(self.out, "checkpoints")
        # called as hook(name, path) after every checkpoint is written (e.g. the AL loop's kill switch)
        self.on_checkpoint: List[Callable[[str, str], None]] = []
        last = os.path.join(self.ckpt_dir, "last.pt")
        if os.path.exists(last) and not (resume or overwrite):
            raise ValueError(f"'{self.out}' already holds a run (checkpoints/last.pt); "
                             "use --resume to continue it or --overwrite to start again")
        if resume and not os.path.exists(last):
            raise FileNotFoundError(f"--resume: no checkpoint '{last}' to resume from")
        self.resume = resume
        ckpt = self._resume_checkpoint() if resume else None
        ensure_dir(self.ckpt_dir)
        self.dtype = _dtype(cfg["dtype"])
        if cfg["threads"]:
            torch.set_num_threads(int(cfg["threads"]))
        torch.manual_seed(cfg["seed"])
        self.tcfg = cfg["training"]

        self.train_frames, self.val_frames = prepare_data(cfg)
        self.model = self._build_model(ckpt)
        sp, rc = self.model.species, self.model.cutoff
        self.train_graphs = build_graphs(self.train_frames, sp, rc, self.dtype)
        self.val_graphs = build_graphs(self.val_frames, sp, rc, self.dtype)
        # the labels as read (they share the graphs' tensors): the summary scores exports on these
        self.raw_train_graphs, self.raw_val_graphs = self.train_graphs, self.val_graphs
        if getattr(self.model, "baseline", None) is not None:
            # Δ-learning: the frozen baseline's share is taken out of the labels once, and the model
            # leaves it out of forward while it trains (exports, rebuilt from checkpoints, include it)
            self.train_graphs = subtract_baseline(self.model.baseline, self.train_graphs)
            self.val_graphs = subtract_baseline(self.model.baseline, self.val_graphs)
            self.model.baseline_in_labels = True
        self.data_summary = {"train": data_summary(self.train_frames), "validation": data_summary(self.val_frames)}
        if ckpt is None and self._init_model is not None:
            self.warm_start(self._init_model)
            self._init_model = None
        elif ckpt is None:
            self._initialise_statistics()
        frozen = apply_freeze(self.model, split_model_config(cfg["model"])[2])
        check_freeze_optimizer(self.model, frozen, cfg["optimizer"]["name"])

        ocfg = cfg["optimizer"]
        lcfg = cfg["loss"]
        self.pref = {k: Prefactor(lcfg[k], k) for k in ("energy", "forces", "virial")}
        self.full_batch = ocfg["name"] != "adam"
        if self.full_batch and self.device.type != "cpu":
            raise ValueError(f"optimizer {ocfg['name']} runs on the CPU: use device: cpu, or optimizer.name: adam")
        self.model.to(self.device)
        if self.full_batch and self.dist.active:
            raise ValueError(f"optimizer {ocfg['name']} runs in one process (a full-batch quasi-Newton fit); "
                             f"train it without --nproc/torchrun, or use optimizer.name: adam on {self.dist.world} ranks")
        self.dist.broadcast_module(self.model)
        if self.tcfg.get("readout_refit") and not (hasattr(self.model, "linear_parameters")
                                                   and hasattr(self.model, "linear_design")):
            raise ValueError(f"training.readout_refit: family '{self.model.family}' has no linear readout to "
                             "refit; set it false (families with one: nequip, mtp)")
        if self.full_batch:
            self.optimizer = self._full_batch_optimizer(ocfg)
        else:
            # fused Adam: one kernel for all parameters, ~8x faster than the per-tensor loop on CPU
            self.optimizer = torch.optim.Adam(_decay_groups(self.model, float(ocfg.get("weight_decay") or 0.0)),
                                              lr=ocfg["lr"]["start"], fused=True,
                                              decoupled_weight_decay=bool(ocfg.get("decoupled_weight_decay")))
        self.lr = LRSchedule(ocfg["lr"], self.tcfg["steps"],
                             max_time=self.tcfg["max_time"] if self.tcfg["schedule_by_time"] else None)
        self.clock: Callable[[], float] = time.perf_counter  # seconds; a test may drive it
        self.ema = EMA(self.model, ocfg["ema"]) if ocfg["ema"] else None
        self.step = 0
        self.offset_rows: List[torch.Tensor] = []
        self.offset_res: List[torch.Tensor] = []
        self.elapsed = 0.0
        self.best = math.inf
        if ckpt is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.ema is not None:
                self.ema.shadow = {k: v.to(self.device) for k, v in ckpt["ema"].items()}
            self.step, self.elapsed = ckpt["step"], ckpt["elapsed"]
            # `best` of a checkpoint from before the validation-loss criterion is in other units: forget it
            self.best = ckpt["best"] if ckpt.get("best_by") == "validation_loss" else math.inf
            self.lr.load_state_dict(ckpt.get("lr_state"))
            self.offset_rows, self.offset_res = ckpt.get("offset_window", ([], []))
        if self.dist.is_main:
            if overwrite and not resume:  # a new run: no best.pt of the old one may stand in for its own
                for name in ("last.pt", "best.pt"):
                    if os.path.exists(os.path.join(self.ckpt_dir, name)):
                        os.remove(os.path.join(self.ckpt_dir, name))
            self._write_config()

    # ------------------------------------------------------------------ set-up
    def _build_model(self, ckpt: Optional[Dict[str, Any]]) -> AtomicModel:
        self._init_model: Optional[AtomicModel] = None
        if ckpt is not None:
            model = build_model(ckpt["family"], ckpt["model_config"])
            model.to(self.dtype).load_state_dict(ckpt["model"])
            return model
        mcfg, init_from, freeze = split_model_config(self.cfg["model"])
        family = mcfg.pop("family")
        if freeze and init_from is None:
            raise ValueError(f"model.freeze {freeze} needs model.init_from (a trained model to keep parts of)")
        if init_from is not None:  # fine-tuning: the trained model's architecture (see mlip.train.finetune)
            init = load_init_model(init_from)
            seen = sorted({s for f in self.train_frames for s in f.symbols})
            check_compatible(init, family, mcfg, mcfg.get("species"), seen, init_from)
            self._init_model = init
            return build_model(init.family, init.config()).to(self.dtype)
        if "species" not in mcfg or not mcfg["species"]:
            mcfg["species"] = sorted({s for f in self.train_frames for s in f.symbols})
        from_file = mcfg.pop("from_file", None)
        if from_file is not None:
            cls = model_class(family)
            if not hasattr(cls, "from_file"):
                raise ValueError(f"model.from_file is not supported by family '{family}'")
            model = cls.from_file(from_file, **mcfg)
        else:
            model = build_model(family, mcfg)
        return model.to(self.dtype)

    def warm_start(self, model: AtomicModel) -> None:
        """Train from the weights of `model` (same architecture) instead of the fresh initialisation:
        copy them, refit the per-species energy reference on this run's training data, restart the
        EMA from them. Only before the first step (a resumed run continues from its checkpoint)."""
        if getattr(self, "step", 0):
            raise ValueError("warm_start: the run has already taken steps; warm start before training")
        if model.family != self.model.family or model.config() != self.model.config():
            raise ValueError(f"warm_start: the model ({model.family}, {model.config()}) does not have this "
                             f"run's architecture ({self.model.family}, {self.model.config()})")
        with torch.no_grad():
            self.model.load_state_dict({k: v.to(self.dtype) if v.dtype.is_floating_point else v
                                        for k, v in model.state_dict().items()})
        self.model.train()
        refit_energy_reference(self.model, self.train_graphs)
        if getattr(self, "ema", None) is not None:
            self.ema = EMA(self.model, self.ema.decay)

    def _initialise_statistics(self) -> None:
        bias = fit_energy_bias(self.train_graphs, len(self.model.species))
        self.model.set_energy_bias(bias.to(self.dtype))
        if hasattr(self.model, "fit_statistics"):
            rng = np.random.default_rng(self.cfg["seed"])
            n = min(len(self.train_graphs), int(self.tcfg["stat_frames"] or len(self.train_graphs)))
            pick = sorted(rng.choice(len(self.train_graphs), n, replace=False))
            b = collate([self.train_graphs[k] for k in pick])
            import inspect

            kwargs = {}
            if "forces" in inspect.signature(self.model.fit_statistics).parameters and bool(b.force_mask.any()):
                kwargs["forces"] = b.forces[b.force_mask]  # e.g. NequIP's energy scale = RMS force
            self.model.fit_statistics(b.species, b.edge_index, b.edge_vec, **kwargs)

    def _resume_checkpoint(self) -> Dict[str, Any]:
        """The state to resume from: checkpoints/last.pt or, when that file is damaged (truncated by a
        full disk, a copy cut short), best.pt, saying so; one clear error when neither is readable."""
        problems: List[str] = []
        for name in ("last.pt", "best.pt"):
            path = os.path.join(self.ckpt_dir, name)
            if not os.path.isfile(path):
                continue
            try:
                ckpt = read_checkpoint(path)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if problems:
                print(f"warning: {problems[0]}; resuming from '{path}' (step {ckpt.get('step')}) instead",
                      file=sys.stderr, flush=True)
            return ckpt
        raise ValueError(f"--resume: {problems[0]}; no other good checkpoint in '{self.ckpt_dir}'")

    def _write_config(self) -> None:
        atomic_write(os.path.join(self.out, "config.yaml"), yaml.safe_dump(self.cfg, sort_keys=False))

    def _full_batch_optimizer(self, ocfg: Dict[str, Any]):
        """varpro / lbfgs over the whole training set (mlip.train.varpro), with the recipe's fixed
        loss weights."""
        from mlip.train.full_batch import FullBatch, LossWeights
        from mlip.train.varpro import make_optimizer, resolve_options

        name = ocfg["name"]
        opts = resolve_options(ocfg)
        for k, p in self.pref.items():
            if p.start != p.limit:
                raise ValueError(f"loss.{k}: a {{start, limit}} schedule needs optimizer adam; "
                                 f"optimizer {name} takes one number per term")
        w = LossWeights(self.pref["energy"].start, self.pref["forces"].start, self.pref["virial"].start,
                        bool(self.cfg["loss"]["virial_per_atom"]))
        train = FullBatch(self.train_graphs, int(opts["max_edges"]))
        val = FullBatch(self.val_graphs, int(opts["max_edges"])) if self.val_graphs else None
        n_par = sum(p.numel() for p in self.model.parameters())
        print(f"{name}: {len(self.train_graphs)} frames, {train.n_atoms} atoms, {train.n_edges} edges in "
              f"{len(train)} batches ({len(self.val_graphs)} validation frames); loss weights "
              f"{w.energy:g}/{w.forces:g}/{w.virial:g}; {n_par} parameters", flush=True)
        return make_optimizer(name, self.model, train, val, w, opts,
                              log=lambda msg: print(msg, flush=True))

    # ------------------------------------------------------------------ loop
    def batch_indices(self, step: int) -> List[int]:
        n = len(self.train_graphs)
        bs = max(1, min(int(self.tcfg["batch_size"]), n))
        per_epoch = math.ceil(n / bs)
        epoch, pos = divmod(step, per_epoch)
        perm = np.random.default_rng([int(self.cfg["seed"]), epoch]).permutation(n)
        return [int(k) for k in perm[pos * bs: (pos + 1) * bs]]

    def _track_energy_offset(self, batch, pred) -> None:  # batch/pred None: an empty shard
        """Force-dominated training lets the per-species energy reference drift (forces do not see a
        constant); every `bias_refit_every` steps the drift seen on the recent training batches is
        removed by a least-squares shift of the reference, in the model and in its EMA alike."""
        every = int(self.tcfg["bias_refit_every"] or 0)
        if every <= 0 or not hasattr(self.model, "shift_energy_bias"):
            return
        n_sp = len(self.model.species)
        rows, res = torch.zeros(0, n_sp, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        if batch is not None:
            with torch.no_grad():
                onehot = torch.zeros(batch.n_frames, n_sp, dtype=torch.float64)
                onehot.index_put_((batch.node_frame.cpu(), batch.species.cpu()),
                                  torch.ones(len(batch.species), dtype=torch.float64), accumulate=True)
                m = batch.energy_mask.cpu()
                rows, res = onehot[m], (batch.energy - pred["energy"].detach()).double().cpu()[m]
        for r, e in self.dist.gather((rows, res)):  # every rank shifts by the same least-squares fit
            self.offset_rows.append(r)
            self.offset_res.append(e)
        if self.step % every == 0 and self.offset_rows:
            a = torch.cat(self.offset_rows).numpy()
            b = torch.cat(self.offset_res).numpy()
            self.offset_rows, self.offset_res = [], []
            if len(b) == 0:
                return
            delta = torch.from_numpy(np.linalg.lstsq(a, b, rcond=None)[0])
            shifted = self.model.shift_energy_bias(delta)
            if self.ema is not None:
                for k, d in shifted.items():
                    self.ema.shadow[k] += d.to(self.ema.shadow[k])

    def eval_model(self) -> AtomicModel:
        return self.ema.copy_to(self.model) if self.ema is not None else self.model

    def validation_errors(self, limit: Optional[int] = None) -> ErrorAccumulator:
        """Errors of the evaluated model on the validation frames (the training frames if there are
        none), shared among the ranks."""
        graphs = self.val_graphs if self.val_graphs else self.train_graphs
        if limit:
            graphs = graphs[:limit]
        return accumulate_sharded(self.eval_model(), graphs, self.dist)

    def validate(self, limit: Optional[int] = None) -> Dict[str, float]:
        return self.validation_errors(limit).summary()

    def save_checkpoint(self, name: str) -> str:
        path = os.path.join(self.ckpt_dir, name)
        if not self.dist.is_main:  # the state is the same on every rank: rank 0 writes it
            return path
        state = {
            "family": self.model.family, "model_config": self.model.config(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.shadow if self.ema is not None else None,
            "step": self.step, "elapsed": self.elapsed, "best": self.best, "best_by": "validation_loss",
            "lr_state": self.lr.state_dict(), "config": self.cfg,
            "eval_model": self.eval_model().state_dict(),
            "offset_window": (self.offset_rows, self.offset_res),
            "data_summary": self.data_summary,
        }
        atomic_write_buffered(path, lambda buf: torch.save(state, buf))
        for hook in self.on_checkpoint:
            hook(name, path)
        return path

    def run(self, stop_at: Optional[int] = None) -> Dict[str, Any]:
        """Train to `training.steps` (or only up to step `stop_at`, as if interrupted there)."""
        if self.full_batch:
            return self._run_full_batch(stop_at)
        t = self.tcfg
        steps = int(t["steps"])
        last_step = min(steps, stop_at) if stop_at is not None else steps
        if self.lr.by_time and stop_at is None:
            last_step = 1 << 62  # the clock ends the run; `steps` only scales the schedule
        max_time = float(t["max_time"]) if t["max_time"] else math.inf
        need_virial = self.pref["virial"].active
        csv_fh, writer = self._open_csv() if self.dist.is_main else (None, None)
        bar = None
        if t["progress"] and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=None if self.lr.by_time else steps, initial=self.step, desc="train", unit="step",
                       dynamic_ncols=True)
        clip = self.cfg["optimizer"]["clip_grad"]
        start = self.clock() - self.elapsed  # the budget counts the training seconds of every sitting
        last_val: Dict[str, float] = {}
        lr, frames_seen = None, 0
        t_loop = time.perf_counter()
        lost = False
        try:
            while self.step < last_step:
                # one clock for all ranks (the slowest), so that they stop and schedule together
                clock = self.dist.max(self.clock() - start) if math.isfinite(max_time) else 0.0
                if clock >= max_time:
                    break
                lr = self.lr(self.step, clock)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                pe, pf, pv = (self.pref[k](lr, self.lr.start) for k in ("energy", "forces", "virial"))
                indices = self.batch_indices(self.step)
                frames_seen += len(indices)
                self.model.train()
                batch, pred, loss = self._shard_loss(indices, pe, pf, pv, need_virial)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {float(loss)} at step {self.step}; "
                                             "lower optimizer.lr.start or enable optimizer.clip_grad")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.dist.all_reduce_grads(list(self.model.parameters()))
                loss_value = self.dist.sum(float(loss.detach()))
                if clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
                self.optimizer.step()
                self._track_energy_offset(batch, pred)
                if self.ema is not None:
                    self.ema.update(self.model)
                self.step += 1
                self.elapsed = self.clock() - start
                row = {"step": self.step, "time": f"{self.elapsed:.2f}", "lr": f"{lr:.3e}",
                       "loss": f"{loss_value:.6e}", "pe": f"{pe:.4g}", "pf": f"{pf:.4g}", "pv": f"{pv:.4g}"}
                if self.step % int(t["val_every"]) == 0 or self.step == steps:
                    last_val = self._validate_step(row)
                if writer is not None and (self.step % int(t["log_every"]) == 0 or "val_energy_rmse" in row):
                    writer.writerow(row)
                    csv_fh.flush()
                if self.step % int(t["checkpoint_every"]) == 0:
                    self.save_checkpoint("last.pt")
                if bar is not None:
                    bar.update(1)
                    e, f = (last_val.get(k, math.nan) for k in ("energy_rmse", "force_rmse"))
                    bar.set_postfix({"loss": f"{loss_value:.3e}", "lr": f"{lr:.1e}",
                                     **({"E": f"{e * 1e3:.2f}meV", "F": f"{f:.3f}"} if last_val else {})}, refresh=False)
        except RankLost:
            lost = True  # mid-step: keep the last periodic checkpoint, a consistent state to resume from
            raise
        finally:
            if bar is not None:
                bar.close()
            if csv_fh is not None:
                csv_fh.close()
            if not lost:
                self.save_checkpoint("last.pt")
        wall = time.perf_counter() - t_loop
        return self._finish({"frames_per_s": frames_seen / wall if wall > 0 else None, "last_lr": lr})

    def _validate_step(self, row: Dict[str, Any]) -> Dict[str, float]:
        """Validate, add the errors and the validation loss (`validation_loss`) to the CSV row, feed
        the loss to the schedule (plateau) and keep best.pt at its lowest."""
        val = self.validate(self.tcfg["val_frames"])
        score = validation_loss(val, self.pref)
        row.update(val_energy_rmse=val.get("energy_rmse", ""), val_force_rmse=val.get("force_rmse", ""),
                   val_virial_rmse_per_atom=val.get("virial_rmse_per_atom", ""), val_loss=f"{score:.6e}")
        self.lr.observe(score)
        if score < self.best:
            self.best = score
            self.save_checkpoint("best.pt")
        return val

    def _shard_loss(self, indices: List[int], pe: float, pf: float, pv: float, need_virial: bool):
        """(batch, pred, loss) of this rank's share of the global batch `indices` (all of it on one
        process): with several ranks its frames' weighted loss is divided by the weight of the whole
        batch, so the ranks' losses add up to the one-process loss (batch and pred are None for an
        empty share)."""
        total = sum(float(self.train_graphs[k].weight) for k in indices) if self.dist.active else None
        mine = self.dist.shard(indices)
        if not mine:
            return None, None, sum(p.sum() * 0.0 for p in self.model.parameters() if p.requires_grad)
        batch = collate([self.train_graphs[k] for k in mine]).to(self.device)
        pred = predict(self.model, batch, create_graph=True, need_virial=need_virial)
        terms = loss_terms(pred, batch, bool(self.cfg["loss"]["virial_per_atom"]), self.cfg["loss"]["huber"])
        return batch, pred, total_loss(terms, batch, pe, pf, pv, total_weight=total)

    # ------------------------------------------------------------------ full batch (varpro, lbfgs)
    def _run_full_batch(self, stop_at: Optional[int] = None) -> Dict[str, Any]:
        """Run the full-batch optimiser: one CSV row per evaluation, best.pt at every new best
        (validation loss, else training loss), last.pt every `training.checkpoint_every`
        evaluations; SIGTERM/SIGINT end the fit after the current evaluation and the run finishes
        normally (checkpoints, summary, export by the CLI)."""
        opt = self.optimizer
        max_time = opt.opts.get("max_time") or self.tcfg["max_time"]
        max_time = float(max_time) if max_time else math.inf
        every = int(self.tcfg["checkpoint_every"])
        pe, pf, pv = opt.w.energy, opt.w.forces, opt.w.virial
        csv_fh, writer = self._open_csv()
        start = self.clock() - self.elapsed
        flag = {"signal": None}

        def should_stop() -> bool:
            return (flag["signal"] is not None or self.clock() - start > max_time
                    or (stop_at is not None and self.step >= stop_at))

        def on_eval(n: int, loss: float, val_loss: Optional[float], improved: bool) -> None:
            self.step = n
            self.elapsed = self.clock() - start
            writer.writerow({"step": n, "time": f"{self.elapsed:.2f}", "lr": "", "loss": f"{loss:.10e}",
                             "pe": f"{pe:.4g}", "pf": f"{pf:.4g}", "pv": f"{pv:.4g}",
                             "val_loss": "" if val_loss is None else f"{val_loss:.10e}"})
            csv_fh.flush()
            if improved:
                self.best = val_loss if val_loss is not None else loss
                self.save_checkpoint("best.pt")
            if n % every == 0:
                self.save_checkpoint("last.pt")

        def on_signal(signum, frame) -> None:  # pragma: no cover - exercised by the CLI
            flag["signal"] = signum
            print(f"signal {signum}: finishing after the current evaluation", flush=True)

        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            opt.run(should_stop, on_eval)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            csv_fh.close()
            self.elapsed = self.clock() - start
            self.save_checkpoint("last.pt")
        self.save_checkpoint("best.pt")  # the optimiser leaves the model at the parameters it keeps
        st = opt.state
        return self._finish({"optimizer": opt.name, "evaluations": st["n"], "best_evaluation": st.get("best_n"),
                             "final_loss": st.get("kept_loss"), "stopped_by_signal": flag["signal"]})

    # ------------------------------------------------------------------ shared
    def _open_csv(self):
        """metrics.csv, open for appending rows with checked writes: a new file (the header) for a new
        run; on resume, the rows up to the checkpoint's step are kept and the later ones, which the
        interrupted run wrote after its last checkpoint and this one writes again, are dropped."""
        csv_path = os.path.join(self.out, "metrics.csv")
        if self.resume and os.path.exists(csv_path):
            keep_rows_until(csv_path, self.step)
        else:
            atomic_write(csv_path, ",".join(CSV_FIELDS) + "\r\n")  # the csv module's line end
        csv_fh = open_append(csv_path, newline="")
        return csv_fh, csv.DictWriter(csv_fh, fieldnames=CSV_FIELDS)

    def _refit_best(self) -> Dict[str, Any]:
        """`training.readout_refit`: best.pt's linear readout solved exactly (`mlip.train.refit`)."""
        from mlip.train.refit import final_weights, refit_checkpoint

        graphs = self.val_graphs if self.val_graphs else self.train_graphs
        info = refit_checkpoint(os.path.join(self.ckpt_dir, "best.pt"), self.train_graphs,
                                final_weights(self.pref, bool(self.cfg["loss"]["virial_per_atom"])),
                                lambda m: validation_loss(accumulate_graphs(m, graphs).summary(), self.pref))
        print(f"readout refit ({info['parameters']} parameters, {info['seconds']:.0f} s): validation loss "
              f"{info['validation_loss_before']:.4e} -> {info['validation_loss_after']:.4e}"
              f"{(' (ridge %g)' % info['ridge'] if info.get('ridge') else '') if info['kept'] else ' (worse: not kept)'}")
        return info

    def _finish(self, extra: Dict[str, Any]) -> Dict[str, Any]:
        """best.pt (if no validation ever wrote one; refit if asked), summary.json (validation and
        data.test metrics of best.pt, the model `mlip train` exports), plots; returns the summary."""
        csv_path = os.path.join(self.out, "metrics.csv")
        if not os.path.exists(os.path.join(self.ckpt_dir, "best.pt")):
            self.save_checkpoint("best.pt")
        if self.tcfg.get("readout_refit") and not self.full_batch and self.dist.is_main:
            extra = {**extra, "readout_refit": self._refit_best()}
        self.dist.barrier()  # rank 0 may just have rewritten best.pt
        # the summary describes what is exported (best.pt's evaluation weights), not the last step's
        exported = load_checkpoint_model(os.path.join(self.ckpt_dir, "best.pt")).to(self.device)
        graphs = self.raw_val_graphs if self.raw_val_graphs else self.raw_train_graphs
        errors = accumulate_sharded(exported, graphs, self.dist)
        final = errors.summary()
        summary = {"steps": self.step, "elapsed_s": self.elapsed, "validation": final, **extra}
        if self.cfg["data"].get("test"):
            test = build_graphs(load_frames(self.cfg["data"]["test"], self.cfg["data"]), self.model.species,
                                self.model.cutoff, self.dtype)
            summary["test"] = accumulate_sharded(exported, test, self.dist).summary()
        if not self.dist.is_main:
            return summary
        atomic_write(os.path.join(self.out, "summary.json"), json.dumps(summary, indent=1))
        try:
            from mlip.plots import learning_curve, parity_figure

            learning_curve(csv_path, os.path.join(self.out, "learning_curve.png"))
            which = "validation" if self.val_graphs else "first 50 training"
            parity = errors if self.val_graphs else accumulate_graphs(exported, self.raw_train_graphs[:50])
            parity_figure(parity, os.path.join(self.out, "parity.png"), title=f"{self.out}: {which} frames")
        except Exception as exc:  # plots are a convenience: never lose a finished run over them
            print(f"warning: plots not written: {exc}")
        print(format_summary(final))
        return summary

