"""The NequIP-style readout as a linear model: design rows for an exact least-squares solve of its last layer.

The atomic energy is E_i = scale_{t_i} (φ_i · w) s2 + shift_{t_i}, with φ_i [head_hidden] the last
invariant features (`NequIP.readout_features`). For fixed other weights the energy, the forces and the
virials are linear in ξ = (w = head_w2, shift = energy_shift). That is the same structure as the MTP's
species and moment coefficients, so the family-agnostic solver `mlip.train.full_batch.solve_linear`
can set ξ to the exact optimum of the training loss (`mlip.train.refit`): a mini-batch optimiser with a
noisy gradient and an EMA leaves the last layer short of it, most visibly in the energies, which the
force-dominated loss constrains least.

The force and virial rows need ∂(Σ_i φ_ik)/∂r_e for every column k: one backward pass through the
network per column (head_hidden of them, 16 by default), on a graph kept for all of them.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from mlip.models.base import forces_virials_from_edges


def linear_parameters() -> List[str]:
    """Names of the linear parameters in column order: head_w2 [head_hidden, 1], then energy_shift
    [n_species] (a buffer: the trainer refits it too, see `Trainer._track_energy_offset`)."""
    return ["head_w2", "energy_shift"]


def linear_design(model, species: Tensor, edge_index: Tensor, edge_vec: Tensor, node_frame: Tensor,
                  n_frames: int, need_virial: bool = False) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """(E [n_frames, P], F [N, 3, P], V [n_frames, 3, 3, P] or None) with P = head_hidden + n_species:
    energies = E ξ, forces = F ξ, virials = V ξ, in the sign conventions of `mlip.models.base.predict`."""
    if model.pair.enabled:
        raise ValueError("training.readout_refit does not support model.pair_basis > 0 (the pair energy is not "
                         "among the refitted columns); set one of them off")
    if model.baseline is not None:
        raise ValueError("training.readout_refit does not support model.baseline (the baseline energy is not "
                         "among the refitted columns); set one of them off")
    n_atoms = int(species.shape[0])
    vec = edge_vec.detach().requires_grad_(True)
    h = model._run(species, edge_index, vec, False)[-1]
    # column k of atom i: ∂E_i/∂w_k = scale_{t_i} s2 φ_ik
    phi = model.readout_features(h) * (model.energy_scale.index_select(0, species) * model.head_s2).unsqueeze(1)
    hh, ns = int(phi.shape[1]), int(model.n_species)
    P = hh + ns
    dtype = phi.dtype
    onehot = torch.nn.functional.one_hot(species, ns).to(dtype)
    per_frame = torch.zeros(n_frames, hh, dtype=dtype).index_add_(0, node_frame, phi.detach())
    counts = torch.zeros(n_frames, ns, dtype=dtype).index_add_(0, node_frame, onehot)
    E = torch.cat([per_frame, counts], 1)
    F = torch.zeros(n_atoms, 3, P, dtype=dtype)
    V = torch.zeros(n_frames, 3, 3, P, dtype=dtype) if need_virial else None
    edge_frame = node_frame.index_select(0, edge_index[0])
    total = phi.sum(0)  # the frames are disjoint graphs: one backward per column serves all of them
    for k in range(hh):
        (g,) = torch.autograd.grad([total[k]], [vec], retain_graph=k + 1 < hh, allow_unused=True)
        if g is None:
            continue
        f, ev = forces_virials_from_edges(g, edge_index, vec.detach(), n_atoms)
        F[:, :, k] = f
        if V is not None:
            V[:, :, :, k] = torch.zeros(n_frames, 9, dtype=dtype).index_add_(0, edge_frame, ev.reshape(-1, 9)).reshape(-1, 3, 3)
    return E, F, V
