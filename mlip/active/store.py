"""The active-learning run directory: atomic writes, stage markers, and reading the state back.

Everything the loop does is written so that a SIGKILL at any instant leaves either the old file or the
complete new one (`mlip.io.safe_write`: a temporary name, fsync, rename; a failed write is one
`WriteError` line and leaves nothing behind): a resumed run reads back exactly what an
uninterrupted one would have. A stage (or one unit of it: an MD run, a label, a committee member) is
finished when its marker file (`done.json`, `run_{r}.json`, `{j}.xyz`) exists; nothing else is trusted.

Layout (OUT/): `al_config.yaml` (the configuration; a re-run with another one is refused), `al.log`,
`init.xyz`, `iter_{k:03d}/{train,explore,select,label}/…`, `iter_{k}/done.json`, `times.json`,
`summary.csv`, `model.pt` / `model_{m}.pt` (the latest trained models).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from typing import Any, Dict, List, Optional, Sequence

import yaml

from mlip.io.safe_write import atomic_open, atomic_write, ensure_dir, open_append


def atomic_text(path: str, text: str) -> None:
    atomic_write(path, text)


def atomic_json(path: str, obj: Any) -> None:
    atomic_text(path, json.dumps(obj, indent=1, default=float))


def read_json(path: str) -> Optional[Any]:
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def atomic_atoms(path: str, images: Sequence[Any]) -> None:
    """Write ASE structures as extended XYZ, atomically (an empty list gives an empty file)."""
    import ase.io

    with atomic_open(path) as fh:
        ase.io.write(fh, list(images), format="extxyz")


def read_atoms(path: str) -> List[Any]:
    import ase.io

    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return []
    return list(ase.io.read(path, ":", format="extxyz"))


def atomic_copy(src: str, dst: str) -> None:
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def bare(atoms, info: Optional[Dict[str, Any]] = None):
    """Symbols, positions, cell and pbc of `atoms` only (no calculator, velocities or arrays), plus `info`."""
    from ase import Atoms

    a = Atoms(atoms.get_chemical_symbols(), positions=atoms.get_positions(), cell=atoms.cell[:], pbc=atoms.pbc)
    a.info.update(info or {})
    return a


class RunStore:
    """Paths and persistent state of one active-learning run directory."""

    def __init__(self, out: str, verbose: bool = True) -> None:
        self.out = out
        self.verbose = verbose
        ensure_dir(out)

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if self.verbose:
            print(line, flush=True)
        with open_append(os.path.join(self.out, "al.log")) as fh:
            fh.write(line + "\n")

    def it_dir(self, k: int, *parts: str) -> str:
        return os.path.join(self.out, f"iter_{k:03d}", *parts)

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def check_saved_config(self, cfg: Dict[str, Any]) -> None:
        """Save `cfg` on the first run; refuse a different one later (`iterations`, `output` and the
        labelling executor may change: where labels are computed does not change them)."""
        path = self.path("al_config.yaml")
        free = ("iterations", "output", "label")
        mine = {k: v for k, v in cfg.items() if k not in free}
        if os.path.isfile(path):
            with open(path) as fh:
                saved = yaml.safe_load(fh)
            saved = {k: v for k, v in saved.items() if k not in free}
            if json.dumps(saved, sort_keys=True, default=str) != json.dumps(mine, sort_keys=True, default=str):
                diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
                raise ValueError(f"'{self.out}' holds an active-learning run with a different configuration "
                                 f"(sections {diff} differ): use another output directory")
        else:
            atomic_text(path, yaml.safe_dump(cfg, sort_keys=False))

    def labels_path(self, k: int) -> Optional[str]:
        """Iteration k's labelled configurations, if there are any."""
        p = self.it_dir(k, "label", "labels.xyz")
        return p if os.path.isfile(p) and os.path.getsize(p) > 0 else None

    def n_labels_before(self, k: int) -> int:
        """Labels computed in iterations 0 … k−1."""
        n = 0
        for j in range(k):
            d = read_json(self.it_dir(j, "label", "done.json"))
            if d:
                n += int(d["labelled"])
        return n


class KillSwitch:
    """Test hook (MLIP_AL_TEST_KILL="stage:iteration:n"): SIGKILL this process at the n-th event of
    that stage (train: checkpoint last.pt written; explore: MD step; label: oracle call begins), to
    prove that every stage resumes from what is on disk."""

    def __init__(self) -> None:
        spec = os.environ.get("MLIP_AL_TEST_KILL", "")
        self.target = None
        if spec:
            stage, it, n = spec.split(":")
            self.target = (stage, int(it), int(n))
        self.count = 0

    def tick(self, stage: str, iteration: int) -> None:
        if self.target is None or self.target[:2] != (stage, iteration):
            return
        self.count += 1
        if self.count >= self.target[2]:
            os.kill(os.getpid(), signal.SIGKILL)
