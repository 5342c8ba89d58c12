#!/usr/bin/env python3
"""GPU benchmark of the QAA branch: fused forward + adjoint VJP, three ways.

  gpu_engine   qaa._engine_cuda (cuStateVec): ``forward`` then ``backward`` (states recomputed, adjoint sweep),
               workspace allocated once by torch (qaa.engine.cuda.workspace_for)
  cpu_engine   qaa._engine_cpu (OpenMP, all cores) on the same data in host memory
  torch_dense  pure torch on the GPU: U(theta) built from the gates on the identity (differentiable),
               psi = psi0 @ U^T, readout, ``loss.backward()`` through autograd

for n = 10..12 qubits and batches 1k..32k (float32 by default). Self-checking (cuQuantum-sample style): before
timing, each n is checked in float64 (GPU engine against the CPU engine and against torch autograd through the
dense path: features, grad_theta, grad_x), and every timed float32 run is compared with the dense path. Prints a
table, writes ``bench_gpu.json`` under --out (default: $OUT, else ./gpu_results), prints PASSED or FAILED and
exits 1 on failure.

Usage: python benchmarks/bench_gpu.py [--qubits 10 11 12] [--batches 1024 4096 16384 32768] [--layers 4]
       [--ansatz ry_cnot_ring] [--readout z] [--dtype float32] [--reps 5] [--cpu-max-amplitudes 16777216]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

#: Device of the GPU runs (a module constant so the script's logic can be smoke-tested without a GPU).
DEVICE = "cuda"
COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
NAMES = {torch.float32: "float32", torch.float64: "float64"}


# ---------------------------------------------------------------------------------------------------------
# Pure-torch dense path (autograd reference)
# ---------------------------------------------------------------------------------------------------------
def _gate_matrix(kind: str, t: torch.Tensor, cdtype) -> torch.Tensor:
    """2x2 matrix of RX/RY/RZ(t) (PennyLane conventions), differentiable in t."""
    c, s = torch.cos(t / 2), torch.sin(t / 2)
    z = torch.zeros_like(c)
    if kind == "RY":  # [[c, -s], [s, c]]
        return torch.stack([torch.stack([c, -s]), torch.stack([s, c])]).to(cdtype)
    re = torch.stack([torch.stack([c, z]), torch.stack([z, c])])
    if kind == "RX":  # [[c, -i s], [-i s, c]]
        return torch.complex(re, torch.stack([torch.stack([z, -s]), torch.stack([-s, z])]))
    if kind == "RZ":  # diag(c - i s, c + i s)
        return torch.complex(re, torch.stack([torch.stack([-s, z]), torch.stack([z, s])]))
    raise ValueError(kind)


def unitary_transposed(gates, n: int, theta: torch.Tensor) -> torch.Tensor:
    """S = U(theta)^T (so that psi = psi0 @ S), differentiable in theta. Row j of S is U e_j."""
    N = 2**n
    cdtype = COMPLEX[theta.dtype]
    S = torch.eye(N, dtype=cdtype, device=theta.device)
    idx = torch.arange(N, device=theta.device)
    for name, w0, w1, p in gates:
        if name in ("RX", "RY", "RZ"):
            m = _gate_matrix(name, theta[p], cdtype)
            v = S.reshape(N, 2**w0, 2, 2 ** (n - w0 - 1))
            S = torch.einsum("ab,mxby->mxay", m, v).reshape(N, N)
        elif name == "CNOT":
            cbit, tbit = 1 << (n - 1 - w0), 1 << (n - 1 - w1)
            perm = torch.where((idx & cbit) != 0, idx ^ tbit, idx)
            S = S.index_select(1, perm)
        elif name == "CZ":
            ab = (1 << (n - 1 - w0)) | (1 << (n - 1 - w1))
            sign = torch.where((idx & ab) == ab, -1.0, 1.0).to(cdtype)
            S = S * sign
        else:
            raise ValueError(name)
    return S


def z_signs(n: int, dtype, device) -> torch.Tensor:
    """[N, n] matrix of (1 - 2 bit_q(k)), wire 0 the most significant bit."""
    k = torch.arange(2**n, device=device)
    bits = torch.stack([(k >> (n - 1 - q)) & 1 for q in range(n)], dim=1)
    return (1 - 2 * bits).to(dtype)


def dense_forward_backward(gates, n, theta, x, readout, gf, gn, zs):
    """Returns (features, norms, grad_theta, grad_x) through torch autograd."""
    th = theta.detach().clone().requires_grad_(True)
    xx = x.detach().clone().requires_grad_(True)
    N, d = 2**n, x.shape[1]
    norms = torch.linalg.vector_norm(xx, dim=1)
    psi0 = torch.nn.functional.pad(xx / norms[:, None], (0, N - d)).to(COMPLEX[x.dtype])
    psi = psi0 @ unitary_transposed(gates, n, th)
    probs = psi.real.square() + psi.imag.square()
    feats = probs @ zs if readout == "z" else probs
    loss = (feats * gf).sum() + (norms * gn).sum()
    loss.backward()
    return feats.detach(), norms.detach(), th.grad, xx.grad


# ---------------------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------------------
def engine_forward_backward(eng, circ, theta, x, readout, gf, gn, stream=0, workspace=None):
    B, d = x.shape
    F = circ.n_qubits if readout == "z" else circ.dim
    dev, dt = x.device, x.dtype
    feats, norms = torch.empty(B, F, dtype=dt, device=dev), torch.empty(B, dtype=dt, device=dev)
    gt, gx = torch.empty(circ.n_params, dtype=dt, device=dev), torch.empty(B, d, dtype=dt, device=dev)
    kw = {} if workspace is None else {"workspace": workspace}
    eng.forward(circ, theta, x, readout, feats, norms, stream, **kw)
    eng.backward(circ, theta, x, readout, gf, gn, gt, gx, stream, **kw)
    return feats, norms, gt, gx


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return (a - b).norm().item() / max(b.norm().item(), 1e-300)


def time_gpu(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    return statistics.median(ms)


def time_cpu(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


def make_data(circ, B, d, readout, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    F = circ.n_qubits if readout == "z" else circ.dim
    theta = (0.5 * torch.randn(circ.n_params, generator=g, dtype=torch.float64)).to(dtype)
    x = torch.randn(B, d, generator=g, dtype=torch.float64).to(dtype)
    gf = torch.randn(B, F, generator=g, dtype=torch.float64).to(dtype)
    gn = torch.randn(B, generator=g, dtype=torch.float64).to(dtype)
    return [t.to(device) for t in (theta, x, gf, gn)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qubits", type=int, nargs="+", default=[10, 11, 12])
    ap.add_argument("--batches", type=int, nargs="+", default=[1024, 4096, 16384, 32768])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--ansatz", default="ry_cnot_ring")
    ap.add_argument("--readout", default="z", choices=["z", "probs"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cpu-max-amplitudes", type=int, default=1 << 24,
                    help="time the CPU engine only when batch * 2^n is at most this (bounds the run time)")
    ap.add_argument("--check-batch", type=int, default=512, help="batch of the float64 correctness check")
    ap.add_argument("--tol64", type=float, default=1e-9, help="float64 check: GPU engine vs CPU engine and dense")
    ap.add_argument("--tol32", type=float, default=1e-3, help="timed float32 runs: GPU engine vs dense path")
    ap.add_argument("--out", default=os.environ.get("OUT") or "./gpu_results")
    args = ap.parse_args()

    if not torch.cuda.is_available():
        print("bench_gpu: torch.cuda is not available (no GPU or a CPU-only torch build)\nFAILED")
        return 1
    from qaa import _engine_cpu as cpu
    from qaa.engine.cuda import cuda_engine, workspace_for

    cuda = cuda_engine()
    dev = torch.device(DEVICE)
    dtype = getattr(torch, args.dtype)
    os.makedirs(args.out, exist_ok=True)
    results = {
        "benchmark": "qaa fused forward + adjoint VJP",
        "device": torch.cuda.get_device_name(dev),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": cpu.get_num_threads(),
        "ansatz": args.ansatz, "layers": args.layers, "readout": args.readout, "dtype": args.dtype,
        "checks": [], "runs": [],
    }
    ok = True
    stream = torch.cuda.current_stream().cuda_stream

    for n in args.qubits:
        circ = cpu.Circuit.from_ansatz(args.ansatz, n, args.layers)
        gates = circ.gates
        N = 2**n
        d = N - 7 if N > 8 else N  # exercise the zero padding
        zs64 = z_signs(n, torch.float64, dev)
        # ---- float64 correctness check: GPU engine vs CPU engine vs torch autograd (dense) ----
        th, x, gf, gn = make_data(circ, args.check_batch, d, args.readout, torch.float64, dev, seed=n)
        got = engine_forward_backward(cuda, circ, th, x, args.readout, gf, gn, stream)
        ref_cpu = engine_forward_backward(cpu, circ, th.cpu(), x.cpu(), args.readout, gf.cpu(), gn.cpu())
        ref_dense = dense_forward_backward(gates, n, th, x, args.readout, gf, gn, zs64)
        names = ("features", "norms", "grad_theta", "grad_x")
        errs_cpu = {k: rel_err(a, b) for k, a, b in zip(names, got, ref_cpu)}
        errs_dense = {k: rel_err(a, b) for k, a, b in zip(names, got, ref_dense)}
        check_ok = max(errs_cpu.values()) <= args.tol64 and max(errs_dense.values()) <= args.tol64
        ok &= check_ok
        results["checks"].append({"n": n, "batch": args.check_batch, "dtype": "float64", "vs_cpu_engine": errs_cpu,
                                  "vs_torch_dense": errs_dense, "tol": args.tol64, "ok": check_ok})
        print(f"[check] n={n} float64: max rel err vs CPU engine {max(errs_cpu.values()):.2e}, vs torch dense "
              f"{max(errs_dense.values()):.2e} -> {'ok' if check_ok else 'MISMATCH'}", flush=True)
        del th, x, gf, gn, got, ref_dense

        zs = z_signs(n, dtype, dev)
        for B in args.batches:
            th, x, gf, gn = make_data(circ, B, d, args.readout, dtype, dev, seed=1000 * n + B)
            run = {"n": n, "batch": B, "d": d, "params": circ.n_params, "gates": len(gates)}
            ws = workspace_for("backward", circ, B, dtype, dev)
            run["gpu_engine_workspace_mb"] = 0.0 if ws is None else ws.numel() / 2**20
            gpu_fn = lambda: engine_forward_backward(cuda, circ, th, x, args.readout, gf, gn, stream, ws)  # noqa: E731
            run["gpu_engine_ms"] = time_gpu(gpu_fn, args.reps)
            try:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                dense_fn = lambda: dense_forward_backward(gates, n, th, x, args.readout, gf, gn, zs)  # noqa: E731
                run["torch_dense_ms"] = time_gpu(dense_fn, args.reps)
                run["torch_dense_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
                errs = {k: rel_err(a, b) for k, a, b in zip(names, gpu_fn(), dense_fn())}
                run["rel_err_vs_dense"] = errs
                run["ok"] = max(errs.values()) <= args.tol32 if dtype == torch.float32 else max(errs.values()) <= 1e-9
            except torch.cuda.OutOfMemoryError:
                run["torch_dense_ms"] = None
                run["note"] = "torch dense path: out of GPU memory"
                run["ok"] = True
                torch.cuda.empty_cache()
            ok &= run["ok"]
            if B * N <= args.cpu_max_amplitudes:
                xc, thc, gfc, gnc = x.cpu(), th.cpu(), gf.cpu(), gn.cpu()
                cpu_fn = lambda: engine_forward_backward(cpu, circ, thc, xc, args.readout, gfc, gnc)  # noqa: E731
                run["cpu_engine_ms"] = time_cpu(cpu_fn, reps=max(1, min(args.reps, 3)), warmup=1)
            else:
                run["cpu_engine_ms"] = None
            for k in ("torch_dense_ms", "cpu_engine_ms"):
                if run.get(k):
                    run["speedup_vs_" + k[:-3]] = run[k] / run["gpu_engine_ms"]
            results["runs"].append(run)

            def fmt(v):
                return f"{v:10.2f}" if isinstance(v, float) else f"{'-':>10}"

            print(f"n={n:2d} B={B:6d}  gpu_engine {fmt(run['gpu_engine_ms'])} ms  torch_dense "
                  f"{fmt(run.get('torch_dense_ms'))} ms  cpu_engine {fmt(run.get('cpu_engine_ms'))} ms  "
                  f"engine vs dense {fmt(run.get('speedup_vs_torch_dense'))}x  vs cpu "
                  f"{fmt(run.get('speedup_vs_cpu_engine'))}x  "
                  f"{'ok' if run['ok'] else 'MISMATCH ' + json.dumps(run.get('rel_err_vs_dense'))}", flush=True)
            del th, x, gf, gn, ws
            torch.cuda.empty_cache()

    results["passed"] = bool(ok)
    path = os.path.join(args.out, "bench_gpu.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {path}")
    print("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
