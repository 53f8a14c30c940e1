"""Frame → (species, edge_index, edge_vec) for the MTP tools (fitting, grading, conversion checks).

One small switch point for the neighbour list: the C++ cell list (`mlip.neighbors`, needs the
compiled `mlip._core`) when it is built, otherwise ASE's `primitive_neighbor_list`, which follows the
same contract (full list, every periodic image with 0 < |r| < cutoff including an atom's own images,
edge_vec = x_j − x_i + S·cell).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

_USE_CORE: Optional[bool] = None


def neighbor_edges(positions, cell, pbc, cutoff: float) -> Tuple[np.ndarray, np.ndarray]:
    """(edge_index int64[2, E], edge_vec float64[E, 3])."""
    global _USE_CORE
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if _USE_CORE is None:
        try:
            from mlip import _core  # noqa: F401

            _USE_CORE = True
        except ImportError:
            _USE_CORE = False
    if _USE_CORE:
        from mlip.neighbors import neighbor_list

        ei, _, vec = neighbor_list(positions, cell, pbc, float(cutoff))
        return np.ascontiguousarray(ei, dtype=np.int64), np.ascontiguousarray(vec, dtype=np.float64)
    from ase.neighborlist import primitive_neighbor_list

    c = cell.copy()
    # ASE needs a usable cell even along open directions: give them a box that never wraps
    if not pbc.all():
        span = (positions.max(0) - positions.min(0)) if len(positions) else np.zeros(3)
        for d in range(3):
            if not pbc[d] and not np.any(c[d]):
                c[d, d] = span[d] + 2.0 * cutoff + 1.0
    i, j, vec = primitive_neighbor_list("ijD", pbc, c, positions, float(cutoff), self_interaction=False)
    order = np.lexsort((j, i))
    ei = np.stack([i[order], j[order]]).astype(np.int64)
    return ei, np.ascontiguousarray(vec[order], dtype=np.float64)


def species_index(symbols: Sequence[str], species: Sequence[str], source: str = "") -> np.ndarray:
    lookup = {s: k for k, s in enumerate(species)}
    out = np.empty(len(symbols), dtype=np.int64)
    for a, s in enumerate(symbols):
        if s not in lookup:
            where = f"{source}: " if source else ""
            raise ValueError(f"{where}atom {a} is element '{s}', which is not in the model's species {list(species)}")
        out[a] = lookup[s]
    return out


def frame_graph(frame, species: Sequence[str], cutoff: float, dtype: torch.dtype = torch.float64
                ) -> Tuple[Tensor, Tensor, Tensor]:
    """(species [N] long, edge_index [2, E] long, edge_vec [E, 3] dtype) of a Frame or ase.Atoms."""
    if hasattr(frame, "get_positions"):  # ase.Atoms
        symbols = frame.get_chemical_symbols()
        pos, cell, pbc = frame.get_positions(), np.asarray(frame.get_cell()[:]), frame.get_pbc()
        source = ""
    else:
        symbols, pos, cell, pbc = frame.symbols, frame.positions, frame.cell, frame.pbc
        source = getattr(frame, "source", "")
    sp = species_index(symbols, species, source)
    ei, vec = neighbor_edges(pos, cell, pbc, cutoff)
    return (torch.from_numpy(sp), torch.from_numpy(ei), torch.from_numpy(vec).to(dtype))
