"""The engine called from several Python threads at once (the bindings release the GIL) gives bitwise the
results of serial calls."""
import threading

import pytest
import torch

import qaa
from qaa import engine

N_THREADS = 4
ROUNDS = 3


def run_concurrently(fn, n=N_THREADS):
    """Run fn(i) for i in range(n) on n threads started together; re-raise the first error."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def work(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "engine call hung"
    if errors:
        raise errors[0]
    return results


def make_case(i, ansatz, kind, dtype):
    g = torch.Generator().manual_seed(100 + i)
    n = 4 + i % 2
    circ = engine.build_circuit(ansatz, n, 2)
    theta = torch.randn(circ.n_params, generator=g, dtype=torch.float64).to(dtype)
    x = torch.randn(37 + 11 * i, 2**n - i, generator=g, dtype=torch.float64).to(dtype)  # widths with padding
    x[0] = 0  # a padding row
    gf = torch.randn(x.shape[0], engine.n_features(circ, kind), generator=g, dtype=torch.float64).to(dtype)
    gn = torch.randn(x.shape[0], generator=g, dtype=torch.float64).to(dtype)
    return circ, theta, x, gf, gn


def engine_step(case, kind):
    circ, theta, x, gf, gn = case
    out = []
    for _ in range(ROUNDS):
        f, nrm = engine.forward_features(circ, theta, x, kind, path="state")
        fd, _ = engine.forward_features(circ, theta, x, kind, path="dense")
        gt, gx = engine.backward_features(circ, theta, x, gf, gn, kind)
        out.append((f, nrm, fd, gt, gx))
    return out


def assert_bitwise(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for ta, tb in zip(ra, rb):
            assert ta.dtype == tb.dtype and ta.shape == tb.shape
            assert torch.equal(ta, tb)


@pytest.mark.parametrize("ansatz,kind,dtype", [("ry_cnot_ring", "z", torch.float32),
                                               ("ry_rz_ring_ry", "probs", torch.float64)])
def test_engine_threads_match_serial(ansatz, kind, dtype):
    cases = [make_case(i, ansatz, kind, dtype) for i in range(N_THREADS)]
    serial = [engine_step(c, kind) for c in cases]
    for _ in range(2):
        concurrent = run_concurrently(lambda i: engine_step(cases[i], kind))
        for s, c in zip(serial, concurrent):
            assert_bitwise(s, c)


def test_same_inputs_on_every_thread():
    case = make_case(0, "ry_rz_ring_ry", "z", torch.float32)
    serial = engine_step(case, "z")
    for result in run_concurrently(lambda i: engine_step(case, "z")):
        assert_bitwise(serial, result)


def make_layer(i):
    """A QAA layer whose every weight comes from its own generator (torch's global RNG is shared by threads)."""
    g = torch.Generator().manual_seed(7 + i)
    lin = torch.nn.Linear(24, 6)
    layer = qaa.QAALayer(lin, "default", qaa.QAAConfig(n_layers=2, ansatz="ry_rz_ring_ry"),
                         generator=torch.Generator().manual_seed(i))
    with torch.no_grad():
        lin.weight.copy_(torch.randn(6, 24, generator=g))
        lin.bias.copy_(torch.randn(6, generator=g))
        layer.qaa_out["default"].weight.copy_(torch.randn(6, 5, generator=g))
    x = torch.randn(3, 17, 24, generator=g)
    return layer, x


def autograd_step(layer, x):
    """Forward and backward through a QAA layer (qaa_features inside), as a training step does."""
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y = layer(x)
    (y.square().mean()).backward()
    return [(y.detach(), x.grad, layer.qaa_theta["default"].grad, layer.qaa_out["default"].weight.grad)]


def test_layer_forward_backward_threads_match_serial():
    cases = [make_layer(i) for i in range(N_THREADS)]
    serial = [autograd_step(*c) for c in cases]
    concurrent = run_concurrently(lambda i: autograd_step(*cases[i]))
    for s, c in zip(serial, concurrent):
        assert_bitwise(s, c)


def test_thread_count_change_while_others_run():
    """set_num_threads between calls on other threads: results stay correct (same values to round-off)."""
    case = make_case(1, "ry_cnot_ring", "z", torch.float64)
    ref = engine_step(case, "z")
    before = engine.get_num_threads()
    try:
        def fn(i):
            if i == 0:
                for n in (1, 2, 1, 0):
                    engine.set_num_threads(n)
                return None
            return engine_step(case, "z")

        for result in run_concurrently(fn)[1:]:
            for ra, rb in zip(ref, result):
                for ta, tb in zip(ra, rb):
                    torch.testing.assert_close(ta, tb, rtol=1e-12, atol=1e-12)
    finally:
        engine.set_num_threads(0)
    assert engine.get_num_threads() == before
