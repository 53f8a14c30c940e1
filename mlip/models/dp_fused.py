"""Fused training path of the Deep Potential `se_e2_a` embedding nets (`DeepPotSeA(fused=True)`).

Why: the force loss differentiates forces = −∂E/∂r once more, so plain autograd records the embedding
nets' backward in the first pass (create_graph) and runs the backward of that backward in the second;
both are long chains of element-wise passes over [edges × width] tensors. The op
`torch.ops.mlip.dp_embedding` (cpp/dp_embedding_op.cpp, library `libmlip_ops.so` next to
`libmlip_engine.so`) computes G = net(s̃) and G′ = dG/ds̃ in one forward pass: the first pass then
reduces to ∂E/∂s̃ = Σ_k ∂E/∂G_k G′_k, the second to one analytic reverse sweep. Same function, same
parameters, float32 and float64, CPU only; gradients equal the reference to rounding
(tests/test_dp_fused.py). TorchScript never sees this path (`DeepPotSeA.descriptor` takes it only in
eager mode), so exports and the C++ engine need neither the op nor the library.
"""
from __future__ import annotations

import math
import os
import sys
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

LIBRARY_NAME = "libmlip_ops.so"
_state: dict = {"loaded": None, "why": ""}


def library_path() -> str:
    """Where the build installs libmlip_ops.so: beside libmlip_engine.so (mlip/lib/)."""
    from mlip import _core

    return os.path.join(os.path.dirname(_core.engine_library_path()), LIBRARY_NAME)


def available() -> bool:
    """True once the op is registered (loads the library on first use; False if it is not built)."""
    if _state["loaded"] is None:
        try:
            if not hasattr(torch.ops.mlip, "dp_embedding"):
                torch.ops.load_library(library_path())
            _state["loaded"] = True
        except Exception as exc:  # a build without the op: the reference path runs instead
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _state["loaded"], _state["why"] = False, first
    return bool(_state["loaded"])


def warn_unavailable() -> None:
    """One stderr line (once per process) when fused training was asked for but cannot run."""
    if _state.get("warned"):
        return
    _state["warned"] = True
    print(f"warning: fused DP embedding op unavailable ({_state['why']}); training on the reference path",
          file=sys.stderr, flush=True)


def fusable(net: nn.Module) -> bool:
    """Whether `net` (a `ResMLP` embedding net) has the shape the op computes: scalar input, tanh
    layers with identity/doubling skips and no resnet time step, no output layer."""
    layers = getattr(net, "layers", None)
    if layers is None or len(layers) == 0 or getattr(net, "has_out", True):
        return False
    if layers[0].linear.in_features != 1:
        return False
    return not any(bool(layer.use_dt) for layer in layers)


def net_parameters(net: nn.Module) -> Tuple[List[Tensor], List[Tensor]]:
    """(weights [n_out, n_in], biases [n_out]) of the layers of an embedding net, in order."""
    return [layer.linear.weight for layer in net.layers], [layer.linear.bias for layer in net.layers]


def embedding_with_derivative(net: nn.Module, s: Tensor) -> Tuple[Tensor, Tensor]:
    """(G, dG/ds) of a fusable embedding net for s [E]: two [E, M1] tensors, differentiable."""
    weights, biases = net_parameters(net)
    g, gp = torch.ops.mlip.dp_embedding(s, weights, biases)
    return g, gp


def tabulated_embedding(net: nn.Module, s: Tensor, step: float) -> Tensor:
    """G = net(s) for s [E] → [E, M1] through a grid: the net (with dG/ds) runs only on the nodes
    x0 + j·step that cover this batch's s, and every edge takes the cubic Hermite interpolant between
    its two nodes (torch.ops.mlip.dp_hermite, cpp/dp_hermite_op.cpp). The grid is a constant of the
    step (no gradient through its placement); gradients reach the weights through the node values."""
    with torch.no_grad():
        lo, hi = float(s.min()), float(s.max())
    x0 = math.floor(lo / step) * step
    n = max(2, int(math.floor((hi - x0) / step)) + 2)
    # float64 nodes whatever the model's dtype: G' at an edge comes from node differences over `step`,
    # which float32 would round to ~1e-5 relative; the grid is only hundreds of rows
    nodes = x0 + step * torch.arange(n, dtype=torch.float64, device=s.device)
    weights, biases = net_parameters(net)
    g_nodes, gp_nodes = torch.ops.mlip.dp_embedding(nodes, [w.double() for w in weights], [b.double() for b in biases])
    g, _ = torch.ops.mlip.dp_hermite(s, g_nodes, gp_nodes, x0, step)
    return g


def fused_embedding(net: nn.Module, x: Tensor, fused: bool, step: Optional[float] = None) -> Tensor:
    """net(x) for x [..., 1] → [..., M1]: through the fused op when asked for, useful (autograd on,
    CPU) and possible, else the module itself (the reference). `step`: the node spacing of the
    tabulated path (`tabulated_embedding`), None for the net on every row."""
    if not fused or not torch.is_grad_enabled() or x.device.type != "cpu" or x.numel() == 0 or not fusable(net):
        return net(x)
    if not available():
        warn_unavailable()
        return net(x)
    if step:
        g = tabulated_embedding(net, x.reshape(-1), step)
    else:
        g, _ = embedding_with_derivative(net, x.reshape(-1))
    return g.reshape(x.shape[:-1] + (g.shape[1],))


def check_step_option(value: Optional[object]) -> Optional[float]:
    """The `fused_step` model option: None (off) or a node spacing in (0, 0.1]; one clear line otherwise.
    Above 0.1 the interpolant's force error would exceed float32 rounding on typical nets."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= 0.1:
        raise ValueError(f"model.fused_step must be null or a node spacing in (0, 0.1], got {value!r}")
    return float(value)


def check_fused_option(value: Optional[object]) -> bool:
    """The `fused` model option as a bool; one clear line for anything else."""
    if not isinstance(value, bool):
        raise ValueError(f"model.fused must be true or false, got {value!r}")
    return value
