"""Frames → edge graphs → batches, and the batched energy/force/virial evaluation used in training.

Training positions never move, so each frame's edge vectors are computed once (C++ neighbour list)
and kept; a batch is the disjoint union of its frames' graphs. Forces and virials come from ∂E/∂r_e
through `mlip.export.forces_virials_from_edges`, the same function the export runs, so training and
deployment cannot disagree about signs or conventions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from mlip.export import forces_virials_from_edges


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
    lookup = {s: k for k, s in enumerate(species)}
    out = np.empty(len(symbols), dtype=np.int64)
    for a, s in enumerate(symbols):
        k = lookup.get(s)
        if k is None:
            where = f"{source}: " if source else ""
            raise ValueError(f"{where}atom {a} is element '{s}', which is not in the model's species {list(species)}")
        out[a] = k
    return out


def frame_to_graph(frame, species: Sequence[str], cutoff: float, dtype: torch.dtype = torch.float64) -> Graph:
    from mlip.neighbors import neighbor_list

    idx = species_indices(frame.symbols, species, frame.source)
    edge_index, _, edge_vec = neighbor_list(frame.positions, frame.cell, frame.pbc, cutoff)
    return Graph(
        species=torch.from_numpy(idx),
        edge_index=torch.from_numpy(np.ascontiguousarray(edge_index, dtype=np.int64)),
        edge_vec=torch.from_numpy(np.ascontiguousarray(edge_vec)).to(dtype),
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


def predict(model, batch: Batch, create_graph: bool = False, need_virial: bool = True) -> Dict[str, Tensor]:
    """Energies per frame, forces per atom and virials per frame of a batch (differentiable if asked)."""
    vec = batch.edge_vec.detach().requires_grad_(True)
    atom_e = model(batch.species, batch.edge_index, vec)
    energy = torch.zeros(batch.n_frames, dtype=atom_e.dtype).index_add_(0, batch.node_frame, atom_e)
    if atom_e.requires_grad:
        (grad,) = torch.autograd.grad(energy.sum(), vec, create_graph=create_graph, allow_unused=True)
    else:
        grad = None
    if grad is None:
        grad = torch.zeros_like(vec)
    forces, edge_virial = forces_virials_from_edges(grad, batch.edge_index, vec, batch.species.shape[0])
    if not create_graph:  # evaluation: hand back plain tensors
        energy, forces, atom_e = energy.detach(), forces.detach(), atom_e.detach()
    out = {"energy": energy, "forces": forces, "atom_energy": atom_e}
    if need_virial:
        virial = torch.zeros(batch.n_frames, 9, dtype=atom_e.dtype).index_add_(
            0, batch.edge_frame, edge_virial.reshape(-1, 9)
        ).reshape(-1, 3, 3)
        out["virial"] = virial if create_graph else virial.detach()
    return out


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


def build_graphs(frames, species: Sequence[str], cutoff: float, dtype: torch.dtype) -> List[Graph]:
    return [frame_to_graph(f, species, cutoff, dtype) for f in frames]
