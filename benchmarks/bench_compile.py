"""Training-step time of a tiny Llama under ``torch.compile`` against eager, with QAA attached and plain, in one
run: what the compiler gains on a QAA model next to what it gains on the same model without adapters.

A step is ``zero_grad``, forward with labels, ``backward`` (the optimizer update is the same eager code either
way, so it is left out). The QAA model trains only its adapters (base frozen, QAA on q_proj / v_proj); the
plain model trains every parameter (ordinary fine-tuning). Both are compiled with ``fullgraph=True`` (the QAA
branch runs as the ``qaa::features`` custom operator, no graph break). Eager and compiled steps alternate, so
drift in the machine's load hits both alike; the median of ``--steps`` steps is reported.

    python benchmarks/bench_compile.py [--hidden 64] [--layers 2] [--batch 8] [--seq 32] [--steps 20] [--threads 1 0]

Prints the step times and the speedups (eager / compiled) at each ``--threads`` setting, checks that the
compiled loss and gradients equal eager's (1e-5), and prints "PASSED" when they do and the QAA model's gain
(speedup - 1) is at least half the plain model's at the first setting, else "FAILED" (exit status 1).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from support import tiny_llama  # noqa: E402  (the offline tiny Llama of the tests)

import qaa  # noqa: E402


def step(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.loss.detach()


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def check(name, model, ids):
    """The compiled model of ``model`` and (max |loss diff|, max |grad diff|) of its first step against eager."""
    compiled = torch.compile(model, fullgraph=True)
    t0 = time.perf_counter()
    loss_c = step(compiled, ids)  # compiles forward and backward
    print(f"{name}: compiled in {time.perf_counter() - t0:.1f} s", flush=True)
    g_c = grads(model)
    loss_e = step(model, ids)
    g_e = grads(model)
    dgrad = max(float((g_c[n] - g_e[n]).abs().max()) for n in g_e)
    return compiled, float((loss_c - loss_e).abs()), dgrad


def timing(model, compiled, ids, steps):
    """(eager s/step, compiled s/step): medians of alternating steps."""
    for _ in range(2):  # warm-up of both
        step(model, ids)
        step(compiled, ids)
    eager_t, comp_t = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(model, ids)
        eager_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        step(compiled, ids)
        comp_t.append(time.perf_counter() - t0)
    return statistics.median(eager_t), statistics.median(comp_t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--qaa-layers", type=int, default=4, help="ansatz layers L of the adapter")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0],
                    help="torch and engine thread counts to time, in turn (0: the defaults). The target is checked "
                         "at the first: on a shared, loaded machine every parallel region of a multi-threaded step "
                         "can wait a scheduler slice for a descheduled thread, which swamps a tiny model's step")
    args = ap.parse_args(argv)
    default_threads = torch.get_num_threads()

    ids = torch.randint(3, 250, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    plain, _ = tiny_llama(hidden=args.hidden, layers=args.layers)
    plain.train()
    for p in plain.parameters():
        p.requires_grad_(True)
    with_qaa, _ = tiny_llama(hidden=args.hidden, layers=args.layers)
    qaa.attach(with_qaa, qaa.QAAConfig(n_layers=args.qaa_layers, seed=0))
    with torch.no_grad():  # P away from zero, so the branch is part of every gradient
        g = torch.Generator().manual_seed(1)
        for _, layer in qaa.qaa_layers(with_qaa):
            w = layer.qaa_out["default"].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.1)
    with_qaa.train()

    print(f"tiny Llama hidden={args.hidden} layers={args.layers}, batch {args.batch} x {args.seq} tokens, "
          f"torch {torch.__version__}; QAA L={args.qaa_layers} on q_proj/v_proj (base frozen); plain: every "
          f"parameter trained")
    models = {name: (model, *check(name, model, ids)) for name, model in (("plain", plain), ("qaa", with_qaa))}
    agree = all(dl <= 1e-5 and dg <= 1e-5 for _, _, dl, dg in models.values())
    met = []
    for threads in args.threads:
        torch.set_num_threads(threads if threads > 0 else default_threads)
        qaa.engine.set_num_threads(threads)
        print(f"\n{torch.get_num_threads()} thread(s) (torch and engine)")
        print(f"{'model':<6} {'eager ms':>9} {'compiled ms':>12} {'speedup':>8} {'|dloss|':>9} {'|dgrad|':>9}")
        speed = {}
        for name, (model, compiled, dl, dg) in models.items():
            e, c = timing(model, compiled, ids, args.steps)
            speed[name] = e / c
            print(f"{name:<6} {e * 1e3:9.2f} {c * 1e3:12.2f} {e / c:8.2f} {dl:9.1e} {dg:9.1e}")
        met.append((speed["qaa"] - 1) >= 0.5 * (speed["plain"] - 1))
        print(f"QAA gain {speed['qaa'] - 1:+.2f} vs plain gain {speed['plain'] - 1:+.2f} (target: at least half): "
              f"{'met' if met[-1] else 'missed'}")
    print(f"\ncompiled equals eager (1e-5): {agree}")
    ok = agree and met[0]
    print("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
