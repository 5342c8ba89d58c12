"""Forward + VJP of the default QAA circuit through qaa's engine and through peers, in one process, on the same
inputs: PennyLane default.qubit (torch interface, backprop, parameter broadcasting), PennyLane lightning.qubit
(adjoint differentiation) and a pure-torch gate-by-gate statevector. Prints microseconds per state, our
ratio to each peer, the floating-point limit of this machine, and checks that every result agrees.

Also calibrates the switch between the engine's per-state path and its dense-matrix path (gradient-free
evaluation) by timing both.

    python benchmarks/bench_engine.py [--n 10] [--layers 4] [--batch 1024] [--peer-batch 128] [--json out.json]

Every ratio compares equal batches: each peer runs `--peer-batch` states (lightning.qubit a quarter of them)
and is compared with the engine timed at that same batch (the engine's per-state cost depends on the batch).

Exit status 0 and "PASSED" when every peer agrees with the engine (float32 tolerances), else "FAILED".
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

import qaa
from qaa import engine


def timeit(fn, reps=3):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def ours(circ, theta, x, g):
    th = theta.clone().requires_grad_(True)
    xx = x.clone().requires_grad_(True)
    feats, _ = qaa.qaa_features(xx, th, circ, "z")
    (feats * g).sum().backward()
    return feats.detach(), th.grad, xx.grad


def torch_gates(n, layers, theta, x, g):
    """Pure-torch statevector: RY as 2x2 mixing of state halves, the CNOT ring as an index permutation."""
    N = 2 ** n
    th = theta.clone().requires_grad_(True)
    xx = x.clone().requires_grad_(True)
    B, d = x.shape
    psi = torch.nn.functional.pad(xx, (0, N - d))
    psi = psi / psi.norm(dim=1, keepdim=True)
    idx = torch.arange(N)
    perm = idx.clone()
    for q in range(n):  # gather form of CNOT(q, q+1 mod n), composed in gate order
        c, t = 1 << (n - 1 - q), 1 << (n - 1 - ((q + 1) % n))
        f = torch.where((idx & c) != 0, idx ^ t, idx)
        perm = perm[f]
    for l in range(layers):
        for q in range(n):
            cs, sn = torch.cos(th[l * n + q] / 2), torch.sin(th[l * n + q] / 2)
            v = psi.view(B, 2 ** q, 2, N >> (q + 1))
            a0, a1 = v[:, :, 0], v[:, :, 1]
            psi = torch.stack((cs * a0 - sn * a1, sn * a0 + cs * a1), dim=2).reshape(B, N)
        psi = psi[:, perm]
    p = (psi * psi).view(B, *([2] * n))
    z = torch.stack([p.select(q + 1, 0).sum(dim=tuple(range(1, n))) - p.select(q + 1, 1).sum(dim=tuple(range(1, n)))
                     for q in range(n)], dim=1)
    (z * g).sum().backward()
    return z.detach(), th.grad, xx.grad


def pennylane_qnode(n, layers, device_name, diff_method):
    import pennylane as qml

    dev = qml.device(device_name, wires=n)

    @qml.qnode(dev, interface="torch", diff_method=diff_method)
    def node(v, th):
        qml.AmplitudeEmbedding(v, wires=range(n), normalize=True, pad_with=0.0)
        for l in range(layers):
            for q in range(n):
                qml.RY(th[l * n + q], wires=q)
            for q in range(n):
                qml.CNOT(wires=[q, (q + 1) % n])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    return node


def pl_default(n, layers, theta, x, g):
    node = pennylane_qnode(n, layers, "default.qubit", "backprop")
    th = theta.double().clone().requires_grad_(True)
    xx = x.double().clone().requires_grad_(True)
    z = torch.stack(node(xx, th), dim=1)  # parameter broadcasting over the batch
    (z * g.double()).sum().backward()
    return z.detach().float(), th.grad.float(), xx.grad.float()


def pl_lightning(n, layers, theta, x, g):
    node = pennylane_qnode(n, layers, "lightning.qubit", "adjoint")
    th = theta.double().clone().requires_grad_(True)
    zs = []
    for v in x.double():  # adjoint differentiation takes one state at a time; no input gradient (StatePrep)
        zs.append(torch.stack(node(v, th)))
    z = torch.stack(zs)
    (z * g.double()).sum().backward()
    return z.detach().float(), th.grad.float(), None


def machine_peak_gflops():
    """Peak float32 GFLOP/s: cores x clock x 32 flops/cycle (two 256-bit FMA pipes: 2 x 8 lanes x 2 flops)."""
    mhz = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    mhz = float(line.split(":")[1])
                    break
    except OSError:
        pass
    ghz = (mhz or 2500.0) / 1000
    cores = os.cpu_count() or 1
    return cores * ghz * 32, cores, ghz


def calibrate_dense(n, reps=3):
    """No-grad forward: per-state vs dense path across layers at B = 4 * 2^n."""
    rows = []
    x = torch.randn(4 * 2 ** n, 2 ** n - 2 ** n // 4)
    for layers in (4, 16, 64):
        circ = engine.build_circuit("ry_cnot_ring", n, layers)
        th = torch.randn(circ.n_params)
        ts = timeit(lambda: engine.forward_features(circ, th, x, "z", path="state"), reps)
        td = timeit(lambda: engine.forward_features(circ, th, x, "z", path="dense"), reps)
        rows.append({"layers": layers, "state_us": ts / len(x) * 1e6, "dense_us": td / len(x) * 1e6})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--peer-batch", type=int, default=128,
                    help="states run through the PennyLane peers (they are slow); timings are per state")
    ap.add_argument("--skip-calibration", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    n, L, B = args.n, args.layers, args.batch
    d = 2 ** n - 2 ** n // 4 if n > 2 else 2 ** n
    torch.manual_seed(0)
    circ = engine.build_circuit("ry_cnot_ring", n, L)
    theta = torch.randn(circ.n_params) * 0.5
    x = torch.randn(B, d)
    g = torch.randn(B, n)
    print(f"QAA circuit: n={n} qubits, L={L} layers of RY + CNOT ring, d={d}, batch {B}, float32; "
          f"torch threads {torch.get_num_threads()}, engine threads {engine.get_num_threads()}")

    results = {}   # name -> (us per state, batch it was timed at)
    ours_at = {}   # batch -> the engine's us per state at that batch: every ratio compares equal batches

    def ours_us(b):
        if b not in ours_at:
            ours_at[b] = timeit(lambda: ours(circ, theta, x[:b], g[:b])) / b * 1e6
        return ours_at[b]

    results["qaa engine"] = (ours_us(B), B)
    ref_z, ref_gt, ref_gx = ours(circ, theta, x, g)
    t_torch = timeit(lambda: torch_gates(n, L, theta, x, g))
    results["pure torch (gate by gate)"] = (t_torch / B * 1e6, B)
    tz, tgt, tgx = torch_gates(n, L, theta, x, g)
    ok = True

    def agree(name, z, gt, gx, sub):
        nonlocal ok
        rz, rgt, rgx = ours(circ, theta, x[:sub], g[:sub])
        ez = (z - rz).abs().max().item()
        egt = ((gt - rgt).norm() / rgt.norm()).item()
        egx = ((gx - rgx).norm() / rgx.norm()).item() if gx is not None else 0.0
        good = ez < 1e-4 and egt < 1e-3 and egx < 1e-3
        ok &= good
        print(f"  agreement {name:<28} max|dz| {ez:.1e}  rel grad_theta {egt:.1e}  rel grad_x {egx:.1e}  "
              f"{'ok' if good else 'MISMATCH'}")

    print("checks:")
    agree("pure torch", tz, tgt, tgx, B)
    sub = min(args.peer_batch, B)
    try:
        t_pl = timeit(lambda: pl_default(n, L, theta, x[:sub], g[:sub]), reps=1)
        results["PennyLane default.qubit (backprop)"] = (t_pl / sub * 1e6, sub)
        agree("PennyLane default.qubit", *pl_default(n, L, theta, x[:sub], g[:sub]), sub)
        sub_l = max(1, sub // 4)
        t_lt = timeit(lambda: pl_lightning(n, L, theta, x[:sub_l], g[:sub_l]), reps=1)
        results["PennyLane lightning.qubit (adjoint)"] = (t_lt / sub_l * 1e6, sub_l)
        agree("PennyLane lightning.qubit", *pl_lightning(n, L, theta, x[:sub_l], g[:sub_l]), sub_l)
    except ImportError:
        print("  PennyLane not installed: its rows are skipped")

    print(f"\nforward + VJP (grad theta and grad x), microseconds per state; each ratio against the engine timed "
          f"at the peer's own batch:")
    ratios = {}
    for name, (us, b) in results.items():
        if name == "qaa engine":
            print(f"  {name:<38} {us:10.2f} us   batch {b}")
            continue
        ratios[name] = us / ours_us(b)
        print(f"  {name:<38} {us:10.2f} us   batch {b}; qaa engine at batch {b}: {ours_us(b):8.2f} us "
              f"(qaa is {ratios[name]:7.1f}x faster)")
    rotations = n * L
    flops = 6 * rotations * 2 ** (n - 1) * 2 + 16 * rotations * 2 ** (n - 1)
    peak, cores, ghz = machine_peak_gflops()
    limit_us = flops / (peak * 1e3)
    print(f"\nfloating-point limit: {flops / 1e3:.0f} kflop per state (forward 6 flops per amplitude pair per "
          f"rotation; the backward recomputes the forward and adds 16 per pair per rotation) on {cores} cores x "
          f"{ghz:.2f} GHz x 32 float32 flop/cycle (AVX2, two FMA pipes) = {peak:.0f} GFLOP/s -> "
          f"{limit_us:.2f} us per state; the engine runs at {results['qaa engine'][0] / limit_us:.1f}x that limit")
    calib = None
    if not args.skip_calibration:
        calib = calibrate_dense(n)
        print("\ndense-matrix vs per-state path (no-grad forward, batch 4*2^n), us per state:")
        for row in calib:
            print(f"  L={row['layers']:3d}  per-state {row['state_us']:9.2f}  dense {row['dense_us']:9.2f}  "
                  f"-> {'dense' if row['dense_us'] < row['state_us'] else 'per-state'} faster")
    print("PASSED" if ok else "FAILED")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": n, "layers": L, "batch": B, "us_per_state": {k: v[0] for k, v in results.items()},
                       "timed_batch": {k: v[1] for k, v in results.items()}, "engine_us_at_batch": ours_at,
                       "ratios_equal_batch": ratios, "peak_gflops": peak,
                       "limit_us": limit_us, "dense_calibration": calib, "ok": ok,
                       "machine": platform.processor() or platform.machine()}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
