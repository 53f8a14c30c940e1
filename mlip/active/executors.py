"""Where the labels are computed: in the loop's process (`local`), in a pool of processes on this
machine (`process`), or on a `dask.distributed` cluster (`dask`: a LocalCluster by default, or the
scheduler at `address`, e.g. one started by dask-jobqueue on Slurm/PBS).

Whatever the executor, one label is one call of `label_one` in a worker: it computes the oracle on one
configuration and writes `{j}.xyz` (or `{j}.failed.json`) atomically itself, so the loop's process
holds no result that a kill could lose. A worker that dies mid-label writes nothing: dask reschedules
the task on another worker, and a resumed loop recomputes whatever has no file — a label is never
lost and never counted twice (the file name is its selection index). Each worker computes with
`threads` OpenMP/BLAS threads (set before the oracle's libraries load).

A process pool or dask cluster, once started, serves every label stage of the process (iterations
pay its start-up once); `close_executors` (also at exit) stops them.
"""
from __future__ import annotations

import atexit
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

EXECUTORS = ("local", "process", "dask")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _limit_threads(threads: int) -> None:
    for v in THREAD_VARS:
        os.environ[v] = str(int(threads))


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the one that started it dies, so that a killed loop
    leaves no worker behind to finish (and write) a label the resumed loop is computing again."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux: workers end when they lose their parent's pipe
        pass


def _pool_worker(threads: int) -> None:
    _limit_threads(threads)
    _die_with_parent()


def label_one(oracle: Dict[str, Any], atoms, xyz_path: str, failed_path: str, meta: Dict[str, Any]) -> str:
    """Label one configuration with the oracle and write the result file; "done" | "failed" | "had"
    (a file was already there: a rescheduled or repeated task computes nothing)."""
    import numpy as np
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlip.active.store import atomic_atoms, atomic_json, bare
    from mlip.datagen import make_calculator

    if os.path.isfile(xyz_path) or os.path.isfile(failed_path):
        return "had"
    atoms = bare(atoms, dict(meta))
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        atoms.calc = make_calculator(oracle)
        e = atoms.get_potential_energy()
        f = atoms.get_forces()
        stress = atoms.get_stress() if atoms.pbc.all() else None
        bad = [name for name, v in (("energy", e), ("forces", f), ("stress", stress))
               if v is not None and not np.all(np.isfinite(v))]
        if bad:
            raise FloatingPointError(f"the oracle returned non-finite {', '.join(bad)}")
    except Exception as exc:  # an SCF that does not converge, a crashed code: recorded, the loop goes on
        atomic_json(failed_path, {**{k: meta.get(k) for k in ("al_index", "al_id")},
                                  "index": meta.get("al_index"), "error": f"{type(exc).__name__}: {exc}"})
        return "failed"
    # the cost goes beside the label, not into it: labels.xyz of a resumed run equals an uninterrupted one
    atomic_json(xyz_path[:-len(".xyz")] + ".time.json",
                {"oracle_cpu_s": time.process_time() - cpu, "oracle_wall_s": time.perf_counter() - wall})
    out = bare(atoms, dict(atoms.info))
    res = {"energy": float(e), "forces": np.array(f)}
    if stress is not None:
        res["stress"] = np.array(stress)
    out.calc = SinglePointCalculator(out, **res)
    atomic_atoms(xyz_path, [out])
    return "done"


Task = Tuple[Any, str, str, Dict[str, Any]]  # (atoms, xyz path, failed path, meta)


def run_labels(cfg: Dict[str, Any], tasks: List[Task], on_done: Callable[[int, str], None],
               before: Optional[Callable[[], None]] = None) -> None:
    """Run `label_one` on every task with the configured executor; `on_done(i, status)` after each
    one finishes (in completion order), `before()` before each local call."""
    lab = cfg["label"]
    name = lab["executor"]
    if name not in EXECUTORS:
        raise ValueError(f"label.executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if not tasks:
        return
    oracle, threads = cfg["oracle"], int(lab["threads"])
    if name == "local":
        for i, t in enumerate(tasks):
            if before is not None:
                before()
            on_done(i, label_one(oracle, *t))
        return
    if name == "process":
        _run_pool(oracle, tasks, int(lab["workers"]), threads, on_done)
    else:
        _run_dask(oracle, tasks, lab, threads, on_done)


_OPEN: Dict[tuple, Any] = {}  # started pools / dask clients, reused by later label stages


def close_executors() -> None:
    """Stop the process pools and dask clusters this process started."""
    while _OPEN:
        _, closers = _OPEN.popitem()
        for close in closers[1:]:
            try:
                close()
            except Exception:  # pragma: no cover - shutting down a broken pool
                pass


atexit.register(close_executors)


def _run_pool(oracle, tasks: List[Task], workers: int, threads: int, on_done) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    key = ("process", workers, threads)
    if key not in _OPEN:
        # spawn: fresh workers that load the oracle's libraries after their thread limits are set
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                   initializer=_pool_worker, initargs=(threads,))
        _OPEN[key] = (pool, lambda: pool.shutdown(cancel_futures=True))
    pool = _OPEN[key][0]
    try:
        futures = {pool.submit(label_one, oracle, *t): i for i, t in enumerate(tasks)}
        for fut in as_completed(futures):
            on_done(futures[fut], fut.result())
    except BrokenProcessPool:
        _OPEN.pop(key, None)  # a worker died: the next stage (or the resumed loop) starts a new pool
        raise


def _run_dask(oracle, tasks: List[Task], lab: Dict[str, Any], threads: int, on_done) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ValueError("label.executor dask needs dask.distributed: pip install 'mlip[xtb]' "
                         "(or 'dask[distributed]')") from None
    key = ("dask", lab.get("address"), int(lab["workers"]), threads)
    if key not in _OPEN:
        if lab.get("address"):
            client = Client(lab["address"])
            _OPEN[key] = (client, client.close)
        else:
            cluster = LocalCluster(n_workers=int(lab["workers"]), threads_per_worker=1, processes=True,
                                   dashboard_address=None, env={v: str(threads) for v in THREAD_VARS},
                                   death_timeout=30)
            client = Client(cluster)
            _bind_to_loop(client)
            _OPEN[key] = (client, client.close, cluster.close)
    client = _OPEN[key][0]
    futures = [client.submit(label_one, oracle, *t, key=f"label-{t[1]}-{time.time_ns()}", pure=False, retries=2)
               for t in tasks]
    index = {f.key: i for i, f in enumerate(futures)}
    for fut in as_completed(futures):
        on_done(index[fut.key], fut.result())


def _bind_to_loop(client) -> None:
    """A LocalCluster's nannies and workers die with the loop's process (`_die_with_parent`)."""
    from distributed.diagnostics.plugin import NannyPlugin, WorkerPlugin

    class DieWithParentNanny(NannyPlugin):
        name = "mlip-die-with-parent-nanny"

        def setup(self, nanny):
            _die_with_parent()

    class DieWithParentWorker(WorkerPlugin):
        name = "mlip-die-with-parent-worker"

        def setup(self, worker):
            _die_with_parent()

    client.register_plugin(DieWithParentNanny())
    client.register_plugin(DieWithParentWorker())
