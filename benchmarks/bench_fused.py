"""Self-checking benchmark of the fused CUDA kernel (qaa._engine_cuda in 'fused' mode) on one GPU.

Checks first (any failure exits 1): float32 features and gradients within 1e-4 (relative, norm-wise) of a
float64 run; float64 within 1e-12 of the CPU engine; grad theta against central finite differences of the
float64 loss on a few angles; grad theta bitwise equal over 3 repeats; edge rows (zero, NaN, inf) give finite
features and zero grad_x. Then times forward + backward (engine calls) and the autograd layer
(qaa.engine.qaa_features forward + backward) with CUDA events after warm-up, median and p90 of >= 20, and
prints achieved GFLOP/s against the work model of the kernel, one PASS/FAIL line per issue target and a
JSON file (--out/bench_fused.json). In the same run, for the same data: the per-gate cuStateVec engine (when
built in), torch's dense unitary through autograd (bench_gpu.dense_forward_backward) and the CPU engine (at
B = 1k); ratios are theirs over the fused engine's. Prints the machine and versions first. Floors (H200):
67 TFLOP/s float32 (non-tensor) and 4.8 TB/s HBM; the printed ratios say how far from each floor a run is.
Also the dense-path calibration for GPU: gradient-free forward, fused kernel vs one GEMM with U, L = 4..64.

    python benchmarks/bench_fused.py [--out DIR] [--reps 30]
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gpu import dense_forward_backward, z_signs  # noqa: E402  (the dense autograd reference)

PEAK_TFLOPS = float(os.environ.get("QAA_PEAK_TFLOPS", "67"))   # H200 float32, non-tensor
PEAK_TBS = float(os.environ.get("QAA_PEAK_TBS", "4.8"))        # H200 HBM3e


def timed(fn, reps):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def rel(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    from qaa import engines
    from qaa.engine.cuda import cuda_engine
    from qaa import _engine_cpu as cpu

    eng = cuda_engine()
    dev = torch.device("cuda")
    print(f"machine: {platform.node()} {torch.cuda.get_device_name(0)}; torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}); python {platform.python_version()}")
    print(f"engines: {json.dumps(engines())}")
    eng.set_engine("fused")
    failures, results = [], {}

    def run(circ, theta, x, readout, g, gn=None):
        B, d = x.shape
        F = circ.n_qubits if readout == "z" else circ.dim
        f = torch.empty(B, F, dtype=x.dtype, device=x.device)
        nr = torch.empty(B, dtype=x.dtype, device=x.device)
        gt = torch.empty_like(theta)
        gx = torch.empty_like(x)
        s = torch.cuda.current_stream().cuda_stream
        eng.forward(circ, theta, x, readout, f, nr, s)
        eng.backward(circ, theta, x, readout, g, gn, gt, gx, s)
        return f, nr, gt, gx

    # ---- checks
    torch.manual_seed(0)
    for name in ("ry_cnot_ring", "ry_rz_ring_ry"):
        circ = cpu.Circuit.from_ansatz(name, 10, 4)
        x64 = torch.randn(257, 576, dtype=torch.float64, device=dev)
        x64[1] = 0
        x64[2, 5] = float("nan")
        x64[3, 7] = float("inf")
        th64 = torch.randn(circ.n_params, dtype=torch.float64, device=dev)
        g64 = torch.randn(257, 10, dtype=torch.float64, device=dev)
        r64 = run(circ, th64, x64, "z", g64)
        r32 = run(circ, th64.float(), x64.float(), "z", g64.float())
        for what, a, b in zip(("features", "norms", "grad_theta", "grad_x"), r32, r64):
            keep = torch.isfinite(b)
            e = rel(a[keep], b[keep])
            results[f"{name}_fp32_vs_fp64_{what}"] = e
            if e > 1e-4:
                failures.append(f"{name} fp32 vs fp64 {what}: {e:.2e}")
        if not (torch.isfinite(r64[0]).all() and (r64[3][1:4] == 0).all()):
            failures.append(f"{name}: edge rows")
        # CPU engine parity (float64)
        xc, thc, gc = x64.cpu(), th64.cpu(), g64.cpu()
        fc = torch.empty(257, 10, dtype=torch.float64)
        nc = torch.empty(257, dtype=torch.float64)
        gtc = torch.empty_like(thc)
        gxc = torch.empty_like(xc)
        cpu.forward(circ, thc, xc, "z", fc, nc)
        cpu.backward(circ, thc, xc, "z", gc, None, gtc, gxc)
        for what, a, b in zip(("features", "grad_theta", "grad_x"), (r64[0], r64[2], r64[3]), (fc, gtc, gxc)):
            e = rel(a.cpu(), b)
            results[f"{name}_fp64_vs_cpu_{what}"] = e
            if e > 1e-12:
                failures.append(f"{name} fp64 vs CPU {what}: {e:.2e}")
        # finite differences on a few angles (float64, regular rows only)
        xr, gr = x64[4:], g64[4:]
        base = run(circ, th64, xr, "z", gr)[2]
        for p in (0, circ.n_params // 2, circ.n_params - 1):
            tp, tm = th64.clone(), th64.clone()
            tp[p] += 1e-6
            tm[p] -= 1e-6
            lp = (run(circ, tp, xr, "z", gr)[0] * gr).sum()
            lm = (run(circ, tm, xr, "z", gr)[0] * gr).sum()
            fd = float((lp - lm) / 2e-6)
            if abs(fd - float(base[p])) > 1e-6 * max(1.0, abs(fd)):
                failures.append(f"{name} finite differences p={p}: {fd} vs {float(base[p])}")
        # bitwise repeat
        reps = [run(circ, th64.float(), x64.float(), "z", g64.float())[2] for _ in range(3)]
        if not all(torch.equal(reps[0], r) for r in reps[1:]):
            failures.append(f"{name}: grad theta not bitwise repeatable")

    # ---- timings (float32, ry_cnot_ring, z readout)
    from qaa.engine.function import qaa_features  # autograd layer
    targets = {(10, 32768): 0.82, (10, 1024): 0.10, (12, 32768): 4.0}
    lines = []
    for (n, B), target in targets.items():
        circ = cpu.Circuit.from_ansatz("ry_cnot_ring", n, 4)
        d = 2 ** n - 64
        x = torch.randn(B, d, device=dev)
        th = torch.randn(circ.n_params, device=dev)
        g = torch.randn(B, n, device=dev)
        med, p90 = timed(lambda: run(circ, th, x, "z", g), args.reps)
        thr = th.clone().requires_grad_(True)
        xr = x.clone().requires_grad_(True)

        def layer():
            f = qaa_features(xr, thr, circ, "z")
            f = f[0] if isinstance(f, tuple) else f
            f.backward(g)

        try:
            lmed, lp90 = timed(layer, args.reps)
        except Exception as exc:  # report, do not hide
            lmed = lp90 = float("nan")
            failures.append(f"autograd layer n={n} B={B}: {exc!r}")
        # work model: forward 6 flops per pair per rotation; backward recompute + 16 per pair per rotation
        flops = B * n * 4 * (2 ** (n - 1)) * (6 + 6 + 16)
        # compulsory traffic: x read twice (forward, backward), grad_x written, features written, g read
        nbytes = 4 * B * (3 * d + 2 * n)
        tflops = flops / (med * 1e-3) / 1e12
        gbs = nbytes / (med * 1e-3) / 1e9
        row = {"engine_ms_median": med, "engine_ms_p90": p90, "layer_ms_median": lmed, "layer_ms_p90": lp90,
               "target_ms": target, "tflops": tflops, "gbs": gbs,
               "flop_floor_ms": flops / (PEAK_TFLOPS * 1e12) * 1e3, "byte_floor_ms": nbytes / (PEAK_TBS * 1e12) * 1e3}
        # peers, same data, same run
        info = dict(eng.build_info())
        if info.get("custatevec"):
            eng.set_engine("custatevec")
            try:
                row["custatevec_ms"] = timed(lambda: run(circ, th, x, "z", g), max(5, args.reps // 3))[0]
            finally:
                eng.set_engine("fused")
        zs = z_signs(n, torch.float32, dev)
        gates = list(circ.gates)
        row["torch_dense_ms"] = timed(lambda: dense_forward_backward(gates, n, th, x, "z", g,
                                                                     torch.zeros(B, device=dev), zs), 5)[0]
        if B <= 1024:
            xc, thc, gc = x.cpu(), th.cpu(), g.cpu()
            fc, nc = torch.empty(B, n), torch.empty(B)
            gtc, gxc = torch.empty_like(thc), torch.empty_like(xc)

            def cpu_call():
                cpu.forward(circ, thc, xc, "z", fc, nc)
                cpu.backward(circ, thc, xc, "z", gc, None, gtc, gxc)

            cpu_call()
            t0 = time.perf_counter()
            for _ in range(5):
                cpu_call()
            row["cpu_engine_ms"] = (time.perf_counter() - t0) / 5 * 1e3
        results[f"n{n}_B{B}"] = row
        peers = "; ".join(f"{k[:-3]} {row[k]:.3f} ms ({row[k] / med:.1f}x)" for k in
                          ("custatevec_ms", "torch_dense_ms", "cpu_engine_ms") if k in row)
        print(f"n={n} B={B}: engine {med:.3f} ms (p90 {p90:.3f}), autograd layer {lmed:.3f} ms (p90 {lp90:.3f}); "
              f"{tflops:.1f} TFLOP/s ({row['flop_floor_ms'] / med:.2f} of the FLOP floor), {gbs:.0f} GB/s "
              f"({row['byte_floor_ms'] / med:.2f} of the byte floor); peers: {peers}")
        ok = lmed <= target
        lines.append(f"{'PASS' if ok else 'FAIL'} n={n} L=4 B={B} fp32 fwd+VJP via autograd: {lmed:.3f} ms "
                     f"(engine {med:.3f} ms) target <= {target} ms")
    # dense-path calibration (gradient-free forward, n = 10, B = 8k)
    from qaa import engine as qeng
    xb = torch.randn(8192, 960, device=dev)
    for L in (4, 16, 64):
        circ = cpu.Circuit.from_ansatz("ry_cnot_ring", 10, L)
        th = torch.randn(circ.n_params, device=dev)
        ts = timed(lambda: qeng.forward_features(circ, th, xb, "z", path="state"), 10)[0]
        td = timed(lambda: qeng.forward_features(circ, th, xb, "z", path="dense"), 10)[0]
        results[f"dense_calibration_L{L}"] = {"state_ms": ts, "dense_ms": td}
        print(f"dense calibration n=10 L={L} B=8192 no-grad forward: fused {ts:.3f} ms, dense {td:.3f} ms -> "
              f"{'dense' if td < ts else 'fused'} faster (set QAA_DENSE_GEMM_SPEEDUP_CUDA from these)")
    for f in failures:
        print("CHECK FAILED:", f)
    for ln in lines:
        print(ln)
    print(("PASS" if not failures else "FAIL") + " checks (fp32 vs fp64 1e-4, fp64 vs CPU 1e-12, finite differences, "
          "bitwise grad theta, edge rows)")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_fused.json"), "w") as fh:
        json.dump({"results": results, "failures": failures}, fh, indent=1)
    eng.set_engine("auto")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
