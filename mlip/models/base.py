"""The one model contract shared by every family (see docs/CONTRACT.md), and the derivative code
every caller of a model shares.

A model maps species + edges (i, j, r_ij) to per-atom energies. Everything else — forces, virials,
per-atom virials, periodic images, LAMMPS ghost atoms — is derived from ∂E/∂r_ij by one function,
`forces_virials_from_edges`, which training (`predict`, on batches) and the TorchScript export
(`mlip.export`) both call, so they cannot disagree about signs or conventions and a new family only
has to implement `forward`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from mlip.graph import Batch, species_indices


def forces_virials_from_edges(
    edge_grad: Tensor, edge_index: Tensor, edge_vec: Tensor, n_atoms: int
) -> Tuple[Tensor, Tensor]:
    """F_i += g_e, F_j -= g_e; per-edge virial −r_e ⊗ g_e (see docs/CONTRACT.md). TorchScript-able."""
    forces = torch.zeros((n_atoms, 3), dtype=edge_grad.dtype, device=edge_grad.device)
    forces.index_add_(0, edge_index[0], edge_grad)
    forces.index_add_(0, edge_index[1], -edge_grad)
    edge_virial = -(edge_vec.unsqueeze(2) * edge_grad.unsqueeze(1))
    return forces, edge_virial


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of a model (its first floating parameter or buffer; float64 if none): the dtype
    its input edge vectors must have."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dtype.is_floating_point:
            return t.dtype
    return torch.float64


def predict(model: nn.Module, batch: Batch, create_graph: bool = False, need_virial: bool = True
            ) -> Dict[str, Tensor]:
    """Energies per frame, forces per atom and virials per frame of a batch (differentiable if asked)."""
    vec = batch.edge_vec.detach().requires_grad_(True)
    atom_e = model(batch.species, batch.edge_index, vec)
    energy = torch.zeros(batch.n_frames, dtype=atom_e.dtype, device=atom_e.device).index_add_(0, batch.node_frame, atom_e)
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
        virial = torch.zeros(batch.n_frames, 9, dtype=atom_e.dtype, device=atom_e.device).index_add_(
            0, batch.edge_frame, edge_virial.reshape(-1, 9)
        ).reshape(-1, 3, 3)
        out["virial"] = virial if create_graph else virial.detach()
    return out


class AtomicModel(nn.Module):
    """Base class of all families.

    Subclasses set `family`, implement `forward` and `config()` (the constructor keyword arguments,
    JSON-serialisable, so that `build_model(family, config)` rebuilds an identical module for
    checkpoints). `interaction_range` is `cutoff` for local models and `n_layers * cutoff` for
    message passing: the LAMMPS pair_style builds its ghost shell that deep.
    """

    family: str = "base"

    def __init__(self, species: List[str], cutoff: float) -> None:
        super().__init__()
        if len(species) == 0:
            raise ValueError("a model needs at least one species")
        if len(set(species)) != len(species):
            raise ValueError(f"duplicate species in {species}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        self.species: List[str] = list(species)
        self.cutoff: float = float(cutoff)
        self.interaction_range: float = float(cutoff)

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def config(self) -> Dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def extra_metadata(self) -> Dict[str, Any]:
        """Family-specific data written into the export's metadata JSON."""
        return {}

    def set_energy_bias(self, bias: Tensor) -> None:
        """Per-species energy shift (eV), fitted by least squares on the training set."""
        raise NotImplementedError

    def species_index(self, symbols: List[str]) -> Tensor:
        """Model species indices of element symbols (`mlip.graph.species_indices`)."""
        return torch.from_numpy(species_indices(symbols, self.species))
