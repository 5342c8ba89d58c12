"""Parity of the CUDA engine (qaa._engine_cuda, cuStateVec) with the CPU engine (qaa._engine_cpu).

Every GPU test is marked ``cuda`` and skips when torch has no CUDA device or the CUDA engine is not built. Set
``QAA_REQUIRE_CUDA=1`` (benchmarks/gpu_check.sh does) to turn those skips into failures on a GPU machine.

Tolerances (norm-wise relative error, ``||gpu - cpu|| / ||cpu||``): 1e-5 in float32, 1e-12 in float64, for the
forward features and norms and for the VJP (``grad_theta``, ``grad_x``), n in {4, 10}, both ansaetze, both
readouts; plus the state-level functions, a caller workspace, a non-default stream and chunked batches.
"""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}
COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
DTYPE_NAME = {torch.float32: "float32", torch.float64: "float64"}


def _unavailable(reason: str):
    if os.environ.get("QAA_REQUIRE_CUDA") == "1":
        pytest.fail(f"QAA_REQUIRE_CUDA=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engines():
    """(cpu module, cuda module), or skip."""
    if not torch.cuda.is_available():
        _unavailable("torch.cuda is not available (no CUDA device or a CPU-only torch build)")
    from qaa import _engine_cpu
    from qaa.engine.cuda import cuda_unavailable_reason, cuda_engine

    reason = cuda_unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    return _engine_cpu, cuda_engine()


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Norm-wise relative error in float64; infinite entries must match exactly, NaN never."""
    got = got.detach().cpu()
    want = want.detach().cpu()
    if got.is_complex():
        got, want = torch.view_as_real(got), torch.view_as_real(want)
    got, want = got.double(), want.double()
    assert got.shape == want.shape
    assert not torch.isnan(got).any(), "NaN in the CUDA result"
    inf = torch.isinf(want) | torch.isinf(got)
    assert torch.equal(got[inf], want[inf]), "infinite entries differ"
    g, w = got[~inf], want[~inf]
    # scale by the largest magnitude first: finite entries near 1e301 would overflow a plain norm
    scale = max(w.abs().max().item() if w.numel() else 0.0, g.abs().max().item() if g.numel() else 0.0, 1e-300)
    diff = ((g - w) / scale).norm().item()
    return diff / max((w / scale).norm().item(), 1e-300)


def assert_close(got, want, dtype, what):
    err = rel_err(got, want)
    assert err <= RTOL[dtype], f"{what}: relative error {err:.3e} > {RTOL[dtype]:.0e}"


def make_inputs(n, batch, d, dtype, n_params, n_features, seed=0, edge_rows=True):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n_params, generator=g, dtype=torch.float64).to(dtype)
    x = torch.randn(batch, d, generator=g, dtype=torch.float64).to(dtype)
    if edge_rows and batch >= 5:
        x[1] = 0  # zero row: zero state, norm 0
        x[2, d // 2] = float("nan")  # NaN row: zero state, norm 0
        x[3, 0] = float("-inf")  # infinite row: its limit, norm +inf
        x[4] *= 1e36 if dtype == torch.float32 else 1e300  # a naive sum of squares would overflow
    gf = torch.randn(batch, n_features, generator=g, dtype=torch.float64).to(dtype)
    gn = torch.randn(batch, generator=g, dtype=torch.float64).to(dtype)
    return theta, x, gf, gn


def run_fused(eng, circ, theta, x, readout, gf, gn, stream=0, workspace=None):
    """forward + backward through one engine module on theta's device; returns 4 tensors."""
    B, d = x.shape
    F = circ.n_qubits if readout == "z" else circ.dim
    dev, dt = x.device, x.dtype
    feats = torch.empty(B, F, dtype=dt, device=dev)
    norms = torch.empty(B, dtype=dt, device=dev)
    gt = torch.empty(circ.n_params, dtype=dt, device=dev)
    gx = torch.empty(B, d, dtype=dt, device=dev)
    kw = {} if workspace is None else {"workspace": workspace}
    eng.forward(circ, theta, x, readout, feats, norms, stream, **kw)
    eng.backward(circ, theta, x, readout, gf, gn, gt, gx, stream, **kw)
    return feats, norms, gt, gx


def _stream():
    return torch.cuda.current_stream().cuda_stream


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("readout", ["z", "probs"])
@pytest.mark.parametrize("ansatz", ["ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"])
@pytest.mark.parametrize("n", [4, 10])
def test_fused_forward_and_vjp_match_cpu(engines, n, ansatz, readout, dtype):
    cpu, cuda = engines
    circ = cpu.Circuit.from_ansatz(ansatz, n, 2)
    d = 13 if n == 4 else 576
    F = n if readout == "z" else 2**n
    theta, x, gf, gn = make_inputs(n, 67, d, dtype, circ.n_params, F, seed=n)
    want = run_fused(cpu, circ, theta, x, readout, gf, gn)
    dev = torch.device("cuda")
    got = run_fused(cuda, circ, theta.to(dev), x.to(dev), readout, gf.to(dev), gn.to(dev), _stream())
    torch.cuda.synchronize()
    for g, w, what in zip(got, want, ("features", "norms", "grad_theta", "grad_x")):
        assert_close(g, w, dtype, f"{ansatz} n={n} {readout} {what}")
    # rows without a state: output 0 and gradient 0, never NaN
    assert torch.all(got[0][1:3].cpu() == 0) and torch.all(got[3][1:4].cpu() == 0)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n", [4, 10])
def test_state_level_functions_match_cpu(engines, n, dtype):
    cpu, cuda = engines
    dev = torch.device("cuda")
    circ = cpu.Circuit.from_ansatz("ry_rz_ring_ry", n, 2)
    N, B = 2**n, 19
    theta, x, _, _ = make_inputs(n, B, N - 3, dtype, circ.n_params, 1, seed=7)
    s = _stream()
    c = COMPLEX[dtype]
    # embed
    psi0, nr = torch.empty(B, N, dtype=c), torch.empty(B, dtype=dtype)
    cpu.embed(n, x, psi0, nr)
    psi0_d, nr_d = torch.empty(B, N, dtype=c, device=dev), torch.empty(B, dtype=dtype, device=dev)
    cuda.embed(n, x.to(dev), psi0_d, nr_d, s)
    assert_close(psi0_d, psi0, dtype, "embed psi0")
    assert_close(nr_d, nr, dtype, "embed norms")
    # apply, both directions (a random complex input state)
    gen = torch.Generator().manual_seed(3)
    st = torch.randn(B, N, 2, generator=gen, dtype=torch.float64).to(dtype)
    st = torch.view_as_complex(st.contiguous())
    for adjoint in (False, True):
        want = st.clone()
        cpu.apply(circ, theta, want, adjoint)
        got = st.to(dev)
        cuda.apply(circ, theta.to(dev), got, adjoint, s)
        assert_close(got, want, dtype, f"apply adjoint={adjoint}")
    # readouts and the state-level VJP on U psi0
    fin = psi0.clone()
    cpu.apply(circ, theta, fin, False)
    for readout in ("z", "probs"):
        F = n if readout == "z" else N
        f, f_d = torch.empty(B, F, dtype=dtype), torch.empty(B, F, dtype=dtype, device=dev)
        cpu.readout(n, fin, readout, f)
        cuda.readout(n, fin.to(dev), readout, f_d, s)
        assert_close(f_d, f, dtype, f"readout {readout}")
        gf = torch.randn(B, F, generator=gen, dtype=torch.float64).to(dtype)
        gt, gp = torch.empty(circ.n_params, dtype=dtype), torch.empty(B, N, dtype=dtype)
        cpu.vjp(circ, theta, fin, gf, readout, gt, gp)
        gt_d = torch.empty(circ.n_params, dtype=dtype, device=dev)
        gp_d = torch.empty(B, N, dtype=dtype, device=dev)
        cuda.vjp(circ, theta.to(dev), fin.to(dev), gf.to(dev), readout, gt_d, gp_d, s)
        assert_close(gt_d, gt, dtype, f"vjp {readout} grad_theta")
        assert_close(gp_d, gp, dtype, f"vjp {readout} grad_psi0")
    # circuit matrix
    u, u_d = torch.empty(N, N, dtype=c), torch.empty(N, N, dtype=c, device=dev)
    cpu.circuit_matrix(circ, theta, u)
    cuda.circuit_matrix(circ, theta.to(dev), u_d, s)
    assert_close(u_d, u, dtype, "circuit_matrix")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_workspace_stream_and_chunking(engines, dtype):
    """A torch-allocated workspace, a side stream and small chunks all give the default call's results."""
    _, cuda = engines
    from qaa.engine.cuda import workspace_for

    dev = torch.device("cuda")
    circ = cuda.Circuit.from_ansatz("ry_rz_ring_ry", 6, 2)
    B, d = 101, 40
    theta, x, gf, gn = (t.to(dev) for t in make_inputs(6, B, d, dtype, circ.n_params, 6, seed=11))
    ref = run_fused(cuda, circ, theta, x, "z", gf, gn, _stream())
    ws = workspace_for("backward", circ, B, dtype, dev)
    assert ws is not None and ws.numel() >= cuda.workspace_size("forward", circ, B, DTYPE_NAME[dtype])
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = run_fused(cuda, circ, theta, x, "z", gf, gn, side.cuda_stream, ws)
    torch.cuda.current_stream().wait_stream(side)
    for g, w, what in zip(got, ref, ("features", "norms", "grad_theta", "grad_x")):
        assert_close(g, w, dtype, f"workspace + side stream {what}")
    small = ws[: cuda.workspace_size("backward", circ, B, DTYPE_NAME[dtype]) - 1]
    with pytest.raises(ValueError):
        run_fused(cuda, circ, theta, x, "z", gf, gn, _stream(), small)
    cuda.set_chunk_bytes(7 * 2**6 * (8 if dtype == torch.float32 else 16))  # 7 states per chunk
    try:
        got = run_fused(cuda, circ, theta, x, "z", gf, gn, _stream())
    finally:
        cuda.set_chunk_bytes(0)
    for g, w, what in zip(got, ref, ("features", "norms", "grad_theta", "grad_x")):
        assert_close(g, w, dtype, f"chunked {what}")
    torch.cuda.synchronize()


@pytest.mark.cuda
def test_engine_api_dispatches_to_cuda(engines):
    """qaa.engine's torch-facing functions run CUDA tensors on the CUDA engine and agree with the CPU."""
    from qaa import engine

    dev = torch.device("cuda")
    circ = engine.build_circuit("ry_rz_ring_ry", 5, 2)
    theta, x, gf, gn = make_inputs(5, 33, 20, torch.float64, circ.n_params, 5, seed=5, edge_rows=False)
    f_cpu, n_cpu = engine.forward_features(circ, theta, x, "z", path="state")
    f_gpu, n_gpu = engine.forward_features(circ, theta.to(dev), x.to(dev), "z", path="state")
    assert f_gpu.device.type == "cuda"
    assert_close(f_gpu, f_cpu, torch.float64, "engine.forward_features")
    gt_cpu, gx_cpu = engine.backward_features(circ, theta, x, gf, gn, "z")
    gt_gpu, gx_gpu = engine.backward_features(circ, theta.to(dev), x.to(dev), gf.to(dev), gn.to(dev), "z")
    assert_close(gt_gpu, gt_cpu, torch.float64, "engine.backward_features grad_theta")
    assert_close(gx_gpu, gx_cpu, torch.float64, "engine.backward_features grad_x")


def test_cuda_engine_error_is_clear_when_unavailable(monkeypatch):
    """(Runs everywhere.) Without the compiled module, cuda_engine() raises RuntimeError with install instructions."""
    import importlib
    import qaa.engine.cuda as qc

    real_import = importlib.import_module

    def fake_import(name, *a, **k):
        if name == "qaa._engine_cuda":
            raise ModuleNotFoundError("No module named 'qaa._engine_cuda'", name="qaa._engine_cuda")
        return real_import(name, *a, **k)

    monkeypatch.setattr(qc, "_engine", None)
    monkeypatch.setattr(qc, "_error", None)
    monkeypatch.setattr(qc.importlib, "import_module", fake_import)
    with pytest.raises(RuntimeError, match="QAA_CUDA=ON"):
        qc.cuda_engine()
    assert "not built" in qc.cuda_unavailable_reason()
    assert qc.cuda_available() is False


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ansatz", ["ry_cnot_ring", "ry_rz_ring_ry"])
@pytest.mark.parametrize("n", [3, 7, 10, 12])
def test_fused_custatevec_and_cpu_agree(engines, n, ansatz, dtype):
    """The fused kernel, the per-gate cuStateVec engine (when built in) and the CPU engine, same inputs."""
    cpu, cuda = engines
    circ = cpu.Circuit.from_ansatz(ansatz, n, 3)
    d = 2**n - 1
    theta, x, gf, gn = make_inputs(n, 41, d, dtype, circ.n_params, n, seed=100 + n)
    want = run_fused(cpu, circ, theta, x, "z", gf, gn)
    dev = torch.device("cuda")
    args = (circ, theta.to(dev), x.to(dev), "z", gf.to(dev), gn.to(dev), _stream())
    modes = ["fused"] + (["custatevec"] if cuda.build_info()["custatevec"] else [])
    try:
        for mode in modes:
            cuda.set_engine(mode)
            got = run_fused(cuda, *args)
            torch.cuda.synchronize()
            for g, w, what in zip(got, want, ("features", "norms", "grad_theta", "grad_x")):
                assert_close(g, w, dtype, f"{mode} {ansatz} n={n} {what}")
    finally:
        cuda.set_engine("auto")


@pytest.mark.cuda
def test_fused_grad_theta_is_bitwise_repeatable(engines):
    cpu, cuda = engines
    circ = cpu.Circuit.from_ansatz("ry_cnot_ring", 10, 4)
    theta, x, gf, gn = make_inputs(10, 4099, 576, torch.float32, circ.n_params, 10, seed=5)
    dev = torch.device("cuda")
    args = (circ, theta.to(dev), x.to(dev), "z", gf.to(dev), gn.to(dev), _stream())
    first = run_fused(cuda, *args)[2].clone()
    for _ in range(2):
        assert torch.equal(run_fused(cuda, *args)[2], first)


@pytest.mark.cuda
def test_every_tensor_argument_is_checked_for_its_device(engines):
    cpu, cuda = engines
    circ = cpu.Circuit.from_ansatz("ry_cnot_ring", 4, 1)
    theta, x, gf, gn = make_inputs(4, 3, 16, torch.float32, circ.n_params, 4, edge_rows=False)
    dev = torch.device("cuda")
    with pytest.raises(ValueError, match="theta"):  # theta left on the CPU, x on the GPU
        run_fused(cuda, circ, theta, x.to(dev), "z", gf.to(dev), gn.to(dev), _stream())


@pytest.mark.cuda
def test_scratch_comes_from_torchs_caching_allocator(engines):
    """Without workspace=, the adapter allocates the engine's scratch with torch (visible in its statistics)."""
    cpu, cuda = engines
    circ = cpu.Circuit.from_ansatz("ry_cnot_ring", 10, 4)
    theta, x, gf, gn = make_inputs(10, 4096, 576, torch.float32, circ.n_params, 10, edge_rows=False)
    dev = torch.device("cuda")
    need = cuda.workspace_size("backward", circ, 4096, "float32")
    assert need > 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run_fused(cuda, circ, theta.to(dev), x.to(dev), "z", gf.to(dev), gn.to(dev), _stream())
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base >= need


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_custom_ops_on_cuda_match_cpu_and_pass_opcheck(engines, dtype):
    """``qaa::features`` / ``qaa::features_backward`` on CUDA tensors: opcheck, and values and gradients equal
    to the CPU operators'."""
    n, L = 6, 2
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 50, dtype=dtype, generator=g)
    theta = torch.randn(n * L, dtype=dtype, generator=g)
    w = torch.randn(40, n, dtype=dtype, generator=g)
    results = {}
    for device in ("cpu", "cuda"):
        xd = x.to(device).requires_grad_(True)
        td = theta.to(device).requires_grad_(True)
        torch.library.opcheck(torch.ops.qaa.features.default, (xd, td, "ry_cnot_ring", n, L, "z", False))
        feats, norms = torch.ops.qaa.features(xd, td, "ry_cnot_ring", n, L, "z", False)
        ((feats * w.to(device)).sum() + norms.sum()).backward()
        results[device] = (feats.detach().cpu(), xd.grad.cpu(), td.grad.cpu())
    for what, got, want in zip(("features", "grad x", "grad theta"), results["cuda"], results["cpu"]):
        assert_close(got, want, dtype, what)
