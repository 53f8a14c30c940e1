"""A short, JSON-able description of a data set (frames, atoms, elements, groups, which labels), kept
in training checkpoints and exports so `mlip info` can say what a model was trained on."""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Sequence

from mlip.data.frame import Frame


def data_summary(frames: Sequence[Frame]) -> Dict[str, Any]:
    """{n_frames, n_atoms, atoms_per_frame [min, max], elements {El: atoms}, groups {group: frames},
    labelled {energy, forces, virial: frames}, files [source files]}."""
    sizes = [len(f.symbols) for f in frames]
    files = sorted({f.source.rsplit(":", 1)[0] for f in frames if f.source})
    groups = Counter(f.group for f in frames if f.group)
    return {
        "n_frames": len(frames),
        "n_atoms": int(sum(sizes)),
        "atoms_per_frame": [min(sizes), max(sizes)] if sizes else [0, 0],
        "elements": dict(sorted(Counter(s for f in frames for s in f.symbols).items())),
        "groups": dict(sorted(groups.items())),
        "labelled": {"energy": sum(f.energy is not None for f in frames),
                     "forces": sum(f.forces is not None for f in frames),
                     "virial": sum(f.virial is not None for f in frames)},
        "files": files[:20] + ([f"… {len(files) - 20} more"] if len(files) > 20 else []),
    }
