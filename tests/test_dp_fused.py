"""The fused Deep Potential embedding op (cpp/dp_embedding_op.cpp, mlip/models/dp_fused.py): exact
first and second derivatives, a training step equal to the reference autograd path, exports untouched."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import random_structure
from mlip.models.deepmd import DeepPotSeA, ResMLP
from mlip.models.dp_fused import available, embedding_with_derivative, fused_embedding, net_parameters

# kinds of layers: 1→3 plain, 3→6 doubling, 6→6 identity, 6→5 plain
DIMS = [3, 6, 6, 5]


def test_op_library_is_built():
    assert available(), "libmlip_ops.so is not built or not loadable: re-run scripts/install.sh"


def _net(dtype=torch.float64, dims=DIMS, seed=0):
    torch.manual_seed(seed)
    return ResMLP(1, dims).to(dtype)


def _reference_with_derivative(net, s):
    """(G, dG/ds) of the module itself by autograd, one column at a time."""
    s = s.detach().requires_grad_(True)
    g = net(s[:, None])
    cols = [torch.autograd.grad(g[:, k].sum(), s, retain_graph=True)[0] for k in range(g.shape[1])]
    return g.detach(), torch.stack(cols, 1)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
def test_values_and_derivative_match_the_module(dtype, tol):
    net = _net(dtype)
    s = torch.linspace(-2.0, 3.0, 41, dtype=dtype)
    g, gp = embedding_with_derivative(net, s)
    g_ref, gp_ref = _reference_with_derivative(net, s)
    assert (g - g_ref).abs().max() <= tol * g_ref.abs().max()
    assert (gp - gp_ref).abs().max() <= tol * gp_ref.abs().max()


def test_gradcheck_and_gradgradcheck():
    net = _net()
    weights = [layer.linear.weight.detach().clone().requires_grad_(True) for layer in net.layers]
    biases = [layer.linear.bias.detach().clone().requires_grad_(True) for layer in net.layers]
    s = torch.linspace(-1.5, 2.0, 6, dtype=torch.float64).requires_grad_(True)
    n = len(weights)

    def both(s, *p):  # (G, G'): first order analytic, second order through the ATen fallback
        return torch.ops.mlip.dp_embedding(s, list(p[:n]), list(p[n:]))

    def value(s, *p):  # G alone: the training's use (its backward reads the output G')
        return both(s, *p)[0]

    args = (s, *weights, *biases)
    assert torch.autograd.gradcheck(both, args)
    assert torch.autograd.gradgradcheck(both, args)
    assert torch.autograd.gradgradcheck(value, args)


def test_force_path_second_order_matches_autograd():
    """d/dθ of Σ (∂E/∂s)² with E = Σ c·tanh(G): the force loss's structure, to 1e-12 (float64)."""
    net = _net()
    s = torch.linspace(-1.0, 2.5, 50, dtype=torch.float64)
    c = torch.randn(50, DIMS[-1], dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def grads(fused):
        x = s.clone().requires_grad_(True)
        g = embedding_with_derivative(net, x)[0] if fused else net(x[:, None])
        e = (torch.tanh(g) * c).sum()
        (gx,) = torch.autograd.grad(e, x, create_graph=True)
        loss = 0.1 * e + (gx * gx).sum()
        return [t.detach() for t in (loss, gx, *torch.autograd.grad(loss, [*sum(net_parameters(net), []), x]))]

    for a, b in zip(grads(True), grads(False)):
        assert (a - b).abs().max() <= 1e-12 * max(b.abs().max(), 1.0)


def _batch(model, dtype, seeds=(1, 2)):
    """Two labelled random H/O frames (random labels: only the gradients are compared)."""
    from mlip.data.frame import Frame
    from mlip.graph import collate, frame_to_graph

    graphs = []
    for seed in seeds:
        atoms = random_structure(seed, 12, cell_scale=5.5)
        gen = torch.Generator().manual_seed(seed)
        frame = Frame(atoms.get_chemical_symbols(), atoms.get_positions(), atoms.cell[:], atoms.pbc,
                      energy=-3.0 * len(atoms),
                      forces=torch.randn(len(atoms), 3, generator=gen, dtype=torch.float64).numpy(),
                      virial=torch.randn(3, 3, generator=gen, dtype=torch.float64).numpy())
        graphs.append(frame_to_graph(frame, model.species, model.cutoff, dtype))
    return collate(graphs)


def _small_dp(type_one_side, fused, dtype=torch.float64):
    m = DeepPotSeA(["H", "O"], rcut=3.5, rcut_smth=1.0, sel=[20, 20], neuron=[4, 8, 16], axis_neuron=4,
                   fitting_neuron=[16, 16], type_one_side=type_one_side, seed=7, fused=fused).to(dtype)
    with torch.no_grad():
        m.s_avg.fill_(0.3)
        m.s_std.fill_(0.2)
        m.r_std.fill_(0.4)
    return m


@pytest.mark.parametrize("type_one_side", [True, False])
def test_training_step_equals_reference(type_one_side):
    """Loss, predictions and every parameter gradient of one float64 training step (energy, force and
    virial loss) agree with the reference path to 1e-12 relative."""
    from mlip.models.base import predict
    from mlip.train.loss import loss_terms, total_loss

    out = {}
    for fused in (True, False):
        model = _small_dp(type_one_side, fused)
        batch = _batch(model, torch.float64)
        pred = predict(model, batch, create_graph=True, need_virial=True)
        loss = total_loss(loss_terms(pred, batch), batch, 0.5, 100.0, 0.1)
        loss.backward()
        out[fused] = {"loss": loss.detach(), **{k: v.detach() for k, v in pred.items()},
                      **{n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}
    assert out[True].keys() == out[False].keys()
    assert any(k.startswith("embedding.") for k in out[False])
    worst = 0.0
    for key, ref in out[False].items():
        err = float((out[True][key] - ref).abs().max() / max(float(ref.abs().max()), 1e-30))
        worst = max(worst, err)
        assert err <= 1e-12, (key, err)
    print(f"\nfused vs reference training step (type_one_side={type_one_side}): max rel diff {worst:.1e}")


def test_eval_paths_and_float32():
    """No-grad evaluation uses the module; float32 training agrees with the reference to rounding."""
    net = _net(torch.float32)
    x = torch.rand(3, 5, 1)
    with torch.no_grad():
        assert torch.equal(fused_embedding(net, x, True), net(x))
    g = fused_embedding(net, x.requires_grad_(True), True)
    assert g.shape == (3, 5, DIMS[-1]) and torch.allclose(g, net(x), rtol=1e-5, atol=1e-6)


def test_export_is_unchanged_and_runs_without_the_op(tmp_path):
    """The scripted code of a fused model is the reference model's; the export has no `fused` attribute
    and loads and runs in a process that never loaded libmlip_ops.so."""
    from mlip.export import export_model

    fused, ref = _small_dp(True, True), _small_dp(True, False)
    assert torch.jit.script(fused).code == torch.jit.script(ref).code
    assert torch.jit.script(fused).descriptor.code == torch.jit.script(ref).descriptor.code
    path = str(tmp_path / "m.pt")
    export_model(fused, path)
    code = (f"import torch, json\nm = torch.jit.load({path!r})\n"
            "assert not hasattr(m.model, 'fused')\n"
            "sp = torch.tensor([0, 1, 0]); ei = torch.tensor([[0, 1, 0, 2], [1, 0, 2, 0]])\n"
            "v = torch.tensor([[1.0, 0.2, 0.1], [-1.0, -0.2, -0.1], [0.3, 1.1, 0.0], [-0.3, -1.1, 0.0]], dtype=torch.float64)\n"
            "e, f, w, _ = m(sp, ei, v, 3, False)\n"
            "print(json.dumps([hasattr(torch.ops.mlip, 'dp_embedding'), float(e.sum())]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    loaded, energy = json.loads(res.stdout.strip().splitlines()[-1])
    assert not loaded and energy == energy
    from mlip import _core

    assert _core.Engine(path, num_threads=1).backend == "native-deepmd"  # verified against the TorchScript


def test_fused_option_is_checked():
    with pytest.raises(ValueError, match="model.fused must be true or false, got 'yes'"):
        DeepPotSeA(["H"], rcut=3.0, fused="yes")
    assert DeepPotSeA(["H"], rcut=3.0).config()["fused"] is True


def test_bad_op_input_is_one_clear_error():
    net = _net()
    w = [layer.linear.weight for layer in net.layers]
    b = [layer.linear.bias for layer in net.layers]
    with pytest.raises(RuntimeError, match="s must be 1-D"):
        torch.ops.mlip.dp_embedding(torch.zeros(3, 1, dtype=torch.float64), w, b)
    with pytest.raises(RuntimeError, match="must have the dtype of s"):
        torch.ops.mlip.dp_embedding(torch.zeros(3), w, b)
    with pytest.raises(RuntimeError, match="as many biases as weights"):
        torch.ops.mlip.dp_embedding(torch.zeros(3, dtype=torch.float64), w, b[:-1])


# ---------------------------------------------------------------- tabulated path (fused_step, dp_hermite)

def _nodes(seed=0, n=7, m=4):
    assert available()  # loads libmlip_ops.so (torch.ops.mlip.*)
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, m, dtype=torch.float64, generator=gen).requires_grad_(True),
            torch.randn(n, m, dtype=torch.float64, generator=gen).requires_grad_(True))


def test_hermite_interpolates_and_its_slope_is_the_derivative():
    """At the nodes the op returns the node values and slopes; between them G' is dG/ds (finite
    differences), and a cubic is reproduced exactly."""
    assert available()
    x0, h = -0.5, 0.25
    nodes = x0 + h * torch.arange(7, dtype=torch.float64)
    cols = torch.tensor([[1.0, -2.0]], dtype=torch.float64)

    def cubic(x):
        return (0.3 * x**3 - x**2 + 0.5 * x - 2.0)[:, None] * cols

    def dcubic(x):
        return (0.9 * x**2 - 2 * x + 0.5)[:, None] * cols

    s = torch.tensor([-0.5, -0.31, 0.0, 0.37, 0.99, 1.0], dtype=torch.float64)
    g, gp = torch.ops.mlip.dp_hermite(s, cubic(nodes), dcubic(nodes), x0, h)
    assert torch.allclose(g, cubic(s), atol=1e-13) and torch.allclose(gp, dcubic(s), atol=1e-12)
    gn, gpn = _nodes()
    # inside intervals (the interpolant is C¹, its second derivative jumps at the nodes)
    s = x0 + h * (torch.arange(6, dtype=torch.float64) + torch.tensor([0.13, 0.37, 0.5, 0.71, 0.88, 0.05]))
    g, gp = torch.ops.mlip.dp_hermite(s, gn, gpn, x0, h)
    eps = 1e-6
    gplus, _ = torch.ops.mlip.dp_hermite(s + eps, gn, gpn, x0, h)
    gminus, _ = torch.ops.mlip.dp_hermite(s - eps, gn, gpn, x0, h)
    assert torch.allclose(gp, (gplus - gminus) / (2 * eps), atol=1e-7)


def test_hermite_gradcheck_and_gradgradcheck():
    gn, gpn = _nodes()
    s = torch.tensor([-0.4, -0.1, 0.2, 0.55, 0.8, 0.93], dtype=torch.float64).requires_grad_(True)

    def both(s, gn, gpn):
        return torch.ops.mlip.dp_hermite(s, gn, gpn, -0.5, 0.25)

    def value(s, gn, gpn):  # G alone, as training uses it (its backward reads the output G')
        return both(s, gn, gpn)[0]

    assert torch.autograd.gradcheck(both, (s, gn, gpn))
    assert torch.autograd.gradgradcheck(both, (s, gn, gpn))
    assert torch.autograd.gradgradcheck(value, (s, gn, gpn))


def _water_like_step(step, dtype, type_one_side=True):
    """Loss, predictions and parameter gradients of one training step of the small DP (energy, force and
    virial loss) with the tabulated path at `step` (None: the fused net on every edge)."""
    from mlip.models.base import predict
    from mlip.train.loss import loss_terms, total_loss

    model = _small_dp(type_one_side, True)
    model.fused_step = step
    model = model.to(dtype)
    batch = _batch(model, dtype)
    pred = predict(model, batch, create_graph=True, need_virial=True)
    loss = total_loss(loss_terms(pred, batch), batch, 0.5, 100.0, 0.1)
    loss.backward()
    return {"loss": loss.detach().double(), **{k: v.detach().double() for k, v in pred.items()},
            **{n: p.grad.double() for n, p in model.named_parameters() if p.grad is not None}}


@pytest.mark.parametrize("type_one_side", [True, False])
def test_tabulated_training_step_matches_the_net(type_one_side):
    """float64: the tabulated step differs from the net's by the interpolation error only (≤ 5e-8
    relative at step 0.01, shrinking as step³–step⁴); float32: by no more than float32 rounding of the
    net's own step (measured against float64)."""
    ref = _water_like_step(None, torch.float64, type_one_side)
    worst = {}
    for step in (0.02, 0.01):
        tab = _water_like_step(step, torch.float64, type_one_side)
        assert tab.keys() == ref.keys()
        worst[step] = max(float((tab[k] - v).abs().max() / max(float(v.abs().max()), 1e-30)) for k, v in ref.items())
    assert worst[0.01] <= 5e-8 and worst[0.01] < worst[0.02] / 4, worst  # truncation: ∝ step³ (G′) to step⁴ (G)
    f32_net = _water_like_step(None, torch.float32, type_one_side)
    f32_tab = _water_like_step(0.02, torch.float32, type_one_side)
    for key in ("forces", "energy"):
        scale = float(ref[key].abs().max())
        err_net = float((f32_net[key] - ref[key]).abs().max()) / scale
        err_tab = float((f32_tab[key] - ref[key]).abs().max()) / scale
        assert err_tab <= max(3 * err_net, 1e-6), (key, err_tab, err_net)


def test_fused_step_option_and_export(tmp_path):
    """The option is checked, kept in the config (so a resumed run keeps it), and the scripted model
    is the plain one (exports run the net)."""
    with pytest.raises(ValueError, match=r"model.fused_step must be null or a node spacing in \(0, 0.1\], got 0.5"):
        DeepPotSeA(["H"], rcut=3.0, fused_step=0.5)
    with pytest.raises(ValueError, match="got 'x'"):
        DeepPotSeA(["H"], rcut=3.0, fused_step="x")
    m = DeepPotSeA(["H", "O"], rcut=3.5, sel=[20, 20], neuron=[4, 8, 16], axis_neuron=4, fitting_neuron=[16, 16],
                   type_one_side=True, fused_step=0.02)
    assert m.config()["fused_step"] == 0.02 and "fused_step" not in _small_dp(True, True).config()
    assert DeepPotSeA(**m.config()).fused_step == 0.02
    assert torch.jit.script(m).descriptor.code == torch.jit.script(_small_dp(True, True)).descriptor.code


def test_bad_hermite_input_is_one_clear_error():
    gn, gpn = (t.detach() for t in _nodes())
    with pytest.raises(RuntimeError, match="nodes must be float64"):
        torch.ops.mlip.dp_hermite(torch.zeros(3), gn.float(), gpn.float(), 0.0, 0.1)
    with pytest.raises(RuntimeError, match="node spacing h must be positive"):
        torch.ops.mlip.dp_hermite(torch.zeros(3, dtype=torch.float64), gn, gpn, 0.0, 0.0)
    with pytest.raises(RuntimeError, match="must match node values"):
        torch.ops.mlip.dp_hermite(torch.zeros(3, dtype=torch.float64), gn, gpn[:, :2], 0.0, 0.1)
