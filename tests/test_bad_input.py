"""Bad input at every public entry point: the raw bindings, qaa.engine, qaa_features, QAALayer, attach,
save/load and the CLI. Each case gets the mathematically right result or a clear exception naming the
problem; never a crash, a hang or a silent NaN."""
import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import qaa
import qaa.cli
import qaa.models
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
        c, theta, x = np_args()
        x.setflags(write=False)
        theta.setflags(write=False)
        E.forward(c, theta, x, "z", np.zeros((4, 3), np.float32), np.zeros(4, np.float32))

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
        from qaa import _cuda

        if not _cuda.cuda_available():
            with pytest.raises(RuntimeError, match="CUDA engine"):
                engine.forward_features(self.c, th, x)
            with pytest.raises(RuntimeError, match="CUDA engine"):
                engine.backward_features(self.c, th, x, torch.zeros(4, 3).as_subclass(FakeCuda))
        monkeypatch.setitem(sys.modules, "qaa._cuda", None)  # a build without the CUDA loader
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


# ------------------------------------------------------------------------------------------ QAALayer
def make_layer(d_in=8, d_out=5, dtype=torch.float32, **cfg):
    torch.manual_seed(0)
    lin = nn.Linear(d_in, d_out).to(dtype)
    layer = qaa.QAALayer(lin, "default", qaa.QAAConfig(n_layers=2, seed=0, **cfg))
    with torch.no_grad():
        layer.qaa_out["default"].weight.normal_()  # a trained-looking branch (P = 0 would hide errors)
    return layer


def adapter_grads_finite(layer):
    grads = [layer.qaa_theta["default"].grad, layer.qaa_out["default"].weight.grad]
    return all(g is not None and torch.isfinite(g).all() for g in grads)


class TestLayer:
    def test_nan_inf_zero_tokens(self):
        layer = make_layer()
        x = torch.randn(2, 3, 8)
        x[0, 0, 3] = float("nan")
        x[0, 1, 2] = float("-inf")
        x[1, 2] = 0
        b = layer.branch(x, "default")
        assert torch.isfinite(b).all()
        assert (b[0, 0] == 0).all() and (b[1, 2] == 0).all()  # no state: branch 0
        clean = layer.branch(x[1, :2], "default")  # the engine is row-wise; torch's GEMM for P may block rows
        torch.testing.assert_close(b[1, :2], clean, rtol=1e-6, atol=1e-7)
        xg = x.clone().requires_grad_()
        y = layer(xg)
        # the frozen path carries the NaN / inf of the bad tokens (as the base model does); nothing else does
        assert torch.isfinite(y[1]).all() and torch.isfinite(y[0, 2]).all()
        y[torch.isfinite(y)].sum().backward()
        assert adapter_grads_finite(layer)

    @pytest.mark.parametrize("rescale", [False, True])
    def test_huge_tokens(self, rescale):
        layer = make_layer(rescale_by_norm=rescale)
        x = torch.randn(2, 3, 8)
        big = layer.branch(x * 1e30, "default")
        ref = layer.branch(x, "default") * (1e30 if rescale else 1)
        torch.testing.assert_close(big, ref, rtol=1e-4, atol=1e-5)
        xg = (x * 1e30).requires_grad_()
        layer.branch(xg, "default").sum().backward()
        assert adapter_grads_finite(layer) if not rescale else torch.isfinite(layer.qaa_theta["default"].grad).all()

    def test_float32_limit_with_rescale_by_norm_never_nan(self):
        # ||x|| of a 3e38 row overflows float32; 0 * inf must not turn the zero-initialised branch into NaN.
        layer = qaa.QAALayer(nn.Linear(8, 5), "default", qaa.QAAConfig(n_layers=2, seed=0, rescale_by_norm=True))
        x = torch.full((1, 2, 8), 3e38)
        x[0, 1] = torch.tensor([3e38, 0, 0, 0, 0, 0, 0, 1.0])
        assert (layer.branch(x, "default") == 0).all()
        with torch.no_grad():
            layer.qaa_out["default"].weight.normal_()
        b = layer.branch(x, "default")
        assert not torch.isnan(b).any()
        # NaN tokens still give a zero branch under rescale_by_norm
        xn = torch.randn(1, 2, 8)
        xn[0, 0, 0] = float("nan")
        assert (layer.branch(xn, "default")[0, 0] == 0).all()

    @pytest.mark.parametrize("shape", [(2, 0, 8), (0, 3, 8), (0, 8)])
    def test_empty_batch_or_sequence(self, shape):
        layer = make_layer()
        x = torch.randn(*shape, requires_grad=True)
        y = layer(x)
        assert y.shape == (*shape[:-1], 5)
        y.sum().backward()
        assert x.grad.shape == x.shape
        torch.testing.assert_close(layer.qaa_theta["default"].grad, torch.zeros(layer.qaa_theta["default"].shape))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_low_and_high_precision_base(self, dtype):
        layer = make_layer(dtype=dtype)
        x = torch.randn(2, 3, 8).to(dtype).requires_grad_()
        y = layer(x)
        assert y.dtype == dtype  # follows the base output
        assert layer.qaa_theta["default"].dtype == torch.float32  # adapter stays float32
        assert layer.qaa_out["default"].weight.dtype == torch.float32
        expected = layer.base_layer(x) + layer.branch(x, "default").to(dtype)
        torch.testing.assert_close(y, expected, rtol=0, atol=0)
        y.float().sum().backward()
        assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
        assert adapter_grads_finite(layer)
        assert layer.qaa_theta["default"].grad.dtype == torch.float32

    def test_input_dtype_other_than_the_base_is_the_base_layers_error(self):
        layer = make_layer()
        with pytest.raises(RuntimeError, match="dtype"):
            layer(torch.randn(2, 8, dtype=torch.float16))

    def test_autocast_bfloat16(self):
        layer = make_layer()
        x = torch.randn(2, 3, 8, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        assert y.dtype == torch.bfloat16
        assert layer.qaa_theta["default"].dtype == torch.float32
        y.float().sum().backward()
        assert adapter_grads_finite(layer) and torch.isfinite(x.grad).all()
        assert layer.qaa_theta["default"].grad.dtype == torch.float32
        with torch.no_grad():
            ref = layer(x)
        torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)

    @pytest.mark.parametrize("layout", ["transposed", "expanded", "strided"])
    def test_non_contiguous_tokens(self, layout):
        layer = make_layer()
        base = torch.randn(2, 3, 8)
        x = {"transposed": base.transpose(0, 1).contiguous().transpose(0, 1),
             "expanded": base[:1, :1].expand(2, 3, 8),
             "strided": torch.stack([base, base], -1)[..., 1]}[layout]
        assert not x.is_contiguous()
        xg = x.detach().requires_grad_() if layout != "expanded" else base[:1, :1].clone().requires_grad_()
        xin = xg if layout != "expanded" else xg.expand(2, 3, 8)
        y = layer(xin)
        torch.testing.assert_close(y, layer(x.contiguous()), rtol=0, atol=0)
        y.sum().backward()
        assert torch.isfinite(xg.grad).all()

    def test_meta_device(self):
        layer = qaa.QAALayer(nn.Linear(8, 5, device="meta"), "default", qaa.QAAConfig(n_layers=2))
        assert layer.qaa_theta["default"].device.type == "meta"
        with pytest.raises(ValueError, match="meta"):
            layer(torch.randn(2, 8, device="meta"))

    def test_too_many_qubits(self):
        lin = nn.Linear(2**21, 4)
        with pytest.raises(ValueError, match="needs 21 qubits; the engine supports at most 20"):
            qaa.QAALayer(lin, "default", qaa.QAAConfig())

    def test_wrong_width(self):
        layer = make_layer()
        with pytest.raises(ValueError, match="expected input width 8, got 7"):
            layer.branch(torch.randn(2, 7), "default")
        with pytest.raises(RuntimeError):
            layer(torch.randn(2, 7))  # the base nn.Linear's own error


# ------------------------------------------------------------------------------------------ attach
def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m)) for n, m in model.named_modules()],
            [(n, p.requires_grad) for n, p in model.named_parameters()],
            {k: v for k, v in model.__dict__.items() if k.startswith("qaa") or k in (
                "print_trainable_parameters", "merge_and_unload")},
            [(n, m.active_adapter, sorted(m.qaa_configs)) for n, m in qaa.qaa_layers(model)])


def assert_unchanged(model, snap):
    sd, types_, grads, attrs, active = snap
    sd2, types2, grads2, attrs2, active2 = snapshot(model)
    assert types2 == types_
    assert sd2.keys() == sd.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    assert grads2 == grads
    assert attrs2.keys() == attrs.keys()
    assert active2 == active


class Big(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(8, 8)
        self.v_proj = nn.Linear(2**21, 2)


class TestAttach:
    def test_bad_arguments(self):
        model = Big()
        snap = snapshot(model)
        with pytest.raises(TypeError, match="QAAConfig"):
            qaa.attach(model, {"n_layers": 2})
        with pytest.raises(TypeError, match="nn.Module"):
            qaa.attach("model", qaa.QAAConfig())
        with pytest.raises(ValueError, match="Candidate names: q_proj, v_proj"):
            qaa.attach(model, qaa.QAAConfig(target_modules=["k_proj"]))
        with pytest.raises(ValueError, match="v_proj: input width 2097152 needs 21 qubits"):
            qaa.attach(model, qaa.QAAConfig())  # q_proj fits, v_proj does not: nothing is wrapped
        with pytest.raises(ValueError, match="n_qubits=2 cannot embed"):
            qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj"], n_qubits=2))
        assert_unchanged(model, snap)
        for bad in ({"n_layers": 0}, {"n_layers": 1.5}, {"ansatz": "x"}, {"readout": "y"}, {"scaling": math.nan},
                    {"dropout": 1.0}, {"n_qubits": 21}, {"dtype": "float16"}, {"target_modules": []},
                    {"init_std": math.inf}):
            with pytest.raises(ValueError):
                qaa.QAAConfig(**bad)

    def test_adapter_name_already_attached(self):
        model = Big()
        qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj"]))
        snap = snapshot(model)
        with pytest.raises(ValueError, match="already attached"):
            qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj"]))
        with pytest.raises(ValueError, match="adapter name"):
            qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj"]), adapter_name="a.b")
        assert_unchanged(model, snap)


# ------------------------------------------------------------------------------------------ save / load
def small_model(seed=0):
    model, _ = qaa.models.tiny_llama(seed=seed, hidden=32, layers=1, heads=2, kv_heads=1, vocab=300)
    return model


def trained_adapter(tmp_path, seed=1, name="default", **cfg):
    model = small_model()
    qaa.attach(model, qaa.QAAConfig(n_layers=2, seed=seed, **cfg), adapter_name=name)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            layer.qaa_out[name].weight.normal_(generator=torch.Generator().manual_seed(seed))
    folder = tmp_path / f"adapter-{seed}"
    qaa.save_adapter(model, str(folder), adapter_name=name)
    return model, folder


def adapter_values(model, name="default"):
    return {n: (l.qaa_theta[name].detach().clone(), l.qaa_out[name].weight.detach().clone())
            for n, l in qaa.qaa_layers(model) if name in l.qaa_configs}


def assert_same_values(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1], b[k][1])


def corrupt(folder, how):
    w = folder / "adapter_model.safetensors"
    c = folder / "adapter_config.json"
    data = w.read_bytes()
    if how == "truncate":
        w.write_bytes(data[: len(data) // 2])
    elif how == "truncate-header":
        w.write_bytes(data[:20])
    elif how == "empty":
        w.write_bytes(b"")
    elif how == "flip-header":
        b = bytearray(data)
        for i in range(10, 40):
            b[i] ^= 0xFF
        w.write_bytes(bytes(b))
    elif how == "flip-header-length":
        b = bytearray(data)
        b[0] ^= 0x5A
        b[3] ^= 0x01
        w.write_bytes(bytes(b))
    elif how == "flip-data":
        b = bytearray(data)
        b[-3] ^= 0x10  # a byte inside the last tensor: still a valid file, wrong values
        w.write_bytes(bytes(b))
    elif how == "garbage-json":
        c.write_text("{ this is not json")
    elif how == "binary-json":
        c.write_bytes(b"\xff\xfe\x00garbage")
    elif how == "json-list":
        c.write_text("[1, 2, 3]")
    elif how == "not-qaa":
        meta = json.loads(c.read_text())
        meta["peft_type"] = "LORA"
        c.write_text(json.dumps(meta))
    elif how == "config-edited":
        meta = json.loads(c.read_text())
        meta["n_layers"] = 3
        c.write_text(json.dumps(meta))
    elif how == "module-entry":
        meta = json.loads(c.read_text())
        first = next(iter(meta["modules"]))
        del meta["modules"][first]["n_params"]
        c.write_text(json.dumps(meta))
    elif how == "missing-weights":
        w.unlink()
    else:
        raise AssertionError(how)


CORRUPTIONS = ["truncate", "truncate-header", "empty", "flip-header", "flip-header-length", "flip-data",
               "garbage-json", "binary-json", "json-list", "not-qaa", "config-edited", "module-entry",
               "missing-weights"]


def rewrite(folder, edit_meta=None, edit_tensors=None):
    """Re-save an adapter with a consistent config, embedded config and checksum, after editing them: the
    loader's checks of the content (not of the file integrity) must catch the edit."""
    from safetensors.torch import load_file, save_file

    from qaa.model import _tensors_digest

    meta = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    text = json.dumps(meta, indent=2, sort_keys=True)
    (folder / "adapter_config.json").write_text(text + "\n")
    save_file(tensors, str(folder / "adapter_model.safetensors"),
              metadata={"qaa_config": text, "qaa_sha256": _tensors_digest(tensors)})


def _first(d):
    return next(iter(d))


CONTENT_ERRORS = {
    "n_params": (lambda m: m["modules"][_first(m["modules"])].update(n_params=99), None, "n_params=99"),
    "missing-key": (lambda m: m["modules"][_first(m["modules"])].pop("d_in"), None, "lacks d_in"),
    "entry-not-object": (lambda m: m["modules"].update({_first(m["modules"]): [1]}), None, "not an object"),
    "no-modules": (lambda m: m.update(modules={}), None, "lists no modules"),
    "unknown-key": (lambda m: m.update(bogus=1), None, "unknown QAA config keys"),
    "bad-value": (lambda m: m.update(n_layers=0), None, "n_layers must be a positive integer"),
    "bad-type": (lambda m: m.update(n_layers="two"), None, "n_layers must be a positive integer"),
    "wrong-F": (None, lambda t: t.update({k: torch.zeros(v.shape[0], v.shape[1] + 1) for k, v in t.items()
                                          if k.endswith("out_proj.weight")}), "expected"),
    "wrong-theta": (None, lambda t: t.update({k: v[:-1].clone() for k, v in t.items() if k.endswith("theta")}),
                    "expected"),
    "extra-tensor": (None, lambda t: t.update(extra=torch.zeros(2)), "unexpected or missing"),
    "int-tensor": (None, lambda t: t.update({k: v.to(torch.int32) for k, v in t.items() if k.endswith("theta")}),
                   "float dtype"),
    "inf-tensor": (None, lambda t: t.update({k: v.fill_(math.inf) for k, v in t.items() if k.endswith("theta")}),
                   "non-finite"),
}


class TestSaveLoad:
    @pytest.mark.parametrize("case", sorted(CONTENT_ERRORS))
    def test_inconsistent_content_raises_and_changes_nothing(self, tmp_path, case):
        _, folder = trained_adapter(tmp_path)
        edit_meta, edit_tensors, message = CONTENT_ERRORS[case]
        rewrite(folder, edit_meta, edit_tensors)
        model = qaa.attach(small_model(), qaa.QAAConfig(n_layers=1), adapter_name="other")
        snap = snapshot(model)
        with pytest.raises(ValueError, match=message):
            qaa.load_adapter(model, str(folder))
        assert_unchanged(model, snap)

    @pytest.mark.parametrize("how", CORRUPTIONS)
    def test_corrupted_files_raise_and_change_nothing(self, tmp_path, how):
        _, folder = trained_adapter(tmp_path)
        corrupt(folder, how)
        # into a base model and into one that already holds another (trainable) adapter
        for model in (small_model(), qaa.attach(small_model(), qaa.QAAConfig(n_layers=1), adapter_name="other")):
            snap = snapshot(model)
            err = FileNotFoundError if how == "missing-weights" else ValueError
            with pytest.raises(err, match=r"adapter|tensor|corrupt|truncated|QAA|module|n_params|missing"):
                qaa.load_adapter(model, str(folder))
            assert_unchanged(model, snap)

    def test_config_and_weights_from_different_saves(self, tmp_path):
        _, a = trained_adapter(tmp_path, seed=1)
        _, b = trained_adapter(tmp_path, seed=2)  # same shapes, other values and seed
        (a / "adapter_model.safetensors").write_bytes((b / "adapter_model.safetensors").read_bytes())
        model = small_model()
        snap = snapshot(model)
        with pytest.raises(ValueError, match="do not belong together"):
            qaa.load_adapter(model, str(a))
        assert_unchanged(model, snap)

    def test_wrong_model_shape(self, tmp_path):
        _, folder = trained_adapter(tmp_path)
        other, _ = qaa.models.tiny_llama(seed=0, hidden=64, layers=1, heads=2, kv_heads=1, vocab=300)
        snap = snapshot(other)
        with pytest.raises(ValueError, match=r"expects \(d_in, d_out\)=\(32, 32\)"):
            qaa.load_adapter(other, str(folder))
        assert_unchanged(other, snap)
        gpt = nn.Sequential(nn.Linear(4, 4))
        snap = snapshot(gpt)
        with pytest.raises(ValueError, match="does not exist in this model"):
            qaa.load_adapter(gpt, str(folder))
        assert_unchanged(gpt, snap)

    def test_non_finite_weights(self, tmp_path):
        model, _ = trained_adapter(tmp_path)
        with torch.no_grad():
            next(qaa.qaa_layers(model))[1].qaa_theta["default"][0] = float("nan")
        qaa.save_adapter(model, str(tmp_path / "nan"))
        fresh = small_model()
        snap = snapshot(fresh)
        with pytest.raises(ValueError, match="non-finite"):
            qaa.load_adapter(fresh, str(tmp_path / "nan"))
        assert_unchanged(fresh, snap)

    def test_name_clash_changes_nothing(self, tmp_path):
        _, folder = trained_adapter(tmp_path)
        model = qaa.attach(small_model(), qaa.QAAConfig(n_layers=1))
        snap = snapshot(model)
        with pytest.raises(ValueError, match="already attached"):
            qaa.load_adapter(model, str(folder))
        assert_unchanged(model, snap)

    def test_failure_while_attaching_is_rolled_back(self, tmp_path, monkeypatch):
        _, folder = trained_adapter(tmp_path)
        model = qaa.attach(small_model(), qaa.QAAConfig(n_layers=1, target_modules=["q_proj"]),
                           adapter_name="other")
        snap = snapshot(model)
        calls = {"n": 0}
        original = qaa.QAALayer.add_adapter

        def flaky(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("simulated failure while attaching")
            return original(self, *a, **k)

        monkeypatch.setattr(qaa.QAALayer, "add_adapter", flaky)
        with pytest.raises(RuntimeError, match="simulated"):
            qaa.load_adapter(model, str(folder), adapter_name="second", is_trainable=True)
        monkeypatch.undo()
        assert_unchanged(model, snap)
        qaa.load_adapter(model, str(folder), adapter_name="second")  # and it still loads afterwards

    @pytest.mark.parametrize("fail_at", ["weights", "config"])
    def test_failed_save_keeps_the_previous_adapter(self, tmp_path, monkeypatch, fail_at):
        model, folder = trained_adapter(tmp_path)
        before = adapter_values(model)
        with torch.no_grad():
            for _, layer in qaa.qaa_layers(model):
                layer.qaa_theta["default"].add_(1.0)
        import safetensors.torch

        if fail_at == "weights":
            real = safetensors.torch.save_file

            def partial_save(tensors, path, metadata=None):
                real(tensors, path, metadata=metadata)
                with open(path, "r+b") as f:  # leave a half-written file behind, then fail
                    f.truncate(os.path.getsize(path) // 2)
                raise OSError("disk full (simulated)")

            monkeypatch.setattr(safetensors.torch, "save_file", partial_save)
        else:
            real_fsync = os.fsync
            calls = {"n": 0}

            def fsync(fd):
                calls["n"] += 1
                if calls["n"] == 2:  # the second file (the config), after the weights were written
                    raise OSError("I/O error (simulated)")
                return real_fsync(fd)

            monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(OSError, match="simulated"):
            qaa.save_adapter(model, str(folder))
        monkeypatch.undo()
        assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
        loaded = qaa.load_adapter(small_model(), str(folder))
        assert_same_values(adapter_values(loaded), before)

    def test_roundtrip_still_exact(self, tmp_path):
        model, folder = trained_adapter(tmp_path, readout="probs", ansatz="ry_rz_ring_ry")
        loaded = qaa.load_adapter(small_model(), str(folder))
        assert_same_values(adapter_values(loaded), adapter_values(model))
        ids = torch.tensor([[1, 5, 9, 11]])
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ CLI
BAD_CLI = [
    (["finetune", "--steps", "0"], "--steps must be >= 1"),
    (["finetune", "--steps", "-5"], "--steps must be >= 1"),
    (["finetune", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["finetune", "--lr", "0"], "--lr must be a finite positive"),
    (["finetune", "--lr", "nan"], "--lr must be a finite positive"),
    (["finetune", "--lr", "inf"], "--lr must be a finite positive"),
    (["finetune", "--max-length", "4"], "--max-length must be >= 8"),
    (["finetune", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["finetune", "--test-fraction", "1.5"], "--test-fraction must be in"),
    (["finetune", "--test-fraction", "0"], "--test-fraction must be in"),
    (["finetune", "--eval-size", "0"], "--eval-size must be >= 1"),
    (["finetune", "--n-layers", "0"], "--n-layers must be >= 1"),
    (["finetune", "--scaling", "nan"], "--scaling must be a finite"),
    (["finetune", "--warmup-steps", "-1"], "--warmup-steps must be >= 0"),
    (["finetune", "--threads", "-2"], "--threads must be >= 0"),
    (["finetune", "--threads", "100000"], "--threads must be <= 1024"),
    (["finetune", "--target-modules", "q_proj,,v_proj"], "--target-modules"),
]


class TestCli:
    @pytest.mark.parametrize("argv,message", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
    def test_bad_options_fail_fast(self, argv, message, capsys, monkeypatch):
        import qaa.models

        def no_load(*a, **k):
            raise AssertionError("the model must not be loaded for a bad option")

        monkeypatch.setattr(qaa.models, "load_base_model", no_load)
        assert qaa.cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"qaa {argv[0]}: error:" in err and message in err

    def test_console_entry_point(self):
        out = subprocess.run([sys.executable, "-m", "qaa.cli", "finetune", "--steps", "0"], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert out.returncode == 2
        assert "qaa finetune: error: --steps must be >= 1, got 0" in out.stderr
        assert "Traceback" not in out.stderr

    def test_unknown_choice_is_argparse_error(self, capsys):
        with pytest.raises(SystemExit) as e:
            qaa.cli.main(["finetune", "--readout", "nope"])
        assert e.value.code == 2
