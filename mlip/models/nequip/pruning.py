"""Pruned evaluation of the NequIP model on a LAMMPS-style graph: locals first, then ghosts.

A message-passing model sees `num_layers` hops deep, so LAMMPS hands it a ghost shell
num_layers × cutoff wide. Most of that shell only matters indirectly: block k (0-based) only needs
to update atoms within num_layers - 1 - k edges of a local atom, because nothing farther can reach
a local energy in the layers that remain. `prune_to_local` reorders the atoms by that hop distance
(locals keep their places), so that every block updates a prefix of them, and drops the edges into
atoms no block updates. The local energies and their gradients are exactly those of the full
evaluation; only the work shrinks. (Pruning of irreps, the other kind, is in `irreps.py`.)
"""
from typing import List, Tuple

import torch
from torch import Tensor


def hop_distance(n_nodes: int, edge_index: Tensor, n_local: int, n_layers: int) -> Tensor:
    """Graph distance [n_nodes] (in edges, capped at n_layers) of every atom from the first n_local."""
    dist = torch.full((n_nodes,), n_layers, dtype=torch.long, device=edge_index.device)
    dist[:n_local] = 0
    dst = edge_index[0]
    src = edge_index[1]
    for k in range(1, n_layers):
        front = dist.index_select(0, dst) == k - 1
        reached = torch.zeros(n_nodes, dtype=torch.bool, device=dist.device)
        reached[src[front]] = True
        dist = torch.where(reached & (dist > k), torch.full_like(dist, k), dist)
    return dist


def prune_to_local(
    species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int, n_layers: int
) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
    """(species [N], edge_index [2, E'], edge_vec [E', 3], n_keep) of the reordered, pruned graph.

    n_keep[k] = atoms updated by block k, a prefix of the reordered atoms; n_keep[-1] = n_local.
    Without pruning (n_local < 0 or >= N) the graph is returned as given with n_keep = [N] * n_layers.
    The kept edges stay sorted by centre when they were."""
    n_nodes = species.shape[0]
    n_keep: List[int] = [n_nodes] * n_layers
    if 0 <= n_local < n_nodes:  # one branch, no early return: the scripted graph stays as it was
        dist = hop_distance(n_nodes, edge_index, n_local, n_layers)
        _, order = torch.sort(dist, stable=True)  # locals keep their places
        inv = torch.empty_like(order)
        inv[order] = torch.arange(n_nodes, device=order.device)
        for k in range(n_layers):
            n_keep[k] = int((dist <= n_layers - 1 - k).sum())
        species = species.index_select(0, order)
        edge_index = inv[edge_index]
        keep = edge_index[0] < n_keep[0]  # edges into atoms that block 0 updates
        edge_index = edge_index[:, keep]
        edge_vec = edge_vec[keep]
        if bool((edge_index[0, 1:] < edge_index[0, :-1]).any()):
            perm = torch.sort(edge_index[0], stable=True)[1]
            edge_index = edge_index[:, perm]
            edge_vec = edge_vec[perm]
    return species, edge_index, edge_vec, n_keep


__all__ = ["hop_distance", "prune_to_local"]
