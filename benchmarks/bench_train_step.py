"""One fine-tuning step on SmolLM2-135M-Instruct: QAA vs LoRA (r=8) on q_proj and v_proj, same batch and
sequence length, measured in one process. Prints step time and peak memory of each and QAA's ratios.

    python benchmarks/bench_train_step.py [--batch 8] [--seq 64] [--steps 5] [--random-init] [--json out.json]

--random-init builds the model from SmolLM2-135M's configuration (benchmarks/smollm2_135m_config.json) with
random weights (seed 0): the same architecture and cost, no weights to download or carry (GPU machines).

Memory: on CUDA, the peak of torch.cuda.max_memory_allocated during the step above what was allocated before
it (targets on a GPU: wall <= 1.10x, memory <= 1.05x); on CPU, the bytes autograd saves for the
backward pass (activations, exact) plus trainable parameters, their gradients and AdamW state, and the
sampled peak RSS increase. Methods alternate step by step so that machine noise hits both alike; the median
step time is reported. "PASSED" when both runs produce finite losses and QAA's logits at step 0 equal the base
model's.
"""
from __future__ import annotations

import os

# Sleeping (not spinning) OpenMP workers, before torch loads: on a shared machine spinning workers distort both
# wall and CPU time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import statistics
import time

import torch

import qaa
from qaa.experiments.memory import MemoryMonitor, activation_bytes


def trainable_state_bytes(model):
    n = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return 4 * n  # parameter + gradient + AdamW exp_avg + exp_avg_sq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--random-init", action="store_true",
                    help="SmolLM2-135M architecture with random weights (no model files needed)")
    args = ap.parse_args()
    from qaa.tuners.baselines import attach_lora
    from qaa.experiments.base_model import load_base_model

    if args.random_init:
        from transformers import LlamaConfig, LlamaForCausalLM

        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "smollm2_135m_config.json")) as fh:
            config = LlamaConfig(**json.load(fh))
        torch.manual_seed(0)
        base = LlamaForCausalLM(config).float()
    else:
        base, _ = load_base_model()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    with torch.no_grad():
        ref = base.to(device)(ids).logits
    models = {
        "qaa": qaa.attach(copy.deepcopy(base), qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=4, seed=0)),
        "lora": attach_lora(copy.deepcopy(base), target_modules=("q_proj", "v_proj"), r=8, alpha=16),
    }
    del base
    ok = True
    with torch.no_grad():
        ok &= torch.equal(models["qaa"](ids).logits, ref)
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3) for k, m in models.items()}
    times = {k: [] for k in models}
    cpu_times = {k: [] for k in models}
    act = {}
    peak = {k: 0.0 for k in models}
    cuda_peak = {k: 0.0 for k in models}
    for step in range(args.steps + 1):
        for name, model in models.items():
            model.train()
            mon = MemoryMonitor()
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            with mon:
                t0 = time.perf_counter()
                c0 = time.process_time()
                if step == 0:
                    with activation_bytes(exclude=list(model.parameters())) as saved:
                        loss = model(input_ids=ids, labels=ids).loss
                    act[name] = saved.bytes
                else:
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                opts[name].step()
                opts[name].zero_grad(set_to_none=True)
                if device == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                dc = time.process_time() - c0
            ok &= bool(torch.isfinite(loss))
            if step > 0:  # step 0 warms up (allocator, optimizer state)
                times[name].append(dt)
                cpu_times[name].append(dc)
                peak[name] = max(peak[name], mon.peak_delta_mb)
                if device == "cuda":
                    cuda_peak[name] = max(cuda_peak[name], (torch.cuda.max_memory_allocated() - before) / 2**20)
    print(f"SmolLM2-135M, batch {args.batch} x {args.seq} tokens, device {device}, torch threads "
          f"{torch.get_num_threads()}; median of {args.steps} steps (methods interleaved)")
    rows = {}
    for name, model in models.items():
        tr = sum(p.numel() for p in model.parameters() if p.requires_grad)
        mem = (act[name] + trainable_state_bytes(model)) / 2**20
        rows[name] = {"step_s": statistics.median(times[name]), "step_cpu_s": statistics.median(cpu_times[name]),
                      "trainable": tr, "activation_mb": act[name] / 2**20,
                      "training_state_mb": mem, "peak_rss_delta_mb": peak[name],
                      "cuda_step_peak_mb": cuda_peak[name]}
        print(f"  {name:5s} step {rows[name]['step_s']:.3f} s wall, {rows[name]['step_cpu_s']:.3f} s CPU | trainable {tr:,d} | activations "
              f"{act[name] / 2**20:.1f} MiB | activations + trainable state {mem:.1f} MiB | peak RSS delta "
              f"{peak[name]:.0f} MiB")
    rt = rows["qaa"]["step_s"] / rows["lora"]["step_s"]
    rc = rows["qaa"]["step_cpu_s"] / rows["lora"]["step_cpu_s"]
    rm = rows["qaa"]["training_state_mb"] / rows["lora"]["training_state_mb"]
    print(f"QAA / LoRA: step time {rt:.3f}x wall, {rc:.3f}x CPU (target <= 1.15), memory {rm:.3f}x (target <= 1.05)")
    if device == "cuda":
        gm = cuda_peak["qaa"] / max(cuda_peak["lora"], 1e-9)
        print(f"  cuda step peak memory: QAA {cuda_peak['qaa']:.1f} MiB, LoRA {cuda_peak['lora']:.1f} MiB ({gm:.3f}x)")
        print(f"{'PASS' if rt <= 1.10 else 'FAIL'} GPU train step QAA/LoRA wall {rt:.3f}x (target <= 1.10)")
        print(f"{'PASS' if gm <= 1.05 else 'FAIL'} GPU train step QAA/LoRA peak memory {gm:.3f}x (target <= 1.05)")
    print("PASSED" if ok else "FAILED")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "time_ratio": rt, "cpu_time_ratio": rc, "memory_ratio": rm, "batch": args.batch, "seq": args.seq,
                       "device": device}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
