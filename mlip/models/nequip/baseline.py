"""A fixed energy model under the network: Δ-learning (`model.baseline`).

Why: on mlearn Mo the NequIP-style model is more accurate than a fitted MTP on the 300 K solid but
generalises worse on the hot and liquid AIMD frames (`benchmarks/force_errors_by_contact.py`): it fits
those training frames as well as the MTP does, yet its test errors there are 25-35 % higher. A
549-parameter MTP is smooth where data are sparse. With the MTP as a frozen baseline the network only
learns the residual E − E_MTP, which is small and smooth, and the sum keeps the MTP's behaviour where
the network has nothing to add (the role of GAP's two-body baseline or of the ZBL term under NequIP).

    E_i = E_i^network + E_i^baseline,   E_i^baseline = the baseline model's per-atom energy

The baseline is an MTP, read once from its mlip export or an MLIP-2 `.mtp` file, and never trained:
its parameters have requires_grad False, so no optimiser or freeze group touches them. It uses the edges of the model's graph within its own
cutoff (which must not exceed the model's), so it needs no exchange in the layer split
(`layer_pair` returns it with the two-body term). In training its energies, forces and virials are
subtracted from the labels once (`mlip.train.datasets.subtract_baseline`) and the model's
`baseline_in_labels` flag leaves it out of forward: the same loss, without evaluating and
differentiating the MTP at every step. The model's config holds the baseline's family and
config (`{"family", "config", "source"}`) and the state dict its weights, so checkpoints and exports
rebuild it without the original file.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Union

import torch
from torch import Tensor, nn

from mlip.models.mtp import MTP

BASELINE_FAMILIES = ("mtp",)  # local models whose exports rebuild in Python (MTP.from_file)


def baseline_spec(spec: Union[str, os.PathLike, Mapping[str, Any]], species: List[str], cutoff: float) -> Dict[str, Any]:
    """The config entry of a baseline from a path (an mlip export of an MTP or an MLIP-2 `.mtp` file)
    or from the entry itself; checks family, species and cutoff. Returns {"family", "config", "source"}
    plus, when read from a file, "_weights" (its state dict, for `Baseline`; never stored in a config)."""
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        if not os.path.isfile(path):
            raise ValueError(f"model.baseline: {path}: no such file")
        try:
            model = MTP.from_file(path)
        except ValueError as exc:
            raise ValueError(f"model.baseline: {path}: not an MTP (an mlip MTP export or an MLIP-2 .mtp): "
                             f"{exc}") from None
        entry: Dict[str, Any] = {"family": "mtp", "config": model.config(), "source": os.path.abspath(path),
                                 "_weights": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    elif isinstance(spec, Mapping) and {"family", "config"} <= set(spec):
        entry = {"family": str(spec["family"]), "config": dict(spec["config"]), "source": str(spec.get("source", ""))}
    else:
        raise ValueError(f"model.baseline must be the path of an MTP export or .mtp file, got {spec!r}")
    where = f"model.baseline {entry['source']}".rstrip()
    if entry["family"] not in BASELINE_FAMILIES:
        raise ValueError(f"{where}: family '{entry['family']}' cannot be a baseline ({', '.join(BASELINE_FAMILIES)})")
    base_species = list(entry["config"].get("species") or [])
    if base_species != list(species):
        raise ValueError(f"{where}: its species {base_species} differ from the model's {list(species)} "
                         f"(same names, same order)")
    rc = float(entry["config"].get("cutoff", 0.0))
    if not 0.0 < rc <= float(cutoff) + 1e-12:
        raise ValueError(f"{where}: its cutoff {rc} Å exceeds the model's cutoff {cutoff} Å (the baseline "
                         f"reads the model's edges)")
    return entry


class Baseline(nn.Module):
    """The frozen baseline model; forward gives its energies of the first n_centres atoms."""

    def __init__(self, entry: Dict[str, Any], model_cutoff: float) -> None:
        super().__init__()
        self.model = MTP(**entry["config"])
        weights = entry.get("_weights")
        if weights is not None:
            self.model.load_state_dict(weights)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.cutoff = float(entry["config"]["cutoff"])
        # every edge of the model's graph is within the baseline's cutoff when the two are equal
        self.cut_edges = self.cutoff < float(model_cutoff)

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centres: int = -1) -> Tensor:
        """Baseline energies [n_centres] of the first n_centres atoms (-1: all) from their edges within
        its cutoff."""
        if n_centres < 0:
            n_centres = species.shape[0]
        if not self.cut_edges and n_centres == species.shape[0]:  # no edge to drop: no masked copy
            return self.model(species, edge_index, edge_vec)
        keep = edge_index[0] < n_centres
        if self.cut_edges:
            keep = keep & (torch.linalg.norm(edge_vec, dim=-1) < self.cutoff)
        e = self.model(species, edge_index[:, keep], edge_vec[keep])
        return e[:n_centres]


__all__ = ["Baseline", "baseline_spec", "BASELINE_FAMILIES"]
