"""Active learning against a real quantum-chemistry oracle: liquid water, GFN1-xTB (tblite), the loop of
training/al_water_xtb.yaml (γ window + D-optimal batches, or the recipe's own `select.strategy`) against the same loop with uniformly random
selection among the explored snapshots (`select.strategy: random`), same label budget per iteration,
over several seeds. Force RMSE after every iteration, as a function of the number of labels and of the
oracle's CPU-seconds, on two independent xTB MD test sets: the exploration domain (one Langevin trajectory
per grid point of the recipe's `explore.temperatures` × `explore.strains`, i.e. the conditions the
potential is trained for; the verdict) and 350 K alone (Langevin MD of 16-molecule boxes near 1 g/cm³).
Then the wall-clock of labelling the same configurations with `label.executor` local, process and
dask (2 workers, 1 thread each) on 48 boxes of the recipe's size (32 molecules).

    python benchmarks/bench_al_xtb.py [--recipe training/al_water_xtb_mtp.yaml] [--workdir DIR]
        [--seeds 21 22] [--quick]

Resumable (each loop is `mlip al`; loops already finished in the workdir are read back). Writes
benchmarks/results/<save-name>.json and .png (default name: bench_al_xtb for the DP recipe,
bench_al_xtb_<recipe stem> otherwise). Needs `pip install 'mlip[xtb]'`. Kept results: bench_al_xtb.json
(DP recipe, made with --gamma-lo 1.1), bench_al_xtb_mtp.json (MTP recipe), bench_al_xtb_mtp_overlap.json
(MTP recipe, loops run before commit 2f2e229, when `water_box` still let molecules overlap) and
bench_al_xtb_mtp_info.json: these four have the 350 K test set only. bench_al_xtb_mtp_info_domain.json
(`--recipe training/al_water_xtb_mtp_info.yaml --skip-speed --save-name bench_al_xtb_mtp_info_domain`)
has both test sets.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from bench_al import md_test_set, pair, plot_curves, run_pairs

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("MLIP_BENCH_RESULTS", REPO / "benchmarks" / "results"))
CONFIG = REPO / "training" / "al_water_xtb.yaml"
FAMILY_NAMES = {"deepmd": "DP se_e2_a", "mtp": "MTP", "nequip": "NequIP-style"}


def xtb_spec(config: Path = CONFIG):
    import yaml

    return yaml.safe_load(Path(config).read_text())["oracle"]


def test_set(path: str, config: Path = CONFIG, n_traj: int = 3, per_traj: int = 6, temperature: float = 350.0,
             seed: int = 2024) -> None:
    """xTB Langevin MD (0.5 fs) of 16-molecule water boxes: a snapshot every 20 fs after 100 fs."""
    from mlip.datagen import make_calculator, water_box

    md_test_set(path, lambda t: water_box(16, density=1.0 + 0.02 * (t - 1), seed=seed + t, rattle=0.03),
                lambda: make_calculator(xtb_spec(config)), n_traj, per_traj, temperature, 0.5, 200, 40, seed,
                f"xtb_md_{temperature:g}K")


def domain_test_set(workdir: str, config: Path = CONFIG, per_run: int = 3, warm: int = 200,
                    seed: int = 4048) -> List[str]:
    """xTB Langevin MD (0.5 fs) over the recipe's exploration grid: for every temperature × strain, one box
    of the initial set's size at the strained density, `per_run` snapshots 20 fs apart after `warm` steps. One
    file per grid point (each written when complete, so an interrupted run keeps the finished ones)."""
    import yaml

    from mlip.datagen import make_calculator, water_box

    cfg = yaml.safe_load(Path(config).read_text())
    n_mol = int(((cfg.get("init") or {}).get("generate") or {}).get("water", {}).get("n_molecules", 16))
    explore = cfg["explore"]
    paths = []
    for i, temp in enumerate(explore["temperatures"]):
        for j, eps in enumerate(explore.get("strains") or [0.0]):
            path = os.path.join(workdir, f"test_xtb_{float(temp):g}K_strain{float(eps):+g}.xyz")
            s = seed + 10 * i + j
            md_test_set(path, lambda t, eps=eps, s=s: water_box(n_mol, density=1.0 / (1.0 + float(eps)) ** 3,
                                                                 seed=s, rattle=0.03),
                        lambda: make_calculator(cfg["oracle"]), 1, per_run, float(temp), 0.5, warm, 40, s,
                        f"xtb_md_{float(temp):g}K_strain{float(eps):+g}")
            paths.append(path)
    return paths


def curves_on(workdir: str, curves: Dict[str, List[dict]], test_files: Sequence[str]) -> Dict[str, List[dict]]:
    """The same loops' model 0 of every iteration (iter_k/train/model_0.pt) scored on other test files:
    {run name: [{"iteration", "labels", "force_rmse", "energy_rmse_mev"}, …]}."""
    from mlip.cli.test import evaluate_export
    from mlip.data import read_frames

    frames = [f for p in test_files for f in read_frames(p)]
    out = {}
    for name, curve in curves.items():
        out[name] = []
        for p in curve:
            model = os.path.join(workdir, name, f"iter_{p['iteration']:03d}", "train", "model_0.pt")
            s = evaluate_export(model, frames, num_threads=1)
            out[name].append({"iteration": p["iteration"], "labels": p["labels"], "force_rmse": s["force_rmse"],
                              "energy_rmse_mev": 1e3 * s["energy_rmse"],
                              "oracle_cpu_s": p.get("oracle_cpu_s")})
    return out


def verdict(al: List[dict], rand: List[dict]) -> dict:
    """The labels active learning needs to reach random selection's final force RMSE (None: never)."""
    target, n_rand = rand[-1]["force_rmse"], rand[-1]["labels"]
    reached = [p["labels"] for p in al if p["force_rmse"] <= target]
    n_al = min(reached) if reached else None
    return {"random_final_force_rmse": target, "random_labels": n_rand, "al_labels_to_reach": n_al,
            "fraction": (n_al / n_rand) if (n_al is not None and n_rand) else None}


def print_pair(a: List[dict], r: List[dict], v: dict) -> None:
    print(f"{'iter':>4} | {'AL labels':>9} {'AL F':>8} {'AL cpu s':>9} | {'rand labels':>11} {'rand F':>8} "
          f"{'rand cpu s':>10}")
    for k in range(max(len(a), len(r))):
        x, y = (a[k] if k < len(a) else None), (r[k] if k < len(r) else None)
        fa = f"{x['labels']:>9d} {x['force_rmse']:>8.4f} {x['oracle_cpu_s'] or 0:>9.1f}" if x else " " * 28
        fr = f"{y['labels']:>11d} {y['force_rmse']:>8.4f} {y['oracle_cpu_s'] or 0:>10.1f}" if y else ""
        print(f"{k:>4} | {fa} | {fr}")
    n_al = v["al_labels_to_reach"]
    print(f"random: {v['random_labels']} labels -> {v['random_final_force_rmse']:.4f} eV/Å; AL reaches it with "
          f"{n_al if n_al is not None else 'never'} labels"
          + (f" ({v['fraction']:.0%} of random's)" if v["fraction"] is not None else ""))


def oracle_seconds(out: str):
    """Cumulative oracle CPU-seconds after each iteration's labels (iteration 0: the initial set is not
    counted, as in the label axis). An iteration that selected nothing has no label folder and adds 0
    (it used to end the series there, so every later point read 0)."""
    total, series, k = 0.0, [0.0], 0
    while os.path.isdir(os.path.join(out, f"iter_{k:03d}")):
        done = os.path.join(out, f"iter_{k:03d}", "label", "done.json")
        if os.path.isfile(done):
            total += json.load(open(done)).get("oracle_cpu_s", 0.0)
        series.append(total)
        k += 1
    return series


def labelling_speed(workdir: str, n: int, molecules: int = 32, config: Path = CONFIG) -> dict:
    """Wall-clock of labelling the same `n` boxes with each executor (2 workers, 1 thread each)."""
    from mlip.active.executors import close_executors, run_labels
    from mlip.datagen import water_box

    boxes = [water_box(molecules, seed=100 + j, rattle=0.05) for j in range(n)]
    out = {}
    for ex in ("local", "process", "dask"):
        d = os.path.join(workdir, f"speed_{ex}")
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        tasks = [(b, os.path.join(d, f"{j:04d}.xyz"), os.path.join(d, f"{j:04d}.failed.json"), {"al_index": j})
                 for j, b in enumerate(boxes)]
        cfg = {"oracle": xtb_spec(config), "label": {"executor": ex, "workers": 2, "address": None, "threads": 1}}
        t0 = time.perf_counter()
        run_labels(cfg, tasks, lambda i, s: None)
        close_executors()  # start-up and shut-down of the pool / cluster are part of the cost
        out[ex] = time.perf_counter() - t0
        print(f"labelling {n} boxes of {molecules} waters, {ex}: {out[ex]:.1f} s", flush=True)
    return {"labels": n, "molecules": molecules, "seconds": out,
            "speedup_process": out["local"] / out["process"], "speedup_dask": out["local"] / out["dask"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(CONFIG), help="the active-learning recipe (default %(default)s)")
    ap.add_argument("--save-name", default=None, help="results file stem (default: see above)")
    ap.add_argument("--workdir", default=None, help="default runs/<save-name>")
    ap.add_argument("--seeds", nargs="+", type=int, default=[21, 22])
    ap.add_argument("--quick", action="store_true", help="smoke version (2 iterations, tiny trainings)")
    ap.add_argument("--gamma-lo", type=float, default=None,
                    help="γ threshold of the AL runs (default: the recipe's select.gamma_lo)")
    ap.add_argument("--speed-labels", type=int, default=48, help="boxes for the executor timing (the recipe's budget)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one recipe value for both the AL and the random loops, as `mlip al --set`, e.g. "
                         "train.model.level=20")
    ap.add_argument("--skip-speed", action="store_true",
                    help="keep the executor timing of the previous results file (e.g. on a busy machine, or "
                         "when seeds run as separate processes)")
    args = ap.parse_args(argv)
    import os as _os

    from mlip.train.config import parse_settings

    settings = parse_settings(args.set)

    _os.environ.setdefault("OMP_NUM_THREADS", "1")  # the loop's own xTB calls (initial set, test set)

    recipe = Path(args.recipe).resolve()
    if args.save_name is None:
        tail = recipe.stem.replace("al_water_xtb", "").strip("_")
        args.save_name = "bench_al_xtb" + (f"_{tail}" if tail else "")
    args.workdir = os.path.abspath(args.workdir or REPO / "runs" / args.save_name)  # the recipe's relative paths resolve against its own folder
    os.makedirs(args.workdir, exist_ok=True)
    test = os.path.join(args.workdir, "test_xtb_350K.xyz")
    test_set(test, recipe, n_traj=1 if args.quick else 3, per_traj=2 if args.quick else 6)
    domain_files = domain_test_set(args.workdir, recipe, per_run=1 if args.quick else 3,
                                   warm=20 if args.quick else 200)
    quick = {}
    if args.quick:
        quick = {"iterations": 2, "first_steps": 100, "max_labels_total": 6,
                 "explore": {"steps": 40, "runs": 2}, "select": {"max_labels": 3}}
    t0 = time.time()

    def shorter(cfg):
        if args.quick:
            if cfg["train"].get("optimizer", {}).get("name") in ("varpro", "lbfgs"):
                cfg["train"]["optimizer"]["max_iter"] = 5  # full-batch evaluations
                cfg["first_steps"] = 10
            else:
                cfg["train"]["training"]["steps"] = 50

    curves = run_pairs(str(recipe), args.seeds, quick, args.workdir, test, edit=shorter,
                       al_select={} if args.gamma_lo is None else {"gamma_lo": args.gamma_lo}, settings=settings)
    for name, curve in curves.items():
        secs = oracle_seconds(os.path.join(args.workdir, name))
        for p in curve:
            p["oracle_cpu_s"] = secs[p["iteration"]] if p["iteration"] < len(secs) else secs[-1]
    domain = curves_on(args.workdir, curves, domain_files)
    verdicts, verdicts_domain = {}, {}
    for label, cs, vs in (("the 350 K xTB MD set", curves, verdicts),
                          (f"the exploration-domain xTB MD set ({len(domain_files)} files)", domain, verdicts_domain)):
        print(f"\nForce RMSE (eV/Å) on {label} vs labels added to the 10 initial boxes ({time.time() - t0:.0f} s)")
        for seed in args.seeds:
            a, r = pair(cs, seed)
            vs[seed] = verdict(a, r)
            print(f"\nseed {seed}")
            print_pair(a, r, vs[seed])
    out_json, out_png = RESULTS / f"{args.save_name}.json", RESULTS / f"{args.save_name}.png"
    old = out_json if out_json.is_file() else RESULTS / "bench_al_xtb.json"
    speed = json.loads(old.read_text()).get("labelling") if args.skip_speed and old.is_file() else None
    if speed is None:
        speed = labelling_speed(args.workdir, 4 if args.quick else args.speed_labels, config=recipe)
    print(f"labelling speed-up with 2 workers over local: process {speed['speedup_process']:.2f}x, "
          f"dask {speed['speedup_dask']:.2f}x")
    payload = {"test_set": test, "curves": curves, "verdicts": verdicts, "labelling": speed,
               "domain_test_set": domain_files, "curves_domain": domain, "verdicts_domain": verdicts_domain,
               "al_gamma_lo": args.gamma_lo, "settings": args.set,
               "config": str(recipe), "quick": args.quick}
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        import yaml

        family = yaml.safe_load(recipe.read_text())["train"]["model"]["family"]
        out_json.write_text(json.dumps(payload, indent=1))
        plot_curves(curves, out_png, len(args.seeds),
                    f"liquid water, GFN1-xTB oracle, {FAMILY_NAMES.get(family, family)}: error vs labels and "
                    "oracle CPU time",
                    "force RMSE on 350 K xTB MD (eV/Å)", extra_x=("oracle_cpu_s", "oracle CPU-seconds of the labels"))
        plot_curves(domain, out_png.with_name(f"{args.save_name}_domain.png"), len(args.seeds),
                    f"liquid water, GFN1-xTB oracle, {FAMILY_NAMES.get(family, family)}: error on the exploration "
                    "domain", "force RMSE on xTB MD over explore T × strain (eV/Å)",
                    extra_x=("oracle_cpu_s", "oracle CPU-seconds of the labels"))
        print(f"wrote {out_json}, {out_png} and {args.save_name}_domain.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
