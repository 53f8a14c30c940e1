"""One command for the measured comparisons, ours and the peers' side by side on this machine.

    python -m benchmarks all                      # every section, then benchmarks/results/README.md
    python -m benchmarks water [--minutes 30] [--dtypes float64 float32] [--threads 1]
    python -m benchmarks lammps | ase | accuracy
    python -m benchmarks water lammps --quick     # short smoke versions of the same runs
    python -m benchmarks all --dry-run            # print what would run (and what would be skipped)
    python -m benchmarks all --resume             # only the runs whose results/*.json are missing
    python -m benchmarks report                   # only rebuild benchmarks/results/README.md
    python -m benchmarks peers-install | peers-status

Sections (each line is one script run with this Python, in order; a script that is not in the
repository yet prints "not yet available" and the run continues; a peer that is not installed is
installed into its own venv first — benchmarks/peers.py, `.peers-venv` or MLIP_PEERS_VENV, and
`<that>-nequip` for NequIP — unless --no-install, in which case its runs print SKIP):

* water    — bench_water.py (our DP; our NequIP-style in float32) and peer_deepmd.py water (DeePMD-kit TF), same budget,
             same hyper-parameters, same threads, one after the other; dp_equivalence.py: DeePMD-kit's untrained
             model loaded into ours (forces) and 300 training steps of both from it on one frame; peer_nequip_water.py: NequIP 0.19 (nequip-train,
             its own venv) with the architecture of training/nequip_water.yaml, float32, the same budget; bench_ddp.py:
             our DP trained on 1 and 2 ranks (torch.distributed, gloo), frames/s at the same global batch.
* lammps   — bench_lammps.py (pair_style mlip, fcc Cu: small DP 1k-100k atoms, NequIP-style 1k-100k
             atoms on 1 and 2 ranks with memory per atom against the ASE calculator) and peer_deepmd.py lammps: pair_style deepmd
             (plain, compressed) and pair_style mlip with the same se_e2_a water architecture on the
             same water boxes and input, 1 and 2 MPI ranks.
* ase      — peer_deepmd.py ase: DeePMD-kit's ASE calculator (plain, compressed) vs ours with the same
             se_e2_a water architecture on the same water boxes, 100 and 1000 atoms;
             bench_nequip_speed.py (ours) and peer_mace.py: MACE's ASE calculator vs ours (an
             untrained NequIP-style model matched to the MACE size, and our DP), 100 and 1000 atoms;
             peer_nequip.py: NequIP (the package, AOTInductor-compiled, its own venv) vs ours with the
             same architecture (bench_lammps.NEQUIP_PRESET), fcc Cu, 100 and 1000 atoms, float32 and float64.
* accuracy — bench_mlearn.py (DP, NequIP; Mo and Si, 40 min each), peer_deepmd_mlearn.py (DeePMD-kit with the DP
             recipes, same split and budget), bench_mtp.py reference, bench_mlearn_mtp.py (MTP Mo and Si),
             bench_mtp_snap.py (MTP vs SNAP and qSNAP in LAMMPS: speed and accuracy).

* al       — bench_al.py (AL vs random, EMT Cu), bench_al_xtb.py (AL vs random against GFN1-xTB water, 2
             seeds; labelling wall-clock local / process / dask), bench_al_selection.py (one selection step:
             each rule against random draws and the true-error oracle), bench_explore_engines.py (ASE vs LAMMPS
             exploration select alike). Needs `pip install 'mlip[xtb]'`.

Runs are sequential so that they do not compete for the two cores; each run's exit status is
reported at the end, and a failing run does not stop the others.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import peers  # noqa: E402

SECTIONS = ("water", "lammps", "ase", "accuracy", "al")


class Job:
    def __init__(self, section: str, label: str, script: str, args: List[str], peer: Optional[str] = None,
                 needs: Optional[str] = None, results: Optional[List[str]] = None) -> None:
        self.section, self.label, self.script, self.args, self.peer = section, label, script, args, peer
        self.needs = needs  # "our_water_dp" | "our_ase_models": models built (once) before the run
        self.results = results or []  # result JSON stems it writes (--resume skips the job if all exist)


def plan(sections: List[str], a: argparse.Namespace) -> List[Job]:
    q = a.quick
    thr = [str(a.threads)]
    jobs: List[Job] = []
    minutes = str(a.minutes if a.minutes is not None else (1.0 if q else 30.0))
    if "water" in sections:
        for dt in a.dtypes:
            jobs.append(Job("water", f"water, our DP ({dt})", "bench_water.py",
                            ["--minutes", minutes, "--dtype", dt, "--threads", *thr] +
                            (["--output", str(REPO / "runs" / f"quick_water_dp_{dt}")] if q else []),
                            results=[f"water_dp_{dt}"]))
            jobs.append(Job("water", f"water, DeePMD-kit TF ({dt})", "peer_deepmd.py",
                            ["water", "--minutes", minutes, "--precision", dt, "--threads", *thr] +
                            (["--probe-steps", "30", "--output", str(REPO / "runs" / f"quick_peer_deepmd_{dt}"),
                              "--save-name", f"quick_water_deepmd_{dt}"] if q else []), peer="deepmd",
                            results=[f"water_deepmd_{dt}"]))
        jobs.append(Job("water", "water, our DP vs DeePMD-kit from the same weights (model and optimiser equivalence)",
                        "dp_equivalence.py", ["--steps", "30", "--save-name", "quick_dp_equivalence"] if q else [],
                        peer="deepmd",
                        results=["quick_dp_equivalence" if q else "dp_equivalence"]))
        jobs.append(Job("water", "water, our DP on 1 and 2 training ranks (torch.distributed)", "bench_ddp.py",
                        (["--steps", "10", "--batches", "2", "--output", str(REPO / "runs" / "quick_ddp"),
                          "--save-name", "quick_ddp_water_dp"] if q else []),
                        results=["ddp_water_dp_float64"]))
        jobs.append(Job("water", "water, our NequIP-style (float32)", "bench_water.py",
                        ["--recipe", "nequip_water.yaml", "--minutes", minutes, "--dtype", "float32", "--threads", *thr] +
                        (["--output", str(REPO / "runs" / "quick_water_nequip")] if q else []),
                        results=["water_nequip_float32"]))
        # its peer: NequIP itself (nequip-train in its own venv), same architecture, split, budget and threads
        jobs.append(Job("water", "water, NequIP 0.19 (the package, float32)", "peer_nequip_water.py",
                        ["--minutes", minutes, "--dtype", "float32", "--threads", *thr] + (["--quick"] if q else []),
                        peer="nequip", results=["water_nequip_peer_float32"]))
    if "lammps" in sections:
        jobs.append(Job("lammps", "pair_style mlip (fcc Cu)", "bench_lammps.py",
                        (["--quick", "--sizes", "1000", "--ranks", "1", "--no-deepbind-check"] if q else
                         # 1e6 atom-steps per point: 10 steps at 100k atoms (2e5 gave 2, too few to time)
                         ["--sizes", "1000", "10000", "50000", "100000", "--atom-steps", "1e6"]) +
                        ["--json", str(peers.RESULTS / ("quick_lammps_mlip.json" if q else "lammps_mlip.json"))],
                        results=["lammps_mlip"]))
        jobs.append(Job("lammps", "pair_style mlip, NequIP-style (fcc Cu)", "bench_lammps.py",
                        ["--family", "nequip", "--no-deepbind-check"] +
                        (["--sizes", "256", "--ranks", "1", "--atom-steps", "1000"] if q else
                         # one-cutoff ghost shell with the per-layer feature exchange: 1k to 100k atoms on
                         # 1 and 2 ranks (~34 kB/atom); the ASE reference at 1k and 10k (100k: ~2 min a call)
                         ["--sizes", "1000", "10000", "100000", "--ranks", "1", "2", "--ase-sizes", "1000", "10000",
                          "--ase-threads", "1", "--atom-steps", "5e4"]) +
                        ["--json", str(peers.RESULTS / ("quick_lammps_nequip.json" if q else "lammps_nequip.json"))],
                        results=["lammps_nequip"]))
        jobs.append(Job("lammps", "pair_style deepmd vs mlip (water)", "peer_deepmd.py",
                        ["lammps", "--ours", "{our_water_dp}"] +
                        (["--sizes", "300", "--ranks", "1", "2", "--atom-steps", "3000", "--save-name", "quick_lammps_deepmd"] if q else []),
                        peer="deepmd", needs="our_water_dp", results=["lammps_deepmd"]))
    if "ase" in sections:
        jobs.append(Job("ase", "our NequIP speed", "bench_nequip_speed.py", ["--threads", *thr] + (["--reps", "1"] if q else [])))
        jobs.append(Job("ase", "MACE vs mlip ASE calculators", "peer_mace.py",
                        ["--threads", *thr, "--ours", "{our_ase_models}"] +
                        (["--sizes", "100", "--calls", "3", "--dtypes", "float64", "--save-name", "quick_ase_mace"] if q else []),
                        peer="mace", needs="our_ase_models", results=["ase_mace"]))
        # builds and exports our NequIP-style model itself (same architecture as the peer's), both dtypes
        jobs.append(Job("ase", "NequIP (the package) vs mlip ASE calculators", "peer_nequip.py",
                        ["--threads", *thr] + (["--quick"] if q else []), peer="nequip", results=["ase_nequip"]))
        jobs.append(Job("ase", "DeePMD-kit vs mlip ASE calculators (water)", "peer_deepmd.py",
                        ["ase", "--threads", *thr, "--ours", "{our_water_dp}"] +
                        (["--sizes", "100", "--calls", "3", "--no-compress", "--save-name", "quick_ase_deepmd"] if q else []),
                        peer="deepmd", needs="our_water_dp", results=["ase_deepmd"]))
    if "accuracy" in sections:
        jobs += [
            *[Job("accuracy", f"mlearn {el}, our {fam}", "bench_mlearn.py",
                  ["--recipe", recipe, "--element", el, "--threads", *thr] +
                  (["--steps", "50", "--minutes", "1", "--output", str(REPO / "runs" / f"quick_{recipe[:-5]}")]
                   if q else ["--minutes", "40"]), results=[f"mlearn_{el}_{recipe[:-5]}"])
              for el in ("Mo", "Si")
              for fam, recipe in (("DP", f"{el.lower()}_dp.yaml"), ("NequIP", f"nequip_{el.lower()}.yaml"))],
            # the DP recipes' peer: DeePMD-kit with the same hyper-parameters, split and budget
            *[Job("accuracy", f"mlearn {el}, DeePMD-kit TF (the DP recipe)", "peer_deepmd_mlearn.py",
                  ["--element", el, "--threads", *thr] +
                  (["--minutes", "0.5", "--probe-steps", "30", "--output", str(REPO / "runs" / f"quick_peer_deepmd_{el}"),
                    "--save-name", f"quick_mlearn_{el}_deepmd_peer"] if q else ["--minutes", "40"]),
                  peer="deepmd", results=[f"mlearn_{el}_deepmd_peer"]) for el in ("Mo", "Si")],
            Job("accuracy", "MTP vs MLIP-2 reference", "bench_mtp.py", ["reference"], results=["mtp_reference"]),
            Job("accuracy", "mlearn Mo/Si, our MTP", "bench_mlearn_mtp.py",
                ["--threads", *thr] + (["--quick"] if q else []), results=["mlearn_Mo_mtp_mo", "mlearn_Si_mtp_si"]),
            Job("accuracy", "mlearn Mo: MTP vs SNAP/qSNAP in LAMMPS", "bench_mtp_snap.py",
                ["--mtp", str(REPO / "runs" / ("quick_mlearn_mtp_mo" if q else "bench_mlearn_mtp_mo") / "model.pt")] +
                (["--sizes", "2000", "--atom-steps", "2e4", "--repeats", "1"] if q else []), results=["bench_mtp_snap"]),
        ]
    if "al" in sections:
        jobs += [
            Job("al", "active learning vs random, EMT Cu", "bench_al.py",
                ["--quick", "--workdir", str(REPO / "runs" / "quick_bench_al")] if q else [], results=["bench_al"]),
            Job("al", "active learning vs random, GFN1-xTB water; labelling executors", "bench_al_xtb.py",
                ["--quick", "--seeds", "21", "--workdir", str(REPO / "runs" / "quick_bench_al_xtb")] if q else [],
                results=["bench_al_xtb"]),
            # after bench_al_xtb: its random_s21 run's labels, from scratch, against its 10 initial boxes
            Job("al", "xTB water: does the test error depend on the labels at all? (DP and NequIP-style)",
                "bench_al_capacity.py",
                ["--run", str(REPO / "runs" / "quick_bench_al_xtb" / "random_s21"), "--minutes", "0.1",
                 "--families", "deepmd", "--workdir", str(REPO / "runs" / "quick_bench_al_capacity"),
                 "--save-name", "quick_al_capacity"] if q else [], results=["al_capacity"]),
            # after bench_al_xtb: one selection step from its random_s21 state, every rule against the oracle bound
            Job("al", "xTB water: one selection step, each rule against random draws and the true-error oracle",
                "bench_al_selection.py",
                ["--run", str(REPO / "runs" / ("quick_bench_al_xtb" if q else "bench_al_xtb") / "random_s21")]
                + (["--iteration", "1", "--budget", "2", "--draws", "1", "--rules", "oracle_error", "none",
                    "--workdir", str(REPO / "runs" / "quick_bench_al_selection"), "--save-name", "quick_al_selection"]
                   if q else ["--iteration", "3"]),
                results=["quick_al_selection" if q else "al_selection_random_s21_k3"]),
            Job("al", "ASE vs LAMMPS exploration (xTB water recipe)", "bench_explore_engines.py",
                ["--steps", "60", "--runs", "3", "--workdir", str(REPO / "runs" / "quick_bench_explore"),
                 "--save-name", "quick_explore_engines"] if q else [],
                results=["explore_engines"]),
        ]
    return jobs


# ----------------------------------------------------------------------------------------------
# our models for the same-structure comparisons (random weights: speed does not depend on them)

def build_our_water_dp(tmp: Path) -> List[str]:
    """Our Deep Potential with training/water_dp.yaml's model section, exported float64."""
    import yaml

    from mlip.export import export_model
    from mlip.models import build_model

    cfg = yaml.safe_load((REPO / "training" / "water_dp.yaml").read_text())["model"]
    fam = cfg.pop("family")
    model = build_model(fam, {**cfg, "seed": 0})
    path = tmp / "mlip_water_dp.pt"
    export_model(model, str(path), "float64")
    return [str(path)]


def build_our_ase_models(tmp: Path, dtypes: List[str]) -> List[str]:
    """Cu models for the ASE comparison: a NequIP-style model matched to the MACE default
    (2 layers, 32 features, l_max 1, cutoff 5 Å) and our DP defaults; one export per dtype."""
    import torch

    from mlip.export import export_model
    from mlip.models.deepmd import DeepPotSeA
    from mlip.models.nequip import NequIP

    out = []
    for dt in dtypes:
        torch.manual_seed(0)
        nq = NequIP(["Cu"], cutoff=5.0, l_max=1, num_features=32, num_layers=2, avg_num_neighbors=40.0)
        p = tmp / f"nequip_l1_f32x2_{dt}.pt"
        export_model(nq, str(p), dt)
        out.append(f"nequip(l1,32,2) {dt}={p}")
        p = tmp / f"dp_default_{dt}.pt"
        export_model(DeepPotSeA(["Cu"], seed=0), str(p), dt)
        out.append(f"DP default {dt}={p}")
    return out


def ensure_peer(peer: str, a: argparse.Namespace) -> Optional[str]:
    """None when the peer is usable (installing it if allowed), else the SKIP reason."""
    reason = peers.unavailable_reason(peer)
    if reason is None:
        return None
    if a.no_install:
        return reason
    if a.dry_run:
        print(f"(would install the peer codes into {peers.venv_dir()}: {peers.REQUIREMENTS[peer]})")
        return None
    print(f"--- installing the peer codes ({peer}) into {peers.venv_dir()}", flush=True)
    try:
        peers.install([peer])
    except Exception as e:  # noqa: BLE001 - report and go on
        return f"install failed: {str(e).splitlines()[0]}"
    return peers.unavailable_reason(peer)


def run(a: argparse.Namespace) -> int:
    sections = list(SECTIONS) if "all" in a.sections else [s for s in a.sections if s in SECTIONS]
    jobs = plan(sections, a)
    status: List[tuple] = []
    built: Dict[str, List[str]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="mlip_bench_models_"))
    env = dict(os.environ)
    env.setdefault("MLIP_BENCH_RESULTS", str(peers.RESULTS))
    t_all = time.time()
    for job in jobs:
        script = HERE / job.script
        title = f"[{job.section}] {job.label}"
        if not script.exists():
            print(f"\n=== {title}: not yet available (benchmarks/{job.script} is not in the repository)", flush=True)
            status.append((title, "not yet available"))
            continue
        if a.resume and not a.quick and job.results and all((peers.RESULTS / f"{r}.json").exists() for r in job.results):
            print(f"\n=== {title}: done before (--resume; {', '.join(job.results)})", flush=True)
            status.append((title, "kept (--resume)"))
            continue
        print(f"\n=== {title}", flush=True)
        if job.peer:
            reason = ensure_peer(job.peer, a)
            if reason:
                print(f"SKIP: {reason}", flush=True)
                status.append((title, "skipped (peer missing)"))
                continue
        args = list(job.args)
        if job.needs and not a.dry_run:
            try:
                if job.needs not in built:
                    built[job.needs] = (build_our_water_dp(tmp) if job.needs == "our_water_dp"
                                        else build_our_ase_models(tmp, a.dtypes if not a.quick else ["float64"]))
            except Exception as e:  # noqa: BLE001 - the peer part still runs
                print(f"(could not build our models for {job.needs}: {e}; timing the peer alone)", flush=True)
                built[job.needs] = []
            args = _expand(args, "{" + job.needs + "}", built[job.needs])
        elif job.needs:
            args = _expand(args, "{" + job.needs + "}", [f"<{job.needs}>"])
        cmd = [sys.executable, str(script), *args]
        print(f"$ {' '.join(cmd)}", flush=True)
        if a.dry_run:
            status.append((title, "dry run"))
            continue
        t0 = time.time()
        with _QuickResults(peers.RESULTS, a.quick):
            rc = subprocess.call(cmd, cwd=str(REPO), env=env)
        status.append((title, f"exit {rc} after {time.time() - t0:.0f} s"))
    print("\n=== summary")
    for title, st in status:
        print(f"  {title:<58} {st}")
    if not a.no_report and not a.dry_run:
        import report

        print("written", report.write(peers.RESULTS), f"(total {time.time() - t_all:.0f} s)")
    return 0


def _expand(args: List[str], token: str, values: List[str]) -> List[str]:
    """Replace `token` by `values`; with no values, drop the token and the option before it."""
    out: List[str] = []
    for x in args:
        if x != token:
            out.append(x)
        elif values:
            out.extend(values)
        elif out and out[-1].startswith("--"):
            out.pop()
    return out


class _QuickResults:
    """--quick: our scripts save under fixed names (benchmarks/common.py); keep the real results
    intact by renaming whatever a quick run writes (JSON, and the PNGs some scripts copy there) to
    quick_<name> and restoring the originals."""

    PATTERNS = ("*.json", "*.png")

    def __init__(self, results: Path, active: bool) -> None:
        self.results, self.active, self.before = results, active, {}

    def _files(self):
        return [p for pat in self.PATTERNS for p in self.results.glob(pat)]

    def __enter__(self):
        if self.active and self.results.is_dir():
            self.before = {p.name: p.read_bytes() for p in self._files()}
        return self

    def __exit__(self, *exc) -> None:
        if not self.active or not self.results.is_dir():
            return
        for p in self._files():
            if p.name.startswith(("quick_", "smoke_")) or self.before.get(p.name) == p.read_bytes():
                continue
            p.replace(self.results / f"quick_{p.name}")
            if p.name in self.before:
                p.write_bytes(self.before[p.name])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0],
                                 epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sections", nargs="+", metavar="SECTION",
                    choices=["all", *SECTIONS, "report", "peers-install", "peers-status"],
                    help="all | water | lammps | ase | accuracy (several allowed) | report | peers-install | peers-status")
    ap.add_argument("--minutes", type=float, help="water training budget per code (default 30; 1 with --quick)")
    ap.add_argument("--dtypes", nargs="+", default=["float64"], choices=["float64", "float32"])
    ap.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    ap.add_argument("--quick", action="store_true", help="short smoke versions (results saved as quick_*.json)")
    ap.add_argument("--dry-run", action="store_true", help="print the runs without running them")
    ap.add_argument("--resume", action="store_true",
                    help="skip the runs whose result files already exist (a long `all` spread over several sittings)")
    ap.add_argument("--no-install", action="store_true", help="never create/install the peers venv; skip instead")
    ap.add_argument("--no-report", action="store_true", help="do not rebuild benchmarks/results/README.md")
    a = ap.parse_args(argv)
    if "peers-install" in a.sections:
        peers.install()
        return 0
    if "peers-status" in a.sections:
        return peers.main(["status"])
    if a.sections == ["report"]:
        import report

        print("written", report.write(peers.RESULTS))
        return 0
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
