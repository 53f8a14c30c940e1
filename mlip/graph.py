"""Frames → edges → graphs → batches: the model input of training, grading and conversion checks.

`frame_edges` turns one frame (an `mlip.data.Frame` or an `ase.Atoms`) into the model's input
(species indices, edge_index, edge_vec) through `mlip.neighbors.neighbor_edges`; `species_indices`
is the one element → model-species lookup (clear error for an element the model does not know).
Training positions never move, so each frame's edge vectors are computed once and kept in a
`Graph` with its labels; a `Batch` is the disjoint union of its frames' graphs. Running a model on
a batch (`predict`) is in `mlip.models.base`, next to the derivative code it uses.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from mlip.neighbors import neighbor_edges


@dataclass
class Graph:
    """One frame as tensors (labels may be None)."""

    species: Tensor  # [N] long, model species indices
    edge_index: Tensor  # [2, E] long
    edge_vec: Tensor  # [E, 3]
    energy: Optional[float]
    forces: Optional[Tensor]  # [N, 3]
    virial: Optional[Tensor]  # [3, 3]
    weight: float
    source: str

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])


def species_indices(symbols: Sequence[str], species: Sequence[str], source: str = "") -> np.ndarray:
    """Index of each symbol in `species` (int64[N]); ValueError naming the atom and element if one
    is not there (`source`, e.g. a file name, prefixes the message)."""
    lookup = {s: k for k, s in enumerate(species)}
    out = np.empty(len(symbols), dtype=np.int64)
    for a, s in enumerate(symbols):
        k = lookup.get(s)
        if k is None:
            where = f"{source}: " if source else ""
            raise ValueError(f"{where}atom {a} is element '{s}', which is not in the model's species {list(species)}")
        out[a] = k
    return out


def frame_edges(frame: Any, species: Sequence[str], cutoff: float, dtype: torch.dtype = torch.float64
                ) -> Tuple[Tensor, Tensor, Tensor]:
    """(species [N] long, edge_index [2, E] long, edge_vec [E, 3] `dtype`) of an `mlip.data.Frame`
    or an `ase.Atoms`: the arguments of a model's `forward`."""
    if hasattr(frame, "get_positions"):  # ase.Atoms
        symbols = frame.get_chemical_symbols()
        pos, cell, pbc = frame.get_positions(), np.asarray(frame.get_cell()[:]), frame.get_pbc()
        source = ""
    else:
        symbols, pos, cell, pbc = frame.symbols, frame.positions, frame.cell, frame.pbc
        source = str(getattr(frame, "source", "") or "")
    sp = species_indices(symbols, species, source)
    ei, vec = neighbor_edges(pos, cell, pbc, cutoff)
    return torch.from_numpy(sp), torch.from_numpy(ei), torch.from_numpy(vec).to(dtype)


def frame_to_graph(frame: Any, species: Sequence[str], cutoff: float, dtype: torch.dtype = torch.float64
                   ) -> Graph:
    """A frame with its labels (energy, forces, virial, weight) as a `Graph`."""
    sp, ei, vec = frame_edges(frame, species, cutoff, dtype)
    return Graph(
        species=sp,
        edge_index=ei,
        edge_vec=vec,
        energy=None if frame.energy is None else float(frame.energy),
        forces=None if frame.forces is None else torch.as_tensor(frame.forces, dtype=dtype),
        virial=None if frame.virial is None else torch.as_tensor(np.asarray(frame.virial).reshape(3, 3), dtype=dtype),
        weight=float(getattr(frame, "weight", 1.0)),
        source=str(getattr(frame, "source", "")),
    )


@dataclass
class Batch:
    species: Tensor
    edge_index: Tensor
    edge_vec: Tensor
    node_frame: Tensor  # [N] frame of each atom
    edge_frame: Tensor  # [E] frame of each edge
    n_atoms: Tensor  # [B] float
    energy: Tensor  # [B] (0 where missing)
    energy_mask: Tensor  # [B] bool
    forces: Tensor  # [N, 3]
    force_mask: Tensor  # [N] bool
    virial: Tensor  # [B, 3, 3]
    virial_mask: Tensor  # [B] bool
    weight: Tensor  # [B]

    @property
    def n_frames(self) -> int:
        return int(self.n_atoms.shape[0])

    def to(self, device: torch.device) -> "Batch":
        """The batch on `device` (itself when it is there already: no copy on the CPU path)."""
        if self.species.device == torch.device(device):
            return self
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def collate(graphs: Sequence[Graph]) -> Batch:
    dtype = graphs[0].edge_vec.dtype
    offsets = np.cumsum([0] + [g.n_atoms for g in graphs[:-1]])
    species = torch.cat([g.species for g in graphs])
    edge_index = torch.cat([g.edge_index + int(o) for g, o in zip(graphs, offsets)], 1)
    edge_vec = torch.cat([g.edge_vec for g in graphs])
    node_frame = torch.cat([torch.full((g.n_atoms,), k, dtype=torch.long) for k, g in enumerate(graphs)])
    edge_frame = torch.cat(
        [torch.full((g.edge_index.shape[1],), k, dtype=torch.long) for k, g in enumerate(graphs)]
    )
    n_atoms = torch.tensor([g.n_atoms for g in graphs], dtype=dtype)
    energy = torch.tensor([0.0 if g.energy is None else g.energy for g in graphs], dtype=dtype)
    energy_mask = torch.tensor([g.energy is not None for g in graphs])
    forces = torch.cat([g.forces if g.forces is not None else torch.zeros(g.n_atoms, 3, dtype=dtype) for g in graphs])
    force_mask = torch.cat([torch.full((g.n_atoms,), g.forces is not None) for g in graphs])
    virial = torch.stack([g.virial if g.virial is not None else torch.zeros(3, 3, dtype=dtype) for g in graphs])
    virial_mask = torch.tensor([g.virial is not None for g in graphs])
    weight = torch.tensor([g.weight for g in graphs], dtype=dtype)
    return Batch(species, edge_index, edge_vec, node_frame, edge_frame, n_atoms, energy, energy_mask,
                 forces, force_mask, virial, virial_mask, weight)


def fit_energy_bias(graphs: Sequence[Graph], n_species: int) -> Tensor:
    """Per-species energies from a least-squares fit E_frame ≈ Σ_s n_s b_s (minimum-norm when
    species always appear in fixed ratios, as in water)."""
    rows, target = [], []
    for g in graphs:
        if g.energy is None:
            continue
        rows.append(np.bincount(g.species.numpy(), minlength=n_species))
        target.append(g.energy)
    if not rows:
        return torch.zeros(n_species, dtype=torch.float64)
    a = np.asarray(rows, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    return torch.from_numpy(sol)


def build_graphs(frames: Sequence[Any], species: Sequence[str], cutoff: float, dtype: torch.dtype) -> List[Graph]:
    return [frame_to_graph(f, species, cutoff, dtype) for f in frames]
