"""Selection stage: which explored snapshots are worth an oracle call.

Candidates are the snapshots whose grade lies in the trust window [lo, hi) (below lo the model
interpolates; at hi and above the MD has left physical ground). Among them a D-optimal batch: greedy
MaxVol swaps into model 0's active set of its training neighbourhoods (the export's stored set, or one
built from the training data), so that configurations which teach the same thing are not labelled
twice; with a committee deviation the batch is filled up by decreasing deviation. At most
`max_labels` (and what is left of `max_labels_total`). The iteration has converged (the loop stops)
when at most `stop_fraction` of the snapshots reach lo and no run halted. Strategy `random`: uniform
among all snapshots (the baseline of benchmarks/bench_al.py). Strategy `information`: by the leverage
against all training neighbourhoods and a greedy batch by log-det gain (`select.target: training`) or
by the variance it removes from all candidates' neighbourhoods (`target: pool`; `mlip.active.information`), converged
when at most `stop_fraction` of the snapshots are informative and no run halted. Snapshots younger than
`explore.burn_in` steps of trajectory age are no candidates for any strategy (DP-GEN's
`model_devi_skip`: the first steps from a generated structure are its relaxation, not the ensemble).
`select/selected.xyz` + `done.json`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from mlip.active.config import window
from mlip.active.store import RunStore, atomic_atoms, atomic_json, bare, read_atoms, read_json


class Selector:
    """The selection stage of one run directory."""

    def __init__(self, cfg: Dict[str, Any], store: RunStore, train_files: Callable[[int], List[str]]) -> None:
        self.cfg = cfg
        self.store = store
        self.train_files = train_files
        self.lo, self.hi, self.brk = window(cfg)

    def candidates(self, k: int, n_runs: int) -> List[Any]:
        """The explored snapshots of iteration k past `explore.burn_in` steps of trajectory age (snapshots
        written before ages were recorded count their run's step)."""
        d = self.store.it_dir(k, "explore")
        burn_in = int(self.cfg["explore"].get("burn_in") or 0)
        out = []
        for r in range(n_runs):
            out.extend(a for a in read_atoms(os.path.join(d, f"run_{r:03d}.xyz"))
                       if int(a.info.get("age", a.info.get("step", 0))) >= burn_in)
        return out

    def run_stage(self, k: int, models: List[str], n_runs: int) -> Dict[str, Any]:
        d = self.store.it_dir(k, "select")
        os.makedirs(d, exist_ok=True)
        done = os.path.join(d, "done.json")
        if os.path.isfile(done):
            return read_json(done)
        cands = self.candidates(k, n_runs)
        g = np.array([float(a.info.get("grade", math.inf)) for a in cands])
        runs = [read_json(os.path.join(self.store.it_dir(k, "explore"), f"run_{r:03d}.json")) for r in range(n_runs)]
        halted = sum(bool(x["halted"]) for x in runs)
        n = len(cands)
        stats = {"snapshots": n, "runs": len(runs), "halted": halted,
                 "grade_max": float(g.max()) if n else 0.0, "grade_median": float(np.median(g)) if n else 0.0,
                 "frac_ge_lo": float(np.mean(g >= self.lo)) if n else 0.0,
                 "frac_ge_hi": float(np.mean(g >= self.hi)) if n else 0.0}
        s = self.cfg["select"]
        cap = int(s["max_labels"])
        if self.cfg["max_labels_total"] is not None:
            cap = max(0, min(cap, int(self.cfg["max_labels_total"]) - self.store.n_labels_before(k)))
        converged = stats["frac_ge_lo"] <= float(s["stop_fraction"]) and halted == 0
        chosen: List[int] = []
        if s["strategy"] == "information":
            chosen, frac = self.information(k, cands, g, cap)
            stats["frac_informative"] = frac
            converged = frac <= float(s["stop_fraction"]) and halted == 0
        elif s["strategy"] == "random":
            converged = False
            if n and cap:
                rng = np.random.default_rng([int(self.cfg["seed"]), 13, k])
                chosen = sorted(int(i) for i in rng.choice(n, min(cap, n), replace=False))
        elif not converged and cap:
            inwin = [i for i in range(n) if self.lo <= g[i] < self.hi]
            chosen = self.dopt(k, models, [cands[i] for i in inwin], g[inwin], cap)
            chosen = sorted(inwin[i] for i in chosen)
        sel = [bare(cands[i], dict(cands[i].info)) for i in chosen]
        atomic_atoms(os.path.join(d, "selected.xyz"), sel)
        stats.update(selected=len(chosen), in_window=int(np.sum((g >= self.lo) & (g < self.hi))),
                     converged=bool(converged), ids=[cands[i].info["al_id"] for i in chosen])
        atomic_json(done, stats)
        self.store.log(f"iteration {k}: {n} snapshots from {len(runs)} runs ({halted} halted); grade max "
                       f"{stats['grade_max']:.3g}, median {stats['grade_median']:.3g}; "
                       f"{100 * stats['frac_ge_lo']:.1f}% >= {self.lo:g}, {stats['in_window']} in "
                       f"[{self.lo:g}, {self.hi:g}); selected {len(chosen)}{' -- converged' if converged else ''}")
        return stats

    def _model0(self, k: int):
        """Model 0 of iteration k (its last checkpoint)."""
        from mlip.train.finetune import load_checkpoint_model

        return load_checkpoint_model(self.store.it_dir(k, "train", "m0", "checkpoints", "last.pt"))

    def _train_frames(self, k: int) -> List[Any]:
        from mlip.data import read_frames

        return [fr for p in self.train_files(k) for fr in read_frames(p)]

    def information(self, k: int, cands: List[Any], grades: np.ndarray, cap: int) -> Tuple[List[int], float]:
        """Strategy `information` (mlip.active.information): among the snapshots below hi, those whose
        atoms' mean leverage reaches `leverage_lo` × the training rows'; a greedy log-det batch of them.
        Returns (sorted picks, the fraction of snapshots that were informative)."""
        if not cands:
            return [], 0.0
        from mlip.active.grade import feature_rows
        from mlip.active.information import InformationMatrix
        from mlip.data import Frame

        model = self._model0(k)
        info = InformationMatrix(feature_rows(model, self._train_frames(k), "nbh")[0])
        X, sources = feature_rows(model, [Frame.from_atoms(bare(a)) for a in cands], "nbh")
        owner = np.array([s[0] for s in sources])
        rows = [X[owner == c] for c in range(len(cands))]
        ratio = np.array([info.leverage(B).mean() / info.reference for B in rows])
        lo = float(self.cfg["select"]["leverage_lo"])
        eligible = [c for c in range(len(cands)) if ratio[c] >= lo and grades[c] < self.hi]
        pool = X if self.cfg["select"].get("target", "training") == "pool" else None
        chosen = info.select(rows, eligible, max_select=cap, pool=pool) if cap else []
        return sorted(chosen), float(np.mean(ratio >= lo))

    def dopt(self, k: int, models: List[str], cands: List[Any], grades: np.ndarray, cap: int) -> List[int]:
        """D-optimal batch among in-window candidates: greedy MaxVol swaps into model 0's active set of
        its training neighbourhoods (then, with a committee deviation, filled by decreasing deviation)."""
        if not cands:
            return []
        from mlip.active.grade import build_active_set, read_active_set, select_frames
        from mlip.data import Frame

        model = self._model0(k)
        aset = read_active_set(models[0])
        if aset is None or aset.mode != "nbh":
            aset = build_active_set(model, self._train_frames(k))
        frames = [Frame.from_atoms(bare(a)) for a in cands]
        chosen = select_frames(model, frames, aset, threshold=1.0, max_select=cap)
        if self.cfg["grade"] == "deviation" and len(chosen) < cap:
            rest = [i for i in np.argsort(-grades, kind="stable") if i not in set(chosen)]
            chosen = sorted(chosen + [int(i) for i in rest[: cap - len(chosen)]])
        return chosen
