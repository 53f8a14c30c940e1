"""The training-step restructurings of the NequIP model compute the same function as the plain
per-block formulas: the radial MLP with its activation constant folded into the next weights, the
gate's wide fast path, the residual as one prefix slice (1e-12 in float64, values and the force
loss's parameter gradients). benchmarks/bench_nequip_train.py compares whole models with a saved
git revision."""
import math

import torch

from e3nn import o3

from mlip.models.nequip import Gate, NequIP, RadialMLP, second_moment_constant


def test_radial_mlp_matches_plain_formula():
    torch.manual_seed(0)
    mlp = RadialMLP([8, 16, 16, 24], 3).double()
    x = torch.randn(50, 8, dtype=torch.float64)
    c = second_moment_constant("silu")
    w = list(mlp.weights)
    a = torch.nn.functional.silu(x @ w[0] / math.sqrt(8)) * c
    a = torch.nn.functional.silu(a @ w[1] / math.sqrt(16)) * c
    ref = torch.split(a @ w[2] / math.sqrt(16), 8, dim=1)
    for got, want in zip(mlp(x), ref):
        assert torch.allclose(got, want, rtol=1e-13, atol=1e-14)


def test_gate_fast_path_is_the_per_block_gate():
    torch.manual_seed(1)
    gate = Gate(o3.Irreps("4x0e"), 6, o3.Irreps("2x1o+4x2e"))
    assert gate.all_even
    x = torch.randn(7, gate.dim_in, dtype=torch.float64, requires_grad=True)
    fast = gate(x)
    gate.all_even = False  # the general per-block path (odd scalars take it)
    slow = gate(x)
    # to round-off, not bit for bit: the vectorised activation can differ in the last bit with the
    # tensor's memory layout (seen once in a fresh clone)
    assert torch.allclose(fast, slow, rtol=0, atol=1e-15)
    g = torch.randn_like(fast)
    (gf,) = torch.autograd.grad(fast, x, g)
    (gs,) = torch.autograd.grad(gate(x), x, g)
    assert torch.allclose(gf, gs, rtol=0, atol=1e-15)


def test_model_step_unchanged_by_residual_prefix_and_scripting():
    torch.manual_seed(2)
    model = NequIP(["A", "B"], cutoff=3.0, l_max=2, num_features=4, num_layers=3, num_basis=4,
                   radial_hidden=8, avg_num_neighbors=6.0).double()
    assert [b.residual_prefix for b in model.blocks] == [0, model.feature_widths[1], model.feature_widths[3]]
    pos = torch.rand(10, 3, dtype=torch.float64) * 4.0
    d = pos[None] - pos[:, None]
    i, j = torch.nonzero((d.norm(dim=-1) < 3.0) & ~torch.eye(10, dtype=torch.bool), as_tuple=True)
    ei, vec = torch.stack([i, j]), d[i, j]
    species = torch.arange(10) % 2

    def loss_and_grads(m):
        v = vec.clone().requires_grad_(True)
        e = m(species, ei, v).sum()
        (g,) = torch.autograd.grad(e, v, create_graph=True)
        loss = e ** 2 + (g ** 2).sum()
        return loss, torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)

    loss, grads = loss_and_grads(model)
    for blk in model.blocks:
        blk.residual_prefix = 0  # the general slices-and-cat residual
    loss_ref, grads_ref = loss_and_grads(model)
    assert abs(float(loss - loss_ref)) <= 1e-12 * abs(float(loss_ref))
    for a, b in zip(grads, grads_ref):
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    scripted = torch.jit.script(model)
    assert torch.allclose(scripted(species, ei, vec), model(species, ei, vec), rtol=1e-12, atol=1e-14)
