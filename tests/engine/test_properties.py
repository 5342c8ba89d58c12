"""Property-based tests (hypothesis) of the engine on random circuits, inputs and angles: the state norm is
preserved, probabilities sum to 1, <Z> lies in [-1, 1], the adjoint-method VJPs equal central finite
differences (float64), and the per-state and dense-matrix paths agree."""
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qaa import engine

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _one_engine_thread():
    # Thousands of tiny engine calls: one thread avoids waking the OpenMP pool on each (results are
    # independent of the thread count; tests/test_threads.py covers concurrency).
    engine.set_num_threads(1)
    yield
    engine.set_num_threads(0)

ROTATIONS = ("RX", "RY", "RZ")
TWO_QUBIT = ("CNOT", "CZ")


@st.composite
def circuits(draw, max_qubits=4, max_gates=12, max_params=6):
    """A random gate list on 1..max_qubits wires (rotations may share parameters) and random angles."""
    n = draw(st.integers(1, max_qubits))
    c = engine.Circuit(n)
    n_gates = draw(st.integers(0, max_gates))
    for _ in range(n_gates):
        if n >= 2 and draw(st.booleans()):
            w0 = draw(st.integers(0, n - 1))
            w1 = draw(st.integers(0, n - 2))
            c.add_two_qubit(draw(st.sampled_from(TWO_QUBIT)), w0, w1 if w1 < w0 else w1 + 1)
        else:
            c.add_rotation(draw(st.sampled_from(ROTATIONS)), draw(st.integers(0, n - 1)),
                           draw(st.integers(0, max_params - 1)))
    angles = draw(st.lists(st.floats(-2 * math.pi, 2 * math.pi), min_size=c.n_params, max_size=c.n_params))
    return c, torch.tensor(angles, dtype=torch.float64)


@st.composite
def inputs(draw, c, min_norm=0.0, allow_zero_rows=True):
    """Rows x[B, d] with d <= 2**n (zero padding), optionally zero rows, at a random overall scale."""
    B = draw(st.integers(1, 5))
    d = draw(st.integers(1, c.dim))
    vals = draw(st.lists(st.floats(-3, 3), min_size=B * d, max_size=B * d))
    x = torch.tensor(vals, dtype=torch.float64).reshape(B, d)
    if allow_zero_rows and B > 1 and draw(st.booleans()):
        x[draw(st.integers(0, B - 1))] = 0
    if min_norm > 0:
        assume(bool((x.norm(dim=1) > min_norm).all()))
    scale = draw(st.sampled_from([1.0, 1e-30, 1e30])) if min_norm == 0 else 1.0
    return x * scale


def ref_norm(x):
    """||x|| per row, scaled first (torch.linalg.vector_norm underflows for rows like 1e-255)."""
    amax = x.abs().amax(dim=1, keepdim=True)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    return (torch.linalg.vector_norm(x / safe, dim=1) * safe[:, 0])


def z_from_probs(p, n):
    bits = torch.tensor([[(k >> (n - 1 - q)) & 1 for q in range(n)] for k in range(2**n)], dtype=p.dtype)
    return p @ (1 - 2 * bits)


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_norm_probabilities_and_z_range(data):
    c, theta = data.draw(circuits())
    x = data.draw(inputs(c))
    nonzero = x.abs().amax(dim=1) > 0
    psi0, norms = engine.embed(x, c.n_qubits)
    torch.testing.assert_close(norms, ref_norm(x), rtol=1e-12, atol=0)
    psi = engine.apply(c, theta, psi0)
    sq = psi.abs().square().sum(dim=1)
    torch.testing.assert_close(sq[nonzero], torch.ones_like(sq[nonzero]), rtol=0, atol=1e-12)
    assert (sq[~nonzero] == 0).all()
    # U^dagger U = 1 on the states
    torch.testing.assert_close(engine.apply(c, theta, psi, adjoint=True), psi0, rtol=0, atol=1e-12)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        th, xx = theta.to(dtype), x.to(dtype)
        nonzero = xx.abs().amax(dim=1) > 0  # tiny float64 rows underflow to zero rows in float32
        probs, _ = engine.forward_features(c, th, xx, "probs", path="state")
        z, _ = engine.forward_features(c, th, xx, "z", path="state")
        assert torch.isfinite(probs).all() and torch.isfinite(z).all()
        assert (probs >= 0).all()
        s = probs.double().sum(dim=1)
        torch.testing.assert_close(s[nonzero], torch.ones_like(s[nonzero]), rtol=0, atol=tol)
        assert (probs[~nonzero] == 0).all() and (z[~nonzero] == 0).all()
        assert (z.abs() <= 1 + tol).all()
        torch.testing.assert_close(z.double(), z_from_probs(probs.double(), c.n_qubits), rtol=0, atol=tol * 10)
        # the state-level pipeline gives the same numbers as the fused one
        ref = engine.readout(engine.apply(c, th, engine.embed(xx, c.n_qubits)[0]), "probs")
        torch.testing.assert_close(probs, ref, rtol=0, atol=tol)


@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), kind=st.sampled_from(["z", "probs"]))
def test_state_and_dense_paths_agree(data, kind):
    c, theta = data.draw(circuits())
    x = data.draw(inputs(c))
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        fs, ns = engine.forward_features(c, theta.to(dtype), x.to(dtype), kind, path="state")
        fd, nd = engine.forward_features(c, theta.to(dtype), x.to(dtype), kind, path="dense")
        assert fs.dtype == fd.dtype == dtype and fs.shape == fd.shape
        torch.testing.assert_close(fd, fs, rtol=0, atol=tol)
        torch.testing.assert_close(nd, ns, rtol=0, atol=0)


def central_diff(f, v, eps):
    g = torch.zeros_like(v)
    flat = v.reshape(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        g.view(-1)[i] = (fp - fm) / (2 * eps)
    return g


@settings(max_examples=100, **SETTINGS)
@given(data=st.data(), kind=st.sampled_from(["z", "probs"]))
def test_fused_vjp_equals_finite_differences(data, kind):
    c, theta = data.draw(circuits(max_qubits=3, max_gates=10))
    x = data.draw(inputs(c, min_norm=0.2, allow_zero_rows=False))
    B = x.shape[0]
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    gf = torch.randn(B, engine.n_features(c, kind), generator=g, dtype=torch.float64)
    gn = torch.randn(B, generator=g, dtype=torch.float64)
    theta, x = theta.clone(), x.clone()

    def loss():
        f, n = engine.forward_features(c, theta, x, kind, path="state")
        return float((f * gf).sum() + (n * gn).sum())

    grad_theta, grad_x = engine.backward_features(c, theta, x, gf, gn, kind)
    fd_theta = central_diff(loss, theta, 1e-6)
    fd_x = central_diff(loss, x, 1e-6)
    torch.testing.assert_close(grad_theta, fd_theta, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_x, fd_x, rtol=1e-5, atol=1e-6)
    # and without the norm cotangent (None is treated as 0)
    gt0, gx0 = engine.backward_features(c, theta, x, gf, None, kind)
    gt1, gx1 = engine.backward_features(c, theta, x, gf, torch.zeros_like(gn), kind)
    torch.testing.assert_close(gt0, gt1, rtol=0, atol=0)
    torch.testing.assert_close(gx0, gx1, rtol=0, atol=0)


@settings(max_examples=100, **SETTINGS)
@given(data=st.data(), kind=st.sampled_from(["z", "probs"]))
def test_state_level_vjp_equals_finite_differences(data, kind):
    c, theta = data.draw(circuits(max_qubits=3, max_gates=10))
    B = data.draw(st.integers(1, 4))
    vals = data.draw(st.lists(st.floats(-2, 2), min_size=B * c.dim, max_size=B * c.dim))
    psi0 = torch.tensor(vals, dtype=torch.float64).reshape(B, c.dim)  # any real vector, not only unit ones
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    gf = torch.randn(B, engine.n_features(c, kind), generator=g, dtype=torch.float64)
    theta = theta.clone()

    def loss():
        psi = engine.apply(c, theta, psi0.to(torch.complex128))
        return float((engine.readout(psi, kind) * gf).sum())

    psi = engine.apply(c, theta, psi0.to(torch.complex128))
    grad_theta, grad_psi0 = engine.vjp(c, theta, psi, gf, kind)
    torch.testing.assert_close(grad_theta, central_diff(loss, theta, 1e-6), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_psi0, central_diff(loss, psi0, 1e-6), rtol=1e-5, atol=1e-6)


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_autograd_function_matches_engine_and_gradcheck(data):
    """QAAFunction's backward is the engine's VJP; torch.autograd.gradcheck agrees (float64)."""
    from qaa.engine.function import qaa_features

    c, theta = data.draw(circuits(max_qubits=3, max_gates=8))
    assume(c.n_params > 0)
    x = data.draw(inputs(c, min_norm=0.2, allow_zero_rows=False))
    xt = x.clone().requires_grad_()
    th = theta.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: qaa_features(a, b, c, "probs"), (xt, th), eps=1e-6, atol=1e-6,
                                    rtol=1e-5)
