"""The one model contract shared by every family (see docs/CONTRACT.md).

A model maps species + edges (i, j, r_ij) to per-atom energies. Everything else — forces, virials,
per-atom virials, periodic images, LAMMPS ghost atoms — is derived from ∂E/∂r_ij by the same code
(`mlip.export.edge_forces_virials`), so a new family only has to implement `forward`.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import Tensor, nn


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
        lookup = {s: k for k, s in enumerate(self.species)}
        out = []
        for a, s in enumerate(symbols):
            if s not in lookup:
                raise ValueError(f"atom {a}: element '{s}' is not in the model's species {self.species}")
            out.append(lookup[s])
        return torch.tensor(out, dtype=torch.long)
