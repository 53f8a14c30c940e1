"""mlearn (Zuo et al. 2020) accuracy of our MTP: fit the recipe training/mtp_<el>.yaml (MLIP-style
full-batch variable-projection fit, `mlip train` with optimizer varpro, see mlip/train/varpro.py),
then test-set MAE/RMSE of the run's export through the C++ engine (what the ASE calculator and LAMMPS
run), next to the published MTP/GAP.

    python benchmarks/bench_mlearn_mtp.py --element Mo Si              # fit + evaluate (~50 min each)
    python benchmarks/bench_mlearn_mtp.py --element Si --reuse         # evaluate runs/bench_mlearn_mtp_si
    python benchmarks/bench_mlearn_mtp.py --quick                       # smoke fit (level 8, 5 iterations)
    python benchmarks/bench_mlearn_mtp.py --element Mo --run runs/mtp_mo   # evaluate another fit's export
    python benchmarks/bench_mlearn_mtp.py --element Mo --eval-speed 40     # s per varpro evaluation, 40 frames
Writes benchmarks/results/mlearn_<El>_mtp_<el>.json (--eval-speed: varpro_eval_<el>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import List

from common import REPO, evaluate, save, shared

PUBLISHED = {"Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)}, "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06)}}


QUICK_FIT = ["--set", "model.level=8", "--set", "optimizer.max_iter=5"]  # --quick: a smoke fit, seconds


def run_info(run_dir: str) -> dict:
    """Model size, fit time and loss weights of a `mlip train` run directory (empty if absent)."""
    import yaml

    out: dict = {}
    cfg_path, summary_path = os.path.join(run_dir, "config.yaml"), os.path.join(run_dir, "summary.json")
    ckpt = os.path.join(run_dir, "checkpoints", "best.pt")
    if os.path.isfile(ckpt):
        from mlip.train.trainer import load_checkpoint_model

        model = load_checkpoint_model(ckpt)
        out.update(level=getattr(model, "level", None), n_basis=getattr(model, "n_alpha", None),
                   n_params=int(sum(p.numel() for p in model.parameters())))
    if os.path.isfile(summary_path):
        out["train_time_s"] = json.load(open(summary_path)).get("elapsed_s")
    if os.path.isfile(cfg_path):
        loss = yaml.safe_load(open(cfg_path)).get("loss", {})
        out["weights"] = {k: loss.get(k) for k in ("energy", "forces", "virial")}
    return out


def run_element(el: str, run_dir: str, fit: bool, threads: int, quick: bool = False) -> dict:
    recipe = REPO / "training" / f"mtp_{el.lower()}.yaml"
    if fit:
        cmd = [sys.executable, "-m", "mlip", "train", str(recipe), "-o", run_dir, "--overwrite"] + (QUICK_FIT if quick else [])
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=str(REPO), check=True)
    model = os.path.join(run_dir, "model.pt")
    if not os.path.isfile(model):
        raise FileNotFoundError(f"{model} not found (run without --reuse to fit it)")
    data = shared("mlearn", el)
    test = evaluate(model, [str(data / "test.json")], threads=threads)
    metrics = run_info(run_dir)
    out = {"recipe": recipe.name, "element": el, "family": "mtp", "code": "mlip MTP", "run": run_dir,
           "level": metrics.get("level"), "n_basis": metrics.get("n_basis"), "n_parameters": metrics.get("n_params"),
           "train_wall_s": metrics.get("train_time_s"), "weights": metrics.get("weights"),
           "test_energy_mae_meV": test["energy_mae"] * 1e3, "test_energy_rmse_meV": test["energy_rmse"] * 1e3,
           "test_force_mae": test["force_mae"], "test_force_rmse": test["force_rmse"],
           "test_stress_rmse_GPa": test.get("stress_rmse_gpa"),
           "published_mae": {k: {"energy_meV": e, "force": f} for k, (e, f) in PUBLISHED[el].items()}}
    pub_e, pub_f = PUBLISHED[el]["MTP"]
    out["meets_published_mtp"] = bool(out["test_energy_mae_meV"] <= pub_e and out["test_force_mae"] <= pub_f)
    print(f"\nmlearn {el} test set ({test['n_frames']} structures, {test['n_atoms']} atoms), MTP level "
          f"{out['level']} ({out['n_basis']} basis functions), fit {(out['train_wall_s'] or 0) / 60:.1f} min")
    print(f"{'model':<16}{'E MAE meV/atom':>16}{'E RMSE':>10}{'F MAE eV/Å':>12}{'F RMSE':>10}")
    print(f"{'mlip MTP':<16}{out['test_energy_mae_meV']:>16.2f}{out['test_energy_rmse_meV']:>10.2f}"
          f"{out['test_force_mae']:>12.3f}{out['test_force_rmse']:>10.3f}")
    for k, (e, f) in PUBLISHED[el].items():
        print(f"{k + ' (published)':<16}{e:>16.2f}{'':>10}{f:>12.3f}{'':>10}")
    print("written", save(f"mlearn_{el}_mtp_{el.lower()}", out))
    return out


def eval_speed(el: str, n_frames: int, evaluations: int, workers: List[int]) -> dict:
    """Seconds per varpro evaluation of the recipe's model on its first `n_frames` training frames:
    the evaluator (`mlip.train.projection`) on 1..N worker processes, and the linear solve followed by
    the autograd gradient pass it replaced (same design code). Wall-clock: run it on an idle machine."""
    import copy
    import time

    import torch

    from mlip.graph import build_graphs
    from mlip.models import build_model
    from mlip.train.config import load_config
    from mlip.train.finetune import split_model_config
    from mlip.train.full_batch import FullBatch, LossWeights, loss_and_grad, solve_linear
    from mlip.train.projection import ProjectedEvaluator
    from mlip.train.datasets import prepare_data

    torch.set_num_threads(1)
    cfg = load_config(str(REPO / "training" / f"mtp_{el.lower()}.yaml"), {})
    train, _ = prepare_data(cfg)
    kwargs = split_model_config(cfg["model"])[0]
    model = build_model(kwargs.pop("family"), kwargs).double()
    model.fit_statistics(train)
    data = FullBatch(build_graphs(train[:n_frames], model.species, model.cutoff, torch.float64))
    lw = cfg["loss"]
    w = LossWeights(float(lw["energy"]), float(lw["forces"]), float(lw["virial"]))

    def timed(fn) -> List[float]:
        out = []
        for _ in range(evaluations):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return out

    ref = copy.deepcopy(model)
    res = {"element": el, "frames": n_frames, "atoms": data.n_atoms, "edges": data.n_edges, "level": model.level,
           "autograd_gradient_s": timed(lambda: (solve_linear(ref, data, w),
                                                 loss_and_grad(ref, data, w, [ref.radial_coeffs])))}
    for n in workers:
        m = copy.deepcopy(model)
        with ProjectedEvaluator(m, data, w, n) as ev:
            res[f"workers_{n}_s"] = timed(ev.evaluate)
    for k, v in res.items():
        print(f"{k:>22}: {[round(x, 2) for x in v] if isinstance(v, list) else v}")
    print("written", save(f"varpro_eval_{el.lower()}", res))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--element", nargs="+", default=["Mo", "Si"], choices=sorted(PUBLISHED))
    ap.add_argument("--reuse", action="store_true", help="evaluate an existing fit instead of fitting")
    ap.add_argument("--run", default=None, help="run directory (default runs/bench_mlearn_mtp_<el>)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: level 8, 5 iterations, in runs/quick_mlearn_mtp_<el> (results not comparable)")
    ap.add_argument("--eval-speed", type=int, default=0, metavar="FRAMES",
                    help="only time varpro evaluations on the first FRAMES training frames (no fit)")
    ap.add_argument("--evaluations", type=int, default=2, help="with --eval-speed: evaluations per setting")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="with --eval-speed: worker counts")
    a = ap.parse_args()
    if a.eval_speed:
        for el in a.element:
            eval_speed(el, a.eval_speed, a.evaluations, a.workers)
        return 0
    for el in a.element:
        prefix = "quick_mlearn_mtp" if a.quick else "bench_mlearn_mtp"
        run_dir = a.run or str(REPO / "runs" / f"{prefix}_{el.lower()}")
        fit = not a.reuse and a.run is None
        run_element(el, run_dir, fit, a.threads, a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
