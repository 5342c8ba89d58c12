"""The engine as torch custom operators (``qaa::features``, ``qaa::features_backward``): opcheck, values and
gradients against a plain-torch statevector simulation, the once-differentiable rule, tracing."""
import pytest
import torch

import qaa
from qaa.engine import ops


def torch_reference(x: torch.Tensor, theta: torch.Tensor, n: int, n_layers: int, entangle: bool):
    """``<Z_q>`` of ``ry_cnot_ring`` (``entangle``) or ``ry_layers`` in plain torch (float64, autograd), with
    PennyLane's conventions: wire 0 is the most significant bit, ``RY(t) = [[c, -s], [s, c]]`` of ``t/2``,
    the input zero-padded to ``2**n`` and normalised."""
    B, d = x.shape
    pad = torch.nn.functional.pad(x, (0, 2 ** n - d))
    psi = (pad / pad.norm(dim=1, keepdim=True)).reshape(B, *([2] * n))
    for layer in range(n_layers):
        for q in range(n):
            t = theta[layer * n + q] / 2
            rot = torch.stack([torch.stack([t.cos(), -t.sin()]), torch.stack([t.sin(), t.cos()])])
            psi = torch.movedim(torch.movedim(psi, q + 1, -1) @ rot.T, -1, q + 1)
        if entangle:
            for q in range(n):
                target = (q + 1) % n
                p = psi.movedim((q + 1, target + 1), (1, 2))
                p = torch.stack([p[:, 0], p[:, 1].flip(1)], dim=1)
                psi = p.movedim((1, 2), (q + 1, target + 1))
    probs = psi.square()
    z = []
    for q in range(n):
        marg = probs.movedim(q + 1, 1).reshape(B, 2, -1).sum(-1)
        z.append(marg[:, 0] - marg[:, 1])
    return torch.stack(z, dim=1)


@pytest.mark.parametrize("ansatz", ["ry_cnot_ring", "ry_layers"])
def test_features_op_matches_a_plain_torch_simulation(ansatz):
    g = torch.Generator().manual_seed(0)
    n, L = 3, 2
    x = torch.randn(5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    theta = torch.randn(L * n, dtype=torch.float64, generator=g, requires_grad=True)
    feats, norms = qaa.engine.qaa_features_op(x, theta, ansatz, n, L, "z")
    x_ref = x.detach().clone().requires_grad_(True)
    theta_ref = theta.detach().clone().requires_grad_(True)
    ref = torch_reference(x_ref, theta_ref, n, L, entangle=(ansatz == "ry_cnot_ring"))
    torch.testing.assert_close(feats, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(norms, x.detach().norm(dim=1), rtol=0, atol=1e-12)
    w = torch.randn(5, n, dtype=torch.float64, generator=g)
    (feats * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(theta.grad, theta_ref.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ansatz,kind", [("ry_cnot_ring", "z"), ("ry_rz_ring_ry", "probs"), ("ry_layers", "z")])
def test_opcheck_features(ansatz, kind, dtype):
    n, L = 3, 2
    circuit = qaa.build_circuit(ansatz, n, L)
    g = torch.Generator().manual_seed(1)
    for dense_ok in (False, True):
        x = torch.randn(4, 7, dtype=dtype, generator=g).requires_grad_(not dense_ok)
        theta = torch.randn(circuit.n_params, dtype=dtype, generator=g).requires_grad_(not dense_ok)
        torch.library.opcheck(torch.ops.qaa.features.default, (x, theta, ansatz, n, L, kind, dense_ok))


@pytest.mark.parametrize("with_norm_grad", [False, True])
def test_opcheck_features_backward(with_norm_grad):
    n, L = 3, 2
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 8, dtype=torch.float64, generator=g)
    theta = torch.randn(n * L, dtype=torch.float64, generator=g)
    gf = torch.randn(4, n, dtype=torch.float64, generator=g)
    gn = torch.randn(4, dtype=torch.float64, generator=g) if with_norm_grad else None
    # Inputs that do not require grad: the backward op has no derivative of its own (see the next test).
    torch.library.opcheck(torch.ops.qaa.features_backward.default, (x, theta, gf, gn, "ry_cnot_ring", n, L, "z"))


def test_backward_op_equals_the_fused_vjp():
    n, L = 3, 2
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 8, dtype=torch.float64, generator=g)
    theta = torch.randn(n * L, dtype=torch.float64, generator=g)
    gf = torch.randn(4, n, dtype=torch.float64, generator=g)
    gn = torch.randn(4, dtype=torch.float64, generator=g)
    gt, gx = torch.ops.qaa.features_backward(x, theta, gf, gn, "ry_cnot_ring", n, L, "z")
    xr, tr = x.clone().requires_grad_(True), theta.clone().requires_grad_(True)
    ref = torch_reference(xr, tr, n, L, entangle=True)
    torch.autograd.backward([ref, xr.norm(dim=1)], [gf, gn])
    torch.testing.assert_close(gt, tr.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx, xr.grad, rtol=0, atol=1e-12)


def test_double_backward_through_the_op_raises():
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    theta = torch.randn(3, dtype=torch.float64, requires_grad=True)
    feats, _ = qaa.engine.qaa_features_op(x, theta, "ry_cnot_ring", 3, 1, "z")
    (g,) = torch.autograd.grad(feats.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.square().sum().backward()


def test_op_refuses_what_the_engine_refuses_also_while_tracing():
    x = torch.randn(3, 9)
    theta = torch.zeros(3)
    for run in (lambda t, th: torch.ops.qaa.features(t, th, "ry_cnot_ring", 3, 1, "z", False),):
        with pytest.raises(ValueError, match="does not fit"):
            run(x, theta)  # width 9 needs 4 qubits
        with pytest.raises(TypeError, match="share dtype"):
            run(x[:, :8], theta.double())
        with pytest.raises(ValueError, match="theta must have shape"):
            run(x[:, :8], torch.zeros(4))
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode(), pytest.raises(ValueError, match="does not fit"):
            run(torch.empty(3, 9), torch.empty(3))


def test_circuit_is_built_once_per_spec():
    ops.cached_circuit.cache_clear()
    x, theta = torch.randn(2, 4), torch.zeros(2)
    for _ in range(3):
        qaa.engine.qaa_features_op(x, theta, "ry_cnot_ring", 2, 1, "z")
    info = ops.cached_circuit.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_compiled_op_has_no_graph_break_and_equals_eager():
    n, L = 3, 2
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 8, generator=g, requires_grad=True)
    theta = torch.randn(n * L, generator=g, requires_grad=True)

    def f(x, theta):
        feats, norms = qaa.engine.qaa_features_op(x.sin(), theta, "ry_cnot_ring", n, L, "z")
        return (feats * feats.sum()).sum() + norms.sum()

    explanation = torch._dynamo.explain(f)(x, theta)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x, theta)
    gx, gt = torch.autograd.grad(out, (x, theta))
    out_e = f(x, theta)
    gx_e, gt_e = torch.autograd.grad(out_e, (x, theta))
    torch.testing.assert_close(out, out_e, rtol=0, atol=1e-5)
    torch.testing.assert_close(gx, gx_e, rtol=0, atol=1e-5)
    torch.testing.assert_close(gt, gt_e, rtol=0, atol=1e-5)
