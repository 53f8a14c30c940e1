"""Active learning: train → explore → select → label → append → retrain, resumable at any moment.

    from mlip.active.loop import run_loop, load_al_config
    run_loop(load_al_config("training/al_cu.yaml"))          # `mlip al CONFIG.yaml`

Iteration k (directory OUT/iter_k/), each stage written to disk before the next begins:

1. train    `train/m{m}/` one `mlip train` run per committee member (seed + 1000 m) on init + all
            labels of earlier iterations. Iteration 0 starts from scratch (or from the recipe's
            `model.init_from`); iteration k > 0 fine-tunes iteration k−1's member m through
            `model.init_from` (the `mlip.train.finetune` path a user gets: weights, energy reference
            refitted on the grown training set, `model.freeze` honoured). `train/model_{m}.pt` exports
            (model 0 with a MaxVol active set on its training neighbourhoods when grade = gamma);
            `train/m{m}/done.json` (validation and test errors) marks a finished member. Any
            family and optimiser of `mlip train`: an MTP with `optimizer: {name: varpro}` (members
            differ by their model seed; `first_steps` then counts evaluations, `max_iter`).
2. explore  MD from seed structures with the committee as the calculator (`mlip.active.explore`).
3. select   a D-optimal batch of in-window candidates, or convergence (`mlip.active.select`).
4. label    the oracle on each selected structure (`mlip.active.label`).

Killing the process at any moment and running again resumes: finished stages and files are kept
(`mlip.active.store`), an Adam training run continues from its last checkpoint (bit-identical, see
mlip.train.trainer) and a full-batch one (varpro, lbfgs: not bit-identical on resume) restarts from
its start, an MD run or a label that did not finish is redone from its start with the same
seed, so no label is lost, duplicated or computed twice and the labelled set equals that of an
uninterrupted run. The configuration is saved in OUT/al_config.yaml; a re-run with a different one is
refused (except `iterations`). Progress is printed and logged to OUT/al.log; OUT/summary.csv has one
row per iteration (labels, grade statistics, errors); OUT/model*.pt are the latest trained models.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import os
import time
from typing import Any, Dict, List, Optional

from mlip.active.config import check_config, load_al_config, window
from mlip.active.explore import Explorer, seed_structures
from mlip.active.label import label_stage
from mlip.active.select import Selector
from mlip.active.store import KillSwitch, RunStore, atomic_atoms, atomic_copy, atomic_json, read_json
from mlip.io.safe_write import atomic_open

__all__ = ["ActiveLearning", "check_config", "format_table", "load_al_config", "run_loop", "window"]

SUMMARY_FIELDS = ["iteration", "train_frames", "runs", "halted", "snapshots", "grade_max", "grade_median",
                  "frac_ge_lo", "frac_ge_hi", "selected", "labelled", "failed", "val_force_rmse",
                  "test_energy_rmse", "test_force_rmse", "seconds"]


class ActiveLearning:
    """One active-learning run directory: the stages, their order, resume and the summary."""

    def __init__(self, cfg: Dict[str, Any], log: bool = True) -> None:
        self.cfg = cfg
        self.out = cfg["output"]
        self.store = RunStore(self.out, verbose=log)
        self.kill = KillSwitch()
        self.store.check_saved_config(cfg)
        import torch

        torch.set_num_threads(int(cfg["threads"] or 1))
        self.lo, self.hi, self.brk = window(cfg)
        self._init_frames: Optional[List[Any]] = None
        self._test_frames: Optional[List[Any]] = None
        self.explorer = Explorer(cfg, self.store, self.kill, lambda: seed_structures(cfg, self.init_path()),
                                 self.species)
        self.selector = Selector(cfg, self.store, self.train_files)

    def log(self, msg: str) -> None:
        self.store.log(msg)

    def it_dir(self, k: int, *parts: str) -> str:
        return self.store.it_dir(k, *parts)

    # ------------------------------------------------------------------ data
    def init_path(self) -> str:
        path = self.store.path("init.xyz")
        if not os.path.isfile(path):
            from mlip.data import read_frames

            icfg = self.cfg["init"]
            if icfg["data"]:
                frames = []
                for p in icfg["data"]:
                    frames.extend(read_frames(p, fmt=icfg.get("format"), type_map=icfg.get("type_map")))
            else:
                from mlip.datagen import generate_frames

                frames = generate_frames(**icfg["generate"], seed=int(self.cfg["seed"]))
            atomic_atoms(path, [fr.to_atoms() for fr in frames])
            self.log(f"initial data: {len(frames)} labelled configurations -> {path}")
        return path

    def train_files(self, k: int) -> List[str]:
        """The training data of iteration k: the initial set and the labels of iterations < k."""
        files = [self.init_path()]
        for j in range(k):
            p = self.store.labels_path(j)
            if p:
                files.append(p)
        return files

    def species(self) -> List[str]:
        from mlip.data import read_frames

        if self._init_frames is None:
            self._init_frames = read_frames(self.init_path())
        sp = self.cfg["train"].get("model", {}).get("species")
        if sp:
            return list(sp)
        return sorted({s for fr in self._init_frames for s in fr.symbols})

    # ------------------------------------------------------------------ stage 1: train
    def member_checkpoint(self, k: int, m: int) -> str:
        return self.it_dir(k, "train", f"m{m}", "checkpoints", "last.pt")

    def train_config(self, k: int, m: int) -> Dict[str, Any]:
        """The `mlip train` recipe of member m in iteration k."""
        from mlip.train.config import load_config

        t = copy.deepcopy(self.cfg["train"])
        model = t.setdefault("model", {})
        model["species"] = self.species()
        if k > 0:  # fine-tune the previous iteration's member (mlip.train.finetune)
            model["init_from"] = self.member_checkpoint(k - 1, m)
        elif model.get("init_from") is None:
            model.pop("freeze", None)  # from scratch: `freeze` applies from the first fine-tuning on
        # a model seed fixes the initial weights whatever the run's seed (the MTP's default is 0):
        # committee members need different ones, or they would all be the same model
        seed0 = model.get("seed", 0 if model.get("family") == "mtp" else None)
        if m > 0 and seed0 is not None:
            model["seed"] = int(seed0) + 1000 * m
        t["output"] = self.it_dir(k, "train", f"m{m}")
        t["seed"] = int(self.cfg["seed"]) + 1000 * m
        t["threads"] = int(self.cfg["threads"] or 1)
        data = dict(t.get("data") or {})
        data.update(train=self.train_files(k), validation=self.cfg["validation"], generate=None)
        if not self.cfg["validation"]:
            data["val_fraction"] = 0.0  # every label is for training; errors in the table are on the test set
        t["data"] = data
        tr = dict(t.get("training") or {})
        opt = dict(t.get("optimizer") or {})
        tr["progress"] = False
        if k == 0 and self.cfg["first_steps"]:  # steps (Adam) or evaluations (full-batch optimisers)
            if _full_batch(opt):
                opt["max_iter"] = int(self.cfg["first_steps"])
            else:
                tr["steps"] = int(self.cfg["first_steps"])
        tr.pop("max_time", None)  # no wall-clock limits: a run is a function of its data and seeds
        opt.pop("max_time", None)
        tr["schedule_by_time"] = False  # resumable bit for bit
        t["training"] = tr
        if opt:
            t["optimizer"] = opt
        return load_config(None, t)

    def stage_train(self, k: int) -> List[str]:
        from mlip.active.grade import build_active_set, export_graded
        from mlip.train.finetune import load_checkpoint_model
        from mlip.train.trainer import Trainer

        paths = []
        for m in range(int(self.cfg["committee"])):
            mdir = self.it_dir(k, "train", f"m{m}")
            model_path = self.it_dir(k, "train", f"model_{m}.pt")
            paths.append(model_path)
            done = os.path.join(mdir, "done.json")
            if os.path.isfile(done):
                continue
            t0 = time.perf_counter()
            cfg = self.train_config(k, m)
            last = self.member_checkpoint(k, m)
            # Adam resumes from its checkpoint bit for bit; a full-batch optimiser (varpro, lbfgs) would
            # restart L-BFGS with an empty history, so an interrupted member is retrained from its start
            resume = os.path.isfile(last) and not _full_batch(cfg["optimizer"])
            with contextlib.redirect_stdout(io.StringIO()):  # the trainer's own progress lines
                trainer = Trainer(cfg, resume=resume, overwrite=not resume)
            init_from = cfg["model"].get("init_from")
            how = ("resumed at step " + str(trainer.step) if resume else
                   ("warm start" if k else f"fine-tune from {init_from}") if init_from else "from scratch")
            self.log(f"iteration {k}: train model {m} on {len(trainer.train_frames)} configurations ({how})")
            trainer.on_checkpoint.append(
                lambda name, path, k=k: self.kill.tick("train", k) if name == "last.pt" else None)
            with contextlib.redirect_stdout(io.StringIO()):
                summary = trainer.run()
            model = load_checkpoint_model(last)
            aset = None
            if self.cfg["grade"] == "gamma" and m == 0:
                aset = build_active_set(model, trainer.train_frames)
            export_graded(model, model_path, aset, dtype="float64")
            info: Dict[str, Any] = {"steps": summary["steps"], "validation": summary["validation"],
                                    "train_frames": len(trainer.train_frames),
                                    "seconds": time.perf_counter() - t0}
            if aset is not None:
                info["active_set_rank"] = aset.rank
            if self.cfg["test"] and m == 0:
                info["test"] = self.test_errors(model)
            atomic_json(done, info)
            err = info.get("test") or info["validation"]
            self.log(f"iteration {k}: model {m} trained ({summary['steps']} steps, {info['seconds']:.0f} s); "
                     f"{'test' if 'test' in info else 'train-set'} errors: E {err.get('energy_rmse', float('nan'))*1e3:.2f} "
                     f"meV/atom, F {err.get('force_rmse', float('nan')):.4f} eV/Å")
        return paths

    def test_errors(self, model) -> Dict[str, float]:
        """Energy (per atom) and force errors of `model` on the independent test set."""
        from mlip.graph import build_graphs
        from mlip.models.base import model_dtype
        from mlip.train.datasets import load_frames
        from mlip.train.evaluation import evaluate_graphs

        if self._test_frames is None:
            self._test_frames = load_frames(self.cfg["test"], {})
        graphs = build_graphs(self._test_frames, model.species, model.cutoff, model_dtype(model))
        s = evaluate_graphs(model, graphs)
        return {k: s[k] for k in ("energy_rmse", "energy_mae", "force_rmse", "force_mae", "n_frames") if k in s}

    # ------------------------------------------------------------------ driver
    def iteration_row(self, k: int, seconds: float) -> Dict[str, Any]:
        tr = read_json(self.it_dir(k, "train", "m0", "done.json")) or {}
        se = read_json(self.it_dir(k, "select", "done.json")) or {}
        la = read_json(self.it_dir(k, "label", "done.json")) or {}
        test = tr.get("test") or {}
        return {"iteration": k, "train_frames": tr.get("train_frames"), "runs": se.get("runs"),
                "halted": se.get("halted"), "snapshots": se.get("snapshots"), "grade_max": se.get("grade_max"),
                "grade_median": se.get("grade_median"), "frac_ge_lo": se.get("frac_ge_lo"),
                "frac_ge_hi": se.get("frac_ge_hi"), "selected": se.get("selected", 0),
                "labelled": la.get("labelled", 0), "failed": la.get("failed", 0),
                "val_force_rmse": (tr.get("validation") or {}).get("force_rmse"),
                "test_energy_rmse": test.get("energy_rmse"), "test_force_rmse": test.get("force_rmse"),
                "seconds": round(seconds, 1)}

    def write_summary(self, rows: List[Dict[str, Any]]) -> None:
        with atomic_open(self.store.path("summary.csv"), newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow(r)

    def run(self) -> List[Dict[str, Any]]:
        rows: List[Dict[str, Any]] = []
        times_path = self.store.path("times.json")
        times = read_json(times_path) or {}
        self.init_path()
        for k in range(int(self.cfg["iterations"])):
            t0 = time.perf_counter()
            finished = os.path.isfile(self.it_dir(k, "done.json"))
            models = self.stage_train(k)
            self._publish(models)
            self.explorer.run_stage(k, models)
            sel = self.selector.run_stage(k, models, len(self.explorer.grid(k)))
            if not sel["converged"] and sel["selected"]:
                label_stage(self.cfg, self.store, self.kill, k)
            if not finished:
                times[str(k)] = times.get(str(k), 0.0) + time.perf_counter() - t0
                atomic_json(times_path, times)
                atomic_json(self.it_dir(k, "done.json"), {"iteration": k})
            rows.append(self.iteration_row(k, times.get(str(k), 0.0)))
            self.write_summary(rows)
            if sel["converged"]:
                self.log(f"converged at iteration {k}: at most {float(self.cfg['select']['stop_fraction']):.1%} "
                         f"of the exploration snapshots reached {self.lo:g}")
                break
            budget = self.cfg["max_labels_total"]
            last = k == int(self.cfg["iterations"]) - 1
            spent = budget is not None and self.store.n_labels_before(k + 1) >= int(budget)
            if last or spent:
                if spent:
                    self.log(f"label budget ({budget}) spent")
                labels = read_json(self.it_dir(k, "label", "done.json")) or {}
                if labels.get("labelled"):  # the last labels are not wasted: a final training
                    self.log(f"final training on the labels of iteration {k}")
                    models = self.stage_train(k + 1)
                    self._publish(models)
                    rows.append(self.iteration_row(k + 1, 0.0))
                    self.write_summary(rows)
                break
        print(format_table(rows), flush=True)
        return rows

    def _publish(self, models: List[str]) -> None:
        for m, p in enumerate(models):
            atomic_copy(p, self.store.path("model.pt" if m == 0 else f"model_{m}.pt"))


def _full_batch(optimizer: Dict[str, Any]) -> bool:
    """Whether an optimizer section names a full-batch optimiser (mlip.train.varpro), not Adam."""
    return (optimizer.get("name") or "adam") != "adam"


def format_table(rows: List[Dict[str, Any]]) -> str:
    head = (f"{'iter':>4} {'train':>6} {'runs':>5} {'halt':>5} {'snaps':>6} {'grade max':>10} {'median':>8} "
            f"{'>=lo':>6} {'sel':>4} {'lab':>4} {'fail':>4} {'test E meV/at':>13} {'test F eV/Å':>12} {'s':>6}")
    lines = [head, "-" * len(head)]

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) and v is not None else "-"

    for r in rows:
        te = r.get("test_energy_rmse")
        lines.append(f"{r['iteration']:>4} {f(r['train_frames'], 'd'):>6} {f(r['runs'], 'd'):>5} "
                     f"{f(r['halted'], 'd'):>5} {f(r['snapshots'], 'd'):>6} {f(r['grade_max'], '.3g'):>10} "
                     f"{f(r['grade_median'], '.3g'):>8} {f(r['frac_ge_lo'], '.1%'):>6} {r['selected']:>4} "
                     f"{r['labelled']:>4} {r['failed']:>4} {f(te * 1e3 if te is not None else None, '.2f'):>13} "
                     f"{f(r.get('test_force_rmse'), '.4f'):>12} {f(r['seconds'], '.0f'):>6}")
    return "\n".join(lines)


def run_loop(cfg: Dict[str, Any], log: bool = True) -> List[Dict[str, Any]]:
    """Run (or resume) the active-learning loop of `cfg` (from `load_al_config`); one summary row per iteration."""
    from mlip.active.executors import close_executors

    try:
        return ActiveLearning(cfg, log=log).run()
    finally:
        close_executors()  # the labelling pool / dask cluster of this loop
