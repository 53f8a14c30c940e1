"""A/B comparisons of training choices at equal steps: variants of one recipe, each a `--set`-style list of
overrides, trained for the same number of steps from the same seed on the same data, then scored on
the validation set. This is how a change to the training step (loss weights, normalisation, schedule)
earns its place: by its figures at equal steps, not by a wall-clock race.

    python benchmarks/bench_ab.py --preset water_dp [--steps 6000] [--jobs 2] [--only base e_per_structure]
    python benchmarks/bench_ab.py --recipe water_dp.yaml --water --steps 4000 \\
        --variant base --variant "e_x192: loss.energy.start=3.84 loss.energy.limit=192"
    python benchmarks/bench_ab.py --recipe water_dp.yaml --water --dtype float32 --steps 2000 --jobs 1 \
        --variant base --variant "envshift_slots: model.env_shift=true model.env_stats=slots" --peer-deepmd

    python benchmarks/bench_ab.py --recipe water_dp.yaml --water --dtype float32 --steps 6000 --seeds 1 2 3 \
        --variant base --variant "lr_stop1e5: optimizer.lr.stop=1.0e-5" --peer-deepmd --name water_dp_6k_seeds

Seeds: single runs differ a lot. On the water split at 2000 steps the same code and recipe gives 0.233 to
0.285 eV/Å over seeds, and the same start (DeePMD-kit's seed-2 weights) ends at 0.246 trained by DeePMD-kit
and at 0.284 trained by ours with its own frame order: more than most choices move it; `--seeds` runs every variant (and the peer) once per seed and adds `seed_means`.
That the two codes are the same function and optimiser is shown separately (benchmarks/dp_equivalence.py).

The schedule of a variant is the recipe's, compressed onto `--steps` (the learning-rate staircase keeps its
number of stairs). With `--jobs 2` two variants run at a time, each pinned to its own core (`taskset`),
one thread each. Resumable: a variant whose result is in the work directory is read back. Writes
benchmarks/results/ab_<name>.json: per variant the overrides, steps, training seconds, the validation
errors (all frames of the validation set) and the learning curve. `--peer-deepmd` (water) adds a row
`deepmd_kit`: DeePMD-kit itself (benchmarks/peers.py venv) for the same steps and compressed schedule,
scored by `dp test` on the same frames, so the peer's learning per step is measured beside ours.

Presets:
  water_dp  training/water_dp.yaml (DeePMD-kit's se_e2_a water example), float32, train data_0 + data_1,
            validate on data_2. `base`: the recipe. `e_per_structure`: DeePMD-kit's energy term
            pref_e·ΔE²/N (deepmd/tf/loss/ener.py: atom_norm_ener · pref_e · mean ΔE²) where ours is
            pref_e·(ΔE/N)², i.e. the energy prefactors × N = 192 for these 192-atom frames. `env_shift`:
            DeePMD-kit's centred s-row of the environment matrix (model.env_shift, mlip.models.deepmd).
            `env_shift_e_per_structure`: both. 6000 steps each (ab_water_dp.json), data_2 RMSE: base 2.28
            meV/atom, 0.2008 eV/Å; e_per_structure 2.20, 0.1988; env_shift 2.82, 0.2251; both 2.98,
            0.2240. Neither earns a place in the recipe (e_per_structure is within noise, env_shift worse).
            Those runs predate `env_stats: slots` (DeePMD-kit's statistics), which the recipe has since
            ab_water_dp_2k / ab_water_dp_6k_slots (with --peer-deepmd): 6000 steps 0.2008 -> 0.1915 eV/Å,
            DeePMD-kit 0.1745; `base` is now the recipe with it.
  mo_nequip training/nequip_mo.yaml on mlearn Mo (its own 10 % validation split, scored by the trainer).
            `base`: the recipe before this A/B (energy limit 5, lr → 1e-5). `e_x20`: the energy
            prefactor's limit 5 → 100 (the energy term was ~0.5 %
            of the loss at the end of the 40-min run, whose validation energy RMSE stalled at ~5.5
            meV/atom from step 2500 on while the forces still improved). `lr_floor`: the learning rate
            decays 5e-3 → 5e-4 instead of → 1e-5 (the 30-min water run of the same family learned more
            when the clock-driven decay was broken and the rate stayed near 5e-3). `e_x20_lr_floor`: both,
            which is the recipe since (3000 steps: base 10.2 meV/atom, 0.191 eV/Å; both 3.6, 0.173).
            The stored ab_mo_nequip.json was run when `base` was the recipe: its `base` has no
            overrides and the others name only what they changed.
            ab_mo_nequip_radial.json (`--variant 'env_p10: model.envelope_p=10'
            --variant 'rc52: model.cutoff=5.2'` against the stored recipe base, 3.64 meV/atom, 0.1728
            eV/Å): env_p10 3.67, 0.1692; rc52 3.96, 0.1741 and 17 % slower. A sharper envelope or a
            longer cutoff does not remove the model's volume-dependent energy error; neither is adopted.
            ab_mo_nequip_capacity.json (`--variant 'f64: model.num_features=64'
            --variant 'L4: model.num_layers=4'`, same base): f64 4.37, 0.1684 and 1.6x slower per step;
            L4 3.67, 0.1679 and 1.9x slower. At equal steps more width or depth buys 3 % in the force RMSE,
            less than either loses in steps at equal time; neither is adopted.
            ab_mo_nequip_loss.json (`--variant 'v0: loss.virial.start=0 loss.virial.limit=0'
            --variant 'F3: loss.forces.limit=3'`, same base): v0 3.70, 0.1742; F3 3.86, 0.1694. The
            virial term does not take force accuracy away, and a 3x heavier force limit buys 2 %; every
            knob tried moves the force RMSE by at most 3 % at equal steps.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from common import REPO, evaluate, learning_curve, recipe_path, save, shared, span_overrides, train_recipe

PRESETS: Dict[str, Dict[str, Any]] = {
    "water_dp": {
        "recipe": "water_dp.yaml", "water": True, "dtype": "float32",
        "variants": {
            "base": [],
            "e_per_structure": ["loss.energy.start=3.84", "loss.energy.limit=192"],
            "env_shift": ["model.env_shift=true"],
            "env_shift_e_per_structure": ["model.env_shift=true", "loss.energy.start=3.84", "loss.energy.limit=192"],
        },
    },
    "mo_nequip": {
        "recipe": "nequip_mo.yaml", "water": False, "dtype": None,
        "variants": {
            "base": ["loss.energy.start=1.0", "loss.energy.limit=5.0", "optimizer.lr.stop=1.0e-5"],
            "e_x20": ["loss.energy.start=1.0", "loss.energy.limit=100.0", "optimizer.lr.stop=1.0e-5"],
            "lr_floor": ["loss.energy.start=1.0", "loss.energy.limit=5.0", "optimizer.lr.stop=5.0e-4"],
            "e_x20_lr_floor": [],
        },
    },
}


def parse_variant(text: str) -> Tuple[str, List[str]]:
    """'name: key=value key=value' (or just 'name') → (name, ['key=value', ...])."""
    name, _, rest = text.partition(":")
    return name.strip(), rest.split()


def common_overrides(recipe: str, steps: int, dtype: Optional[str], water: bool) -> Dict[str, Any]:
    """Same steps, the recipe's schedule compressed onto them (same number of stairs), no clock."""
    out = span_overrides(recipe, steps)
    every = max(1, steps // 10)
    out["training"].update(val_every=every, checkpoint_every=every, progress=False, max_time=None,
                           schedule_by_time=False)
    if dtype:
        out["dtype"] = dtype
    if water:
        w = shared("water")
        out["data"] = {"train": [str(w / "data_0"), str(w / "data_1")], "validation": [str(w / "data_2")]}
    return out


def run_variant(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Train one variant and score it on the whole validation set (in this process)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    summary = train_recipe(spec["recipe"], spec["overrides"], settings=spec["assignments"])
    cfg = summary["config"]
    val = cfg["data"].get("validation") or []
    # validation files: the exported (best) model on all of their frames; a val_fraction split: the
    # trainer's own final validation errors
    scores = evaluate(summary["model"], [str(v) for v in val], threads=1) if val else dict(summary.get("validation") or {})
    return {"name": spec["name"], "assignments": spec["assignments"], "steps": summary.get("steps"),
            "train_s": summary.get("elapsed_s"), "wall_s": time.time() - t0,
            "val_energy_rmse_meV_per_atom": scores.get("energy_rmse", float("nan")) * 1e3,
            "val_force_rmse_eV_A": scores.get("force_rmse"), "val_energy_mae_meV_per_atom":
            scores.get("energy_mae", float("nan")) * 1e3, "val_force_mae_eV_A": scores.get("force_mae"),
            "learning_curve": learning_curve(cfg["output"])}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["child"], ["child-deepmd"]):  # one variant (or the peer), in a pinned child process
        spec = json.loads(Path(argv[1]).read_text())
        res = run_variant(spec) if argv[0] == "child" else peer_deepmd_row(
            Path(spec["workdir"]), spec["steps"], spec["precision"], spec["seed"], spec.get("stop_lr"))
        tmp = Path(argv[2]).with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1, default=str))
        os.replace(tmp, argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--recipe", help="file in training/ (or a path), instead of a preset")
    ap.add_argument("--variant", action="append", default=[], help="'name: key=value ...' (repeatable)")
    ap.add_argument("--only", nargs="+", help="run only these variants of the preset")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--dtype", choices=["float32", "float64"])
    ap.add_argument("--water", action="store_true", help="train on water data_0 + data_1, validate on data_2")
    ap.add_argument("--jobs", type=int, default=2, help="variants at a time, one core each (default 2)")
    ap.add_argument("--peer-deepmd", action="store_true",
                    help="with --water: also train DeePMD-kit (peers venv, TF) for the same steps and schedule, "
                         "row 'deepmd_kit' (its water example is training/water_dp.yaml)")
    ap.add_argument("--peer-lr-stop", type=float, default=None,
                    help="with --peer-deepmd: DeePMD-kit's stop_lr (default the recipe's, training/water_dp.yaml)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="train every variant (and the peer) once per seed (`seed=S`); rows <variant>_s<S> and, per "
                         "variant, the mean over the seeds in `seed_means` (one seed: the recipe's, rows as named)")
    ap.add_argument("--name", help="results name (default: the preset or the recipe stem)")
    ap.add_argument("--workdir", help="default runs/ab_<name>")
    a = ap.parse_args(argv)
    if not a.preset and not a.recipe:
        ap.error("give --preset or --recipe")
    preset = PRESETS.get(a.preset or "", {})
    recipe = a.recipe or preset["recipe"]
    variants = dict(preset.get("variants", {}))
    variants.update(dict(parse_variant(v) for v in a.variant))
    if a.only:
        missing = [v for v in a.only if v not in variants]
        if missing:
            ap.error(f"--only: unknown variant(s) {', '.join(missing)} (known: {', '.join(variants)})")
        variants = {k: variants[k] for k in a.only}
    from mlip.train.config import parse_settings

    for vname, assignments in variants.items():  # a malformed override is one line here, not a child's traceback
        try:
            parse_settings(assignments)
        except ValueError as exc:
            ap.error(f"variant '{vname}': {exc}")
    name = a.name or a.preset or recipe_path(recipe).stem
    wd = Path(a.workdir or REPO / "runs" / f"ab_{name}").resolve()
    wd.mkdir(parents=True, exist_ok=True)
    common = common_overrides(recipe, a.steps, a.dtype or preset.get("dtype"), a.water or preset.get("water", False))
    seeds = a.seeds or [None]
    precision = a.dtype or preset.get("dtype") or "float64"
    runs = {(f"{v}_s{sd}" if sd is not None else v): (v, sd) for sd in seeds for v in variants}
    if a.peer_deepmd:  # the peer is one more job of the pool (a core of its own), after our variants
        runs.update({(f"deepmd_kit_s{sd}" if sd is not None else "deepmd_kit"): ("deepmd_kit", sd) for sd in seeds})
    pending, results = [], {}
    for key, (vname, sd) in runs.items():
        out = wd / f"{key}_{a.steps}.json"
        if out.exists():
            results[key] = json.loads(out.read_text())
            continue
        if vname == "deepmd_kit":
            spec = {"workdir": str(wd), "steps": a.steps, "precision": precision, "seed": 1 if sd is None else sd,
                    "stop_lr": a.peer_lr_stop}
        else:
            spec = {"name": key, "recipe": str(recipe_path(recipe)),
                    "assignments": variants[vname] + ([f"seed={sd}"] if sd is not None else []),
                    "overrides": {**common, "output": str(wd / f"{key}_{a.steps}")}}
        (wd / f"{key}_{a.steps}.spec.json").write_text(json.dumps(spec, indent=1))
        pending.append((key, out))
    running: List[Tuple[str, Path, subprocess.Popen, int]] = []
    # the cores this process may use (`taskset -c 1 python bench_ab.py ...` keeps the variants off core 0)
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = allowed[:max(1, a.jobs)]  # one variant per core: never more jobs than allowed cores
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    while pending or running:
        while pending and len(running) < len(cores):
            free = [c for c in cores if c not in {r[3] for r in running}][0]
            vname, out = pending.pop(0)
            log = open(wd / f"{vname}_{a.steps}.log", "w")
            child = "child-deepmd" if runs[vname][0] == "deepmd_kit" else "child"
            cmd = ["taskset", "-c", str(free), sys.executable, str(Path(__file__).resolve()),
                   child, str(wd / f"{vname}_{a.steps}.spec.json"), str(out)]
            print(f"{vname}: training {a.steps} steps on core {free} ({wd / (vname + '_' + str(a.steps))})", flush=True)
            running.append((vname, out, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), free))
        time.sleep(5)
        for r in list(running):
            if r[2].poll() is not None:
                running.remove(r)
                if r[1].exists():
                    results[r[0]] = json.loads(r[1].read_text())
                else:
                    print(f"{r[0]}: failed (exit {r[2].returncode}), see {wd / (r[0] + '_' + str(a.steps) + '.log')}")
    payload = {"recipe": recipe, "steps": a.steps, "common_overrides": common, "variants": results}
    if a.seeds:
        payload["seeds"] = a.seeds
        payload["seed_means"] = seed_means(results, runs)
    path = save(f"ab_{name}", payload)
    print(f"{'variant':20} {'E RMSE meV/atom':>16} {'F RMSE eV/Å':>12} {'train s':>8}")
    for vname, r in results.items():
        print(f"{vname:20} {r['val_energy_rmse_meV_per_atom']:16.3f} {r['val_force_rmse_eV_A']:12.4f} "
              f"{(r.get('train_s') or float('nan')):8.0f}")
    for vname, m in payload.get("seed_means", {}).items():
        print(f"{vname + ' (mean)':20} {m['val_energy_rmse_meV_per_atom']:16.3f} {m['val_force_rmse_eV_A']:12.4f} "
              f"  force RMSE over {m['n']} seeds: {m['force_min']:.4f} … {m['force_max']:.4f}")
    print("written", path)
    return 0


def seed_means(results: Dict[str, Dict[str, Any]], runs: Dict[str, Tuple[str, Optional[int]]]) -> Dict[str, Dict[str, Any]]:
    """Per variant (and the peer): the mean validation errors over its seeds, with the force RMSE's range.
    Single runs at a few thousand steps differ by up to ~20 % between seeds (water DP, 2000 steps: 0.233
    to 0.285 eV/Å), more than most training choices move them, so a choice is judged on these means."""
    out: Dict[str, Dict[str, Any]] = {}
    for vname in dict.fromkeys(v for v, _ in runs.values()):
        rows = [results[k] for k, (v, _) in runs.items() if v == vname and k in results]
        if not rows:
            continue
        f = [float(r["val_force_rmse_eV_A"]) for r in rows]
        e = [float(r["val_energy_rmse_meV_per_atom"]) for r in rows]
        out[vname] = {"n": len(rows), "val_force_rmse_eV_A": sum(f) / len(f), "val_energy_rmse_meV_per_atom": sum(e) / len(e),
                      "force_min": min(f), "force_max": max(f)}
    return out


def peer_deepmd_row(wd: Path, steps: int, precision: str, seed: int = 1,
                    stop_lr: Optional[float] = None) -> Dict[str, Any]:
    """DeePMD-kit on the water split for `steps` steps with the recipe's schedule compressed the same way
    (200 stairs 1e-3 → `stop_lr`, prefactors on the rate), its `seed`, `dp test` on all of data_2 (the
    caller keeps the row: <workdir>/deepmd_kit[_s<seed>]_<steps>.json)."""
    import peer_deepmd

    systems = peer_deepmd._water_systems()
    run = wd / (f"deepmd_kit_{steps}" if seed == 1 else f"deepmd_kit_s{seed}_{steps}")
    print(f"deepmd_kit: training {steps} steps, seed {seed} ({run})", flush=True)
    res = peer_deepmd.train(run, systems["train"], systems["valid"], steps, max(1, steps // 200), precision, 1,
                            disp_freq=max(100, steps // 20), save_freq=max(100, steps // 20), seed=seed,
                            stop_lr=stop_lr)
    test = peer_deepmd.dp_test(peer_deepmd.freeze(run), systems["valid"][0], run)
    return {"name": "deepmd_kit", "assignments": [f"DeePMD-kit 3.2.0 (TF), the same hyper-parameters, seed {seed}"
                                                    + (f", stop_lr {stop_lr:g}" if stop_lr is not None else "")],
            "steps": res["steps_done"], "train_s": res["train_s"],
            "val_energy_rmse_meV_per_atom": test["energy_rmse_per_atom"] * 1e3, "val_force_rmse_eV_A": test["force_rmse"],
            "val_energy_mae_meV_per_atom": test["energy_mae_per_atom"] * 1e3, "val_force_mae_eV_A": test["force_mae"]}

if __name__ == "__main__":
    sys.exit(main())
