"""Data-parallel training over processes with `torch.distributed`, and the `mlip train --nproc N`
launcher.

How a step is shared (mini-batch optimiser, see `Trainer.run`): every rank draws the same global
batch (a pure function of seed and step), takes its own shard of it (`shard`: every world-th frame),
and computes the weighted loss of its frames divided by the weight of the *global* batch, so that
the sum over ranks is exactly the one-process loss. Gradients are summed across ranks in one flat
all-reduce, after which every rank holds the same gradient and takes the same Adam step, clipping,
EMA update and energy-reference shift (whose rows are gathered from all ranks). The parameters
therefore stay identical on all ranks, equal to a one-process run up to the order of floating-point
sums. Validation is sharded the same way and the per-frame errors are gathered, so every rank sees
the same metrics. Rank 0 alone writes the run directory; a checkpoint holds the global state only,
so `--resume` works with any number of ranks.

The process group comes from the usual `env://` variables: torchrun's RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT, or those of mpirun (MPICH/Hydra `PMI_RANK`/`PMI_SIZE`, Open MPI
`OMPI_COMM_WORLD_*`) and Slurm (`SLURM_PROCID`/`SLURM_NTASKS`) with MASTER_ADDR/MASTER_PORT set by
the job script. The backend is gloo on the CPU and NCCL on CUDA.
"""
from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist

# (rank variable, size variable) of the launchers we understand, in order of preference
_LAUNCHER_VARS = (("RANK", "WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"),
                  ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"))


DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str) -> torch.device:
    """The recipe's `device`: cpu (default), cuda, or auto (cuda when there is one, else cpu). Asking
    for cuda where there is none is one clear error, not a silent CPU run."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda, but torch.cuda.is_available() is False here (a CPU-only torch "
                         "build, or no GPU): use device: cpu or auto")
    return torch.device(name)


class RankLost(RuntimeError):
    """A collective operation failed: another rank has stopped (killed, crashed, out of memory)."""


def _env_rank_size() -> tuple:
    for rv, sv in _LAUNCHER_VARS:
        if rv in os.environ and sv in os.environ:
            try:
                return int(os.environ[rv]), int(os.environ[sv])
            except ValueError:
                raise ValueError(f"{rv}={os.environ[rv]!r} / {sv}={os.environ[sv]!r}: not integers") from None
    return 0, 1


class Distributed:
    """The process group of a training run, or a one-process stand-in with the same methods."""

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu")) -> None:
        self.rank, self.world, self.device = rank, world, device

    @classmethod
    def from_env(cls, device: torch.device = torch.device("cpu")) -> "Distributed":
        """Join the process group the environment describes (one process when it describes none)."""
        rank, world = _env_rank_size()
        if world <= 1:
            return cls(0, 1, device)
        if not dist.is_available():  # pragma: no cover - every CPU wheel has it
            raise ValueError("this torch build has no torch.distributed: train with one process")
        if not dist.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            if "MASTER_PORT" not in os.environ:
                raise ValueError(f"{world} ranks but no MASTER_PORT in the environment: set MASTER_ADDR and "
                                 "MASTER_PORT (torchrun and `mlip train --nproc` do)")
            backend = "nccl" if device.type == "cuda" else "gloo"
            timeout = datetime.timedelta(seconds=float(os.environ.get("MLIP_DIST_TIMEOUT", "600")))
            if device.type == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count()))))
            dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timeout)
        return cls(dist.get_rank(), dist.get_world_size(), device)

    # ---------------------------------------------------------------- who does what
    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory, prints progress and exports."""
        return self.rank == 0

    def shard(self, items: Sequence[Any]) -> List[Any]:
        """This rank's part of a global list: every world-th item, starting at the rank."""
        return list(items[self.rank::self.world])

    # ---------------------------------------------------------------- collectives
    def _run(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as exc:  # gloo/NCCL errors (DistBackendError is one) when a peer is gone
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]  # drop gloo's source location and advice
            raise RankLost(f"rank {self.rank}: lost contact with the other ranks ({first})") from None

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the gradients over ranks (one flat buffer; a parameter without a gradient counts as 0)."""
        if not self.active:
            return
        params = [p for p in params if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        self._run(dist.all_reduce, flat)
        off = 0
        for p in params:
            n = p.numel()
            g = flat[off: off + n].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
            off += n

    def sum(self, value: float) -> float:
        """A number summed over ranks."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self._run(dist.all_reduce, t)
        return float(t.item())

    def max(self, value: float) -> float:
        """The largest of a number over ranks (e.g. the clock of the slowest rank)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self._run(dist.all_reduce, t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def gather(self, obj: Any) -> List[Any]:
        """[obj of rank 0, obj of rank 1, …] on every rank (picklable objects)."""
        if not self.active:
            return [obj]
        out: List[Any] = [None] * self.world
        self._run(dist.all_gather_object, out, obj)
        return out

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere (a fresh model is already identical on every
        rank by its seed; this makes it so whatever the initialisation does)."""
        if not self.active:
            return
        for t in list(module.parameters()) + list(module.buffers()):
            with torch.no_grad():
                self._run(dist.broadcast, t.data, 0)

    def barrier(self) -> None:
        if self.active:
            self._run(dist.barrier)

    def close(self) -> None:
        """Leave the group together, so that no rank tears down a connection another still uses (a
        lone teardown can abort the process: "terminate called without an active exception").

        A barrier first; then every rank destroys its process group, even when the barrier failed (a
        group left alive is torn down at interpreter exit, where gloo's threads can abort). Last, rank 0
        waits until the others have destroyed theirs: under `env://` with mpirun or `--nproc` it hosts
        the rendezvous store, which must outlive every rank's use of it."""
        if not (self.active and dist.is_initialized()):
            return
        try:
            store = dist.distributed_c10d._get_default_store()
        except Exception:  # pragma: no cover - private helper; the barrier alone still applies
            store = None
        try:
            self._run(dist.barrier)
        except RankLost as exc:
            print(f"mlip: {exc} at the final barrier; leaving anyway", file=sys.stderr)
            store = None  # a peer is gone: do not wait for it
        finally:
            try:
                dist.destroy_process_group()
            except Exception:  # pragma: no cover - already torn down
                pass
        if store is None:
            return
        try:
            if self.rank:
                store.add("mlip/closed", 1)
            else:  # the store's host leaves last (bounded: a rank that died cannot block the exit)
                deadline = time.monotonic() + 60.0
                while store.add("mlip/closed", 0) < self.world - 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
        except Exception:  # pragma: no cover - a store peer vanished: nothing left to protect
            pass


# -------------------------------------------------------------------- the --nproc launcher
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def launch(argv: Sequence[str], nproc: int, output: Optional[str] = None) -> int:
    """Run `python -m mlip <argv>` as `nproc` ranks on this machine (gloo over localhost), wait for
    them, and stop them all as soon as one fails. Returns the job's exit code."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    port = _free_port()
    procs = []
    for r in range(nproc):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(nproc), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(nproc),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        env.setdefault("PYTHONFAULTHANDLER", "1")  # a rank that aborts shows its Python stack
        procs.append(subprocess.Popen([sys.executable, "-m", "mlip", *argv], env=env))
    failed = None
    try:
        while True:
            codes = [p.poll() for p in procs]
            bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if bad and failed is None:
                failed = bad[0]
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            if all(c is not None for c in codes):
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    if failed is None:
        return 0
    r, c = failed
    where = f" from {output}/checkpoints/last.pt" if output else ""
    print(f"mlip train: rank {r} of {nproc} {_describe(c)}; the other ranks were stopped. Continue the run"
          f"{where} with --resume (any number of ranks).", file=sys.stderr)
    return 2
