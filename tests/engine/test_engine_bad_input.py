"""Bad input at the engine's entry points (the raw bindings, qaa.engine, qaa_features): the right result or a
clear exception naming the problem; never a crash, a hang or a silent NaN."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import qaa
from qaa import _engine_cpu as E
from qaa import engine

ANSATZ = "ry_rz_ring_ry"  # complex-valued: exercises the general path


def circuit(n=3, layers=2, ansatz=ANSATZ):
    return E.Circuit.from_ansatz(ansatz, n, layers)


def np_args(B=4, n=3, d=8, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    c = circuit(n)
    theta = rng.normal(size=c.n_params).astype(dtype)
    x = rng.normal(size=(B, d)).astype(dtype)
    return c, theta, x



# ------------------------------------------------------------------------------------------ raw bindings
class TestRawBindings:
    def test_good_call_writes_outputs(self):
        c, theta, x = np_args()
        feats = np.full((4, 3), 7.0, np.float32)
        norms = np.full(4, 7.0, np.float32)
        E.forward(c, theta, x, "z", feats, norms)
        np.testing.assert_allclose(norms, np.linalg.norm(x, axis=1), rtol=1e-6)
        assert np.all(np.abs(feats) <= 1) and not np.any(feats == 7.0)

    @pytest.mark.parametrize("bad", ["int32", "float16", "float64-mixed"])
    def test_wrong_dtype_is_type_error_naming_the_argument(self, bad):
        c, theta, x = np_args()
        xb = {"int32": x.astype(np.int32), "float16": x.astype(np.float16), "float64-mixed": x.astype(np.float64)}[bad]
        with pytest.raises(TypeError, match=r"forward\(\): x "):
            E.forward(c, theta, xb, "z", np.zeros((4, 3), np.float32), np.zeros(4, np.float32))

    def test_torch_bfloat16_is_type_error(self):
        c = circuit()
        x = torch.randn(4, 8, dtype=torch.bfloat16)
        with pytest.raises(TypeError, match="x must be float32 or float64, got bfloat16"):
            E.forward(c, torch.zeros(c.n_params), x, "z", torch.zeros(4, 3), torch.zeros(4))

    def test_wrong_output_dtype_is_rejected_not_converted(self):
        # Before: nanobind converted the float64 output to a float32 temporary; the result was silently lost.
        c, theta, x = np_args()
        feats = np.zeros((4, 3), np.float64)
        with pytest.raises(TypeError, match="features"):
            E.forward(c, theta, x, "z", feats, np.zeros(4, np.float32))

    def test_complex_precision_mismatch(self):
        c, theta, _ = np_args()
        with pytest.raises(TypeError, match="psi is complex128 but an earlier array is float32"):
            E.apply(c, theta, np.zeros((2, 8), np.complex128))

    @pytest.mark.parametrize("shape", [(8,), (1, 4, 8)])
    def test_wrong_ndim(self, shape):
        c, theta, _ = np_args()
        with pytest.raises(ValueError, match="x must be 2-D"):
            E.forward(c, theta, np.ones(shape, np.float32), "z", np.zeros((4, 3), np.float32),
                      np.zeros(4, np.float32))

    def test_mismatched_shapes(self):
        c, theta, x = np_args()
        with pytest.raises(ValueError, match=r"features must have shape \(4, 3\), got \(4, 4\)"):
            E.forward(c, theta, x, "z", np.zeros((4, 4), np.float32), np.zeros(4, np.float32))
        with pytest.raises(ValueError, match="norms must have shape"):
            E.forward(c, theta, x, "z", np.zeros((4, 3), np.float32), np.zeros(5, np.float32))
        with pytest.raises(ValueError, match="theta must have shape"):
            E.forward(c, theta[:3].copy(), x, "z", np.zeros((4, 3), np.float32), np.zeros(4, np.float32))
        with pytest.raises(ValueError, match="input width"):
            E.forward(c, theta, np.ones((4, 9), np.float32), "z", np.zeros((4, 3), np.float32),
                      np.zeros(4, np.float32))
        with pytest.raises(ValueError, match="input width"):
            E.forward(c, theta, np.ones((4, 0), np.float32), "z", np.zeros((4, 3), np.float32),
                      np.zeros(4, np.float32))
        with pytest.raises(ValueError, match="grad_x must have shape"):
            E.backward(c, theta, x, "z", np.zeros((4, 3), np.float32), None, np.zeros(c.n_params, np.float32),
                       np.zeros((4, 7), np.float32))
        with pytest.raises(ValueError, match="unknown readout"):
            E.forward(c, theta, x, "zz", np.zeros((4, 3), np.float32), np.zeros(4, np.float32))

    @pytest.mark.parametrize("layout", ["strided", "transposed"])
    def test_non_contiguous_numpy_input(self, layout):
        c, theta, _ = np_args()
        rng = np.random.default_rng(1)
        x = rng.normal(size=(4, 16)).astype(np.float32)[:, ::2] if layout == "strided" else \
            rng.normal(size=(8, 4)).astype(np.float32).T
        with pytest.raises(TypeError, match="x is not C-contiguous"):
            E.forward(c, theta, x, "z", np.zeros((4, 3), np.float32), np.zeros(4, np.float32))

    def test_expanded_torch_input_and_output(self):
        c = circuit()
        theta = torch.zeros(c.n_params)
        with pytest.raises(TypeError, match="x is not C-contiguous"):
            E.forward(c, theta, torch.rand(1, 8).expand(4, 8), "z", torch.zeros(4, 3), torch.zeros(4))
        feats = torch.zeros(1, 3).expand(4, 3)  # stride 0: writes would land in one row
        with pytest.raises(TypeError, match="features is not C-contiguous"):
            E.forward(c, theta, torch.rand(4, 8), "z", feats, torch.zeros(4))
        norms = torch.zeros(4, 2)[:, 0]
        with pytest.raises(TypeError, match="norms is not C-contiguous"):
            E.forward(c, theta, torch.rand(4, 8), "z", torch.zeros(4, 3), norms)

    def test_read_only_outputs(self):
        c, theta, x = np_args()
        feats = np.zeros((4, 3), np.float32)
        feats.setflags(write=False)
        with pytest.raises(TypeError, match="features is an output but read-only"):
            E.forward(c, theta, x, "z", feats, np.zeros(4, np.float32))
        gx = np.zeros((4, 8), np.float32)
        gx.setflags(write=False)
        with pytest.raises(TypeError, match="grad_x is an output but read-only"):
            E.backward(c, theta, x, "z", np.zeros((4, 3), np.float32), None, np.zeros(c.n_params, np.float32), gx)
        psi = np.zeros((2, 8), np.complex64)
        psi.setflags(write=False)
        with pytest.raises(TypeError, match="psi is an output but read-only"):
            E.apply(c, theta, psi)

    def test_read_only_inputs_are_fine(self):
        """Read-only inputs are accepted and give the features of writable copies of the same values."""
        c, theta, x = np_args()
        want, want_norms = np.zeros((4, 3), np.float32), np.zeros(4, np.float32)
        E.forward(c, theta.copy(), x.copy(), "z", want, want_norms)
        assert np.abs(want).max() > 0
        x.setflags(write=False)
        theta.setflags(write=False)
        got, norms = np.zeros((4, 3), np.float32), np.zeros(4, np.float32)
        E.forward(c, theta, x, "z", got, norms)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(norms, want_norms)

    def test_aliasing_outputs(self):
        c, theta, x = np_args()
        buf = np.zeros(16, np.float32)
        with pytest.raises(ValueError, match="outputs 'features' and 'norms' share memory"):
            E.forward(c, theta, x, "z", buf[:12].reshape(4, 3), buf[8:12])
        buf = np.zeros(32 + c.n_params, np.float32)
        with pytest.raises(ValueError, match="outputs 'grad_theta' and 'grad_x' share memory"):
            E.backward(c, theta, x, "z", np.zeros((4, 3), np.float32), None, buf[:c.n_params],
                       buf[:32].reshape(4, 8))
        # an output on top of an input
        xx = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
        with pytest.raises(ValueError, match="output 'grad_x' shares memory with input 'x'"):
            E.backward(c, theta, xx, "z", np.zeros((4, 3), np.float32), None, np.zeros(c.n_params, np.float32), xx)
        psi = np.zeros((2, 8), np.complex64)
        with pytest.raises(ValueError, match="output 'features' shares memory with input 'psi'"):
            E.readout(3, psi, "z", psi.view(np.float32).reshape(-1)[:6].reshape(2, 3))
        # separate arrays of the same shape are fine
        E.forward(c, theta, x, "z", np.zeros((4, 3), np.float32), np.zeros(4, np.float32))

    def test_torch_lazy_views_are_rejected(self):
        # DLPack exports the raw memory of conjugate / negative views, not their values.
        c = circuit()
        psi = torch.randn(3, 8, dtype=torch.complex64)
        with pytest.raises(TypeError, match="conjugate or negative view"):
            E.vjp(c, torch.zeros(c.n_params), psi.conj(), torch.zeros(3, 3), "z", torch.zeros(c.n_params),
                  torch.zeros(3, 8))
        theta = torch.randn(c.n_params)._neg_view()
        assert theta.is_neg()
        with pytest.raises(TypeError, match="theta is a torch conjugate or negative view"):
            E.forward(c, theta, torch.rand(4, 8), "z", torch.zeros(4, 3), torch.zeros(4))

    def test_meta_tensor(self):
        c = circuit()
        with pytest.raises(TypeError, match="x .*not an array the engine can read.*meta"):
            E.forward(c, torch.zeros(c.n_params), torch.rand(4, 8, device="meta"), "z", torch.zeros(4, 3),
                      torch.zeros(4))

    def test_non_array_and_missing_arguments(self):
        c, theta, x = np_args()
        with pytest.raises(TypeError, match="x .*list.* is not an array"):
            E.forward(c, theta, [[1.0] * 8], "z", np.zeros((1, 3), np.float32), np.zeros(1, np.float32))
        with pytest.raises(TypeError, match="circuit must be a qaa Circuit"):
            E.forward("ry", theta, x, "z", np.zeros((4, 3), np.float32), np.zeros(4, np.float32))
        with pytest.raises(TypeError, match="missing argument 'norms'"):
            E.forward(c, theta, x, "z", np.zeros((4, 3), np.float32))
        with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
            E.forward(c, theta, x, "z", np.zeros((4, 3), np.float32), np.zeros(4, np.float32), bogus=1)

    @pytest.mark.parametrize("n", [0, -1, 21, 100])
    def test_qubit_counts_out_of_range(self, n):
        with pytest.raises(ValueError, match="n_qubits"):
            E.embed(n, np.ones((1, 1), np.float32), np.zeros((1, 2), np.complex64), np.zeros(1, np.float32))
        with pytest.raises(ValueError):
            E.Circuit(n)
        with pytest.raises(ValueError):
            E.Circuit.from_ansatz("ry_cnot_ring", n, 1)

    def test_huge_widths_and_counts_do_not_hang_or_overflow(self):
        # qubits_for_dim looped forever for d > 2**62 (signed shift overflow); run it in a child with a timeout.
        code = ("from qaa import _engine_cpu as E; print(E.qubits_for_dim(2**62 + 1), E.qubits_for_dim(2**63 - 1), "
                "E.qubits_for_dim(2**21))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["63", "63", "21"]
        with pytest.raises(ValueError, match="parameters"):
            E.Circuit.from_ansatz("ry_cnot_ring", 20, 2**30)  # n_params would overflow int32
        with pytest.raises(ValueError, match="parameter index"):
            E.Circuit(2).add_rotation("RY", 0, 2**31 - 1)
        with pytest.raises(ValueError, match="1024"):
            E.set_num_threads(10**6)
        with pytest.raises(ValueError, match="input width must be >= 1"):
            E.qubits_for_dim(0)

    def test_empty_batch_every_function(self):
        c, theta, _ = np_args()
        x = np.zeros((0, 8), np.float32)
        E.forward(c, theta, x, "z", np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
        gt = np.full(c.n_params, 5.0, np.float32)
        E.backward(c, theta, x, "z", np.zeros((0, 3), np.float32), None, gt, np.zeros((0, 8), np.float32))
        np.testing.assert_array_equal(gt, 0)
        psi = np.zeros((0, 8), np.complex64)
        E.embed(3, x, psi, np.zeros(0, np.float32))
        E.apply(c, theta, psi)
        E.readout(3, psi, "probs", np.zeros((0, 8), np.float32))
        gt[:] = 5
        E.vjp(c, theta, psi, np.zeros((0, 3), np.float32), "z", gt, np.zeros((0, 8), np.float32))
        np.testing.assert_array_equal(gt, 0)

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_edge_rows(self, dtype):
        c, theta, _ = np_args(dtype=dtype)
        big = float(np.finfo(dtype).max) * 0.9
        x = np.array([[0] * 8,                             # zero row (padding)
                      [1, np.nan] + [0] * 6,               # NaN
                      [np.inf, -np.inf, 1] + [0] * 5,      # infinities
                      [big] * 8,                           # norm beyond the dtype's range
                      [1e-40 if dtype == np.float32 else 1e-310] * 8,  # subnormals
                      [1e30, -2e30] + [0] * 6], dtype=dtype)
        feats = np.zeros((6, 8), dtype)
        norms = np.zeros(6, dtype)
        E.forward(c, theta, x, "probs", feats, norms)
        assert np.all(np.isfinite(feats))
        np.testing.assert_array_equal(feats[:2], 0)   # rows without a state read out 0
        np.testing.assert_array_equal(norms[:2], 0)
        np.testing.assert_allclose(feats[2:].sum(axis=1), 1, rtol=1e-5)
        assert norms[2] == np.inf
        assert norms[3] == np.inf or np.isclose(norms[3], big * np.sqrt(8))
        assert 0 < norms[4] < 1e-30
        np.testing.assert_allclose(norms[5], np.sqrt(5) * 1e30, rtol=1e-6)
        # the scaled rows equal their scale-free versions
        ref = np.zeros((3, 8), dtype)
        E.forward(c, theta, np.array([[1] * 8, [1] * 8, [1, -2] + [0] * 6], dtype), "probs", ref,
                  np.zeros(3, dtype))
        np.testing.assert_allclose(feats[3:], ref, rtol=1e-5, atol=1e-6)
        gx = np.full((6, 8), 9, dtype)
        gt = np.zeros(c.n_params, dtype)
        E.backward(c, theta, x, "probs", np.ones((6, 8), dtype), np.ones(6, dtype), gt, gx)
        assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gt))
        np.testing.assert_array_equal(gx[:3], 0)  # zero, NaN and infinite rows have zero input gradient


# ------------------------------------------------------------------------------------------ qaa.engine
class FakeCuda(torch.Tensor):
    """A CPU tensor that reports a CUDA device: simulates a CUDA tensor on a machine without the CUDA engine."""

    @property
    def device(self):
        return torch.device("cuda", 0)


class TestEngineWrapper:
    def setup_method(self):
        self.c = engine.build_circuit(ANSATZ, 3, 2)
        self.theta = torch.randn(self.c.n_params, generator=torch.Generator().manual_seed(0))

    def test_unsupported_devices(self):
        x = torch.randn(4, 8, device="meta")
        with pytest.raises(ValueError, match="device 'meta' are not supported"):
            engine.forward_features(self.c, self.theta.to("meta"), x)
        with pytest.raises(ValueError, match="one device"):
            engine.forward_features(self.c, self.theta, x)

    def test_cuda_tensor_without_cuda_engine(self, monkeypatch):
        x = torch.randn(4, 8).as_subclass(FakeCuda)
        th = self.theta.as_subclass(FakeCuda)
        assert x.device.type == "cuda"
        from qaa.engine import cuda as _cuda

        if not _cuda.cuda_available():
            with pytest.raises(RuntimeError, match="CUDA engine"):
                engine.forward_features(self.c, th, x)
            with pytest.raises(RuntimeError, match="CUDA engine"):
                engine.backward_features(self.c, th, x, torch.zeros(4, 3).as_subclass(FakeCuda))
        monkeypatch.setitem(sys.modules, "qaa.engine.cuda", None)  # a build without the CUDA loader
        with pytest.raises(RuntimeError, match="CUDA engine is not available"):
            engine.forward_features(self.c, th, x)
        with pytest.raises(RuntimeError, match="CUDA engine is not available"):
            engine.embed(x, 3)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.complex64])
    def test_unsupported_dtypes(self, dtype):
        x = torch.ones(4, 8, dtype=dtype)
        with pytest.raises(TypeError, match="float32 or float64"):
            engine.forward_features(self.c, self.theta, x)
        with pytest.raises(TypeError):
            qaa.qaa_features(x, self.theta, self.c)

    def test_dtype_mismatch_and_shapes(self):
        with pytest.raises(TypeError, match="same dtype"):
            engine.forward_features(self.c, self.theta.double(), torch.randn(4, 8))
        with pytest.raises(ValueError, match="2-D"):
            qaa.qaa_features(torch.randn(2, 4, 8), self.theta, self.c)
        with pytest.raises(ValueError, match="does not fit"):
            qaa.qaa_features(torch.randn(4, 9), self.theta, self.c)
        with pytest.raises(ValueError, match="does not fit"):
            qaa.qaa_features(torch.randn(4, 0), self.theta, self.c)
        with pytest.raises(ValueError, match="theta must have shape"):
            qaa.qaa_features(torch.randn(4, 8), self.theta[:-1], self.c)
        with pytest.raises(ValueError, match="grad_features must have shape"):
            engine.backward_features(self.c, self.theta, torch.randn(4, 8), torch.zeros(4, 4))
        with pytest.raises(ValueError, match="unknown readout"):
            engine.forward_features(self.c, self.theta, torch.randn(4, 8), "x")
        with pytest.raises(ValueError, match="path"):
            engine.forward_features(self.c, self.theta, torch.randn(4, 8), path="fast")

    @pytest.mark.parametrize("layout", ["transposed", "strided", "expanded", "neg", "requires_grad"])
    def test_layouts_give_the_contiguous_result(self, layout):
        base = torch.randn(4, 8)
        x = {"transposed": base.T.contiguous().T, "strided": torch.stack([base, base], -1)[..., 0],
             "expanded": base[:1].expand(4, 8), "neg": (-base)._neg_view(),
             "requires_grad": base.clone().requires_grad_()}[layout]
        if layout == "expanded":
            base = base[:1].repeat(4, 1)
        assert layout in ("neg", "requires_grad") or not x.is_contiguous()
        for path in ("state", "dense"):
            f, n = engine.forward_features(self.c, self.theta, x, "probs", path=path)
            f0, n0 = engine.forward_features(self.c, self.theta, base.contiguous(), "probs", path=path)
            torch.testing.assert_close(f, f0, rtol=0, atol=0)
            torch.testing.assert_close(n, n0, rtol=0, atol=0)
        g = torch.randn(4, 8)
        gt, gx = engine.backward_features(self.c, self.theta, x, g, kind="probs")
        gt0, gx0 = engine.backward_features(self.c, self.theta, base.contiguous(), g, kind="probs")
        torch.testing.assert_close(gx, gx0, rtol=0, atol=0)
        torch.testing.assert_close(gt, gt0, rtol=0, atol=0)

    def test_negative_view_theta(self):
        x = torch.randn(4, 8)
        f, _ = engine.forward_features(self.c, (-self.theta)._neg_view(), x)
        f0, _ = engine.forward_features(self.c, self.theta, x)  # the view's values are -(-theta)
        torch.testing.assert_close(f, f0, rtol=0, atol=0)

    def test_conjugate_view_psi(self):
        psi = torch.randn(3, 8, dtype=torch.complex64)
        out = engine.apply(self.c, self.theta, psi.conj())
        torch.testing.assert_close(out, engine.apply(self.c, self.theta, psi.conj().resolve_conj()))
        gt, gp = engine.vjp(self.c, self.theta, psi.conj(), torch.ones(3, 3))
        gt0, gp0 = engine.vjp(self.c, self.theta, psi.conj().resolve_conj(), torch.ones(3, 3))
        torch.testing.assert_close(gt, gt0)
        torch.testing.assert_close(gp, gp0)

    def test_empty_batch(self):
        x = torch.zeros(0, 8, requires_grad=True)
        th = self.theta.clone().requires_grad_()
        for path in ("auto", "state", "dense"):
            f, n = engine.forward_features(self.c, self.theta, x.detach(), path=path)
            assert f.shape == (0, 3) and n.shape == (0,)
        f, n = qaa.qaa_features(x, th, self.c)
        (f.sum() + n.sum()).backward()
        assert x.grad.shape == (0, 8)
        torch.testing.assert_close(th.grad, torch.zeros_like(th))

    @pytest.mark.parametrize("scale", [1e30, 1e-30, 1e-40])
    def test_extreme_magnitudes_are_scale_invariant(self, scale):
        x = torch.randn(5, 8, dtype=torch.float64).float()
        xs = (x.double() * scale).float()  # 1e-40 is subnormal in float32
        for path in ("state", "dense"):
            f, n = engine.forward_features(self.c, self.theta, xs, path=path)
            f0, n0 = engine.forward_features(self.c, self.theta, (xs.double() / scale).float() if scale < 1e-35 else x,
                                             path=path)
            torch.testing.assert_close(f.double(), f0.double(), rtol=1e-4, atol=1e-5 if scale < 1e-35 else 1e-6)
            assert torch.isfinite(n).all() and (n > 0).all()
        th = self.theta.clone().requires_grad_()
        xg = xs.clone().requires_grad_()
        f, _ = qaa.qaa_features(xg, th, self.c)
        f.sum().backward()
        assert torch.isfinite(th.grad).all()
        # d features / dx scales as 1/scale: representable for 1e+-30; beyond float32's range (inf) for 1e-40,
        # but never NaN
        assert not torch.isnan(xg.grad).any()
        if scale > 1e-35:
            x1 = x.clone().requires_grad_()
            qaa.qaa_features(x1, self.theta, self.c)[0].sum().backward()
            torch.testing.assert_close(xg.grad.double() * scale, x1.grad.double(), rtol=1e-3, atol=1e-5)

    def test_float32_limit(self):
        x = torch.full((3, 8), 3e38)
        x[1, ::2] = -3e38
        x[2] = torch.tensor([3.4e38, 1, 0, 0, 0, 0, 0, 0])
        ref = torch.sign(x) * (x.abs() > 1e30)
        for path in ("state", "dense"):
            f, n = engine.forward_features(self.c, self.theta, x, path=path)
            f0, _ = engine.forward_features(self.c, self.theta, ref.float(), path=path)
            torch.testing.assert_close(f, f0, rtol=1e-5, atol=1e-6)
            assert torch.isinf(n[:2]).all()  # the true norms exceed float32's range
        th = self.theta.clone().requires_grad_()
        f, _ = qaa.qaa_features(x.requires_grad_(), th, self.c)
        f.sum().backward()
        assert torch.isfinite(th.grad).all() and torch.isfinite(x.grad).all()

    def test_nan_and_inf_rows(self):
        x = torch.randn(4, 8)
        x[0, 3] = float("nan")
        x[1, 2] = float("inf")
        x[2] = 0
        th = self.theta.clone().requires_grad_()
        xg = x.clone().requires_grad_()
        f, n = qaa.qaa_features(xg, th, self.c)
        assert torch.isfinite(f).all()
        assert (f[0] == 0).all() and (f[2] == 0).all() and n[0] == 0 and n[2] == 0 and torch.isinf(n[1])
        (f.sum() + n[[0, 2, 3]].sum()).backward()
        assert torch.isfinite(th.grad).all() and torch.isfinite(xg.grad).all()
        assert (xg.grad[:3] == 0).all()
        # the rows with a state are unaffected by their neighbours
        f3, _ = engine.forward_features(self.c, self.theta, x[3:])
        torch.testing.assert_close(f[3:], f3.detach(), rtol=0, atol=0)

    def test_autocast_keeps_the_engine_dtype(self):
        x = torch.randn(100, 8)  # B > 1.5 * 2**n: "auto" takes the dense GEMM path
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fd, _ = engine.forward_features(self.c, self.theta, x, path="dense")
            fs, _ = engine.forward_features(self.c, self.theta, x, path="state")
            fa, _ = qaa.qaa_features(x, self.theta, self.c)
        assert fd.dtype == fs.dtype == fa.dtype == torch.float32
        torch.testing.assert_close(fd, fs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fa, fs, rtol=1e-5, atol=1e-6)

    def test_width_needing_too_many_qubits(self):
        with pytest.raises(ValueError):
            engine.build_circuit("ry_cnot_ring", engine.qubits_for_dim(2**21), 1)
        with pytest.raises(ValueError, match="n_qubits must be in"):
            engine.embed(torch.ones(1, 4), 21)
