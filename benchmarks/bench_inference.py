"""Inference cost of a deployed adapter (issue 23, item 7): greedy generation with SmolLM2-135M-Instruct.

    python benchmarks/bench_inference.py [--prompts 16] [--new-tokens 32] [--reps 3] [--batches 1 8]
        [--threads 2] [--out benchmarks/results/inference_cpu]

Models, in one process with the same threads: the base model, LoRA r=8 on q_proj/v_proj merged into the weights
(peft ``merge_and_unload``), the same LoRA unmerged (peft's extra A/B matmuls per adapted layer), and QAA
(registry default: q_proj/v_proj, 4 circuit layers; QAA is not linear in its input, so it cannot be merged into
the base weights). LoRA's B is filled with N(0, 0.01) values (seed 0) so the adapter is not the zero map; the
cost does not depend on the values.

Prompts: the first ``--prompts`` E2E test inputs (qaa.experiments.tasks.load_splits("e2e"), split seed 0)
formatted with qaa.experiments.tasks.format_prompt; left-padded batches. Every generate call is greedy with
``min_new_tokens = max_new_tokens = --new-tokens``, so every model generates the same number of tokens.

Per repetition the models run interleaved (the order rotates each repetition), so machine noise hits them alike;
the median over repetitions is reported. Latency per generated token = wall time of a generate call / new tokens
(one decoding step for the whole batch, prefill included); throughput = generated tokens / wall time. Ratios are
against the base model from the same run. On CUDA (when present) the same is run on the GPU after the CPU
(synchronised timings). The CPU is shared with other jobs: the load average is recorded before and after.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import copy
import json
import platform
import statistics
import time
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ("base", "lora_merged", "lora_unmerged", "qaa")


def build_models(base, tok):
    from qaa.experiments import registry
    from qaa.tuners.baselines import attach_lora

    ctx = registry.RunContext(settings=types.SimpleNamespace(sora_xi=registry.SORA_XI), seed=0, tokenizer=tok)
    lora = attach_lora(copy.deepcopy(base), registry.TARGET_MODULES, r=registry.LORA_R, alpha=registry.LORA_ALPHA)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    merged = copy.deepcopy(lora).merge_and_unload()
    qaa_model = registry.get("qaa").attach(copy.deepcopy(base), ctx)
    models = {"base": base, "lora_merged": merged, "lora_unmerged": lora, "qaa": qaa_model}
    for m in models.values():
        m.eval()
        m.requires_grad_(False)
    return models


def make_batches(tok, prompts, batch, device):
    out = []
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i: i + batch], return_tensors="pt", padding=True)
        out.append({k: v.to(device) for k, v in enc.items()})
    return out


@torch.no_grad()
def run_once(model, batches, new_tokens, pad_id, device):
    """Wall seconds of generating ``new_tokens`` for every batch, and the tokens generated."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    generated = 0
    for b in batches:
        out = model.generate(**b, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=pad_id)
        n_new = out.shape[1] - b["input_ids"].shape[1]
        if n_new != new_tokens:
            raise RuntimeError(f"generated {n_new} tokens, expected {new_tokens}")
        generated += out.shape[0] * n_new
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, generated


def bench(models, tok, prompts, batch_sizes, new_tokens, reps, device, log):
    pad = tok.pad_token_id
    res = {}
    for bs in batch_sizes:
        batches = make_batches(tok, prompts, bs, device)
        calls = len(batches)
        for m in models.values():  # warm-up (one call each, not timed)
            run_once(m, batches[:1], 2, pad, device)
        walls = {k: [] for k in models}
        tokens = {}
        names = list(models)
        for r in range(reps):
            for k in names[r % len(names):] + names[: r % len(names)]:
                w, n = run_once(models[k], batches, new_tokens, pad, device)
                walls[k].append(w)
                tokens[k] = n
        res[bs] = {}
        for k in names:
            med = statistics.median(walls[k])
            res[bs][k] = {"walls_s": walls[k], "median_wall_s": med, "generated_tokens": tokens[k],
                          "ms_per_token_step": 1e3 * med / (calls * new_tokens),
                          "tokens_per_s": tokens[k] / med}
        b0 = res[bs]["base"]
        log(f"\n{device.type}, batch {bs} ({calls} generate calls x {new_tokens} new tokens, {reps} reps, median)")
        log(f"{'model':14s} {'ms/token step':>14s} {'tokens/s':>10s} {'latency vs base':>16s} "
            f"{'throughput vs base':>19s}  walls (s)")
        for k in names:
            d = res[bs][k]
            d["latency_ratio_vs_base"] = d["ms_per_token_step"] / b0["ms_per_token_step"]
            d["throughput_ratio_vs_base"] = d["tokens_per_s"] / b0["tokens_per_s"]
            log(f"{k:14s} {d['ms_per_token_step']:14.2f} {d['tokens_per_s']:10.1f} "
                f"{d['latency_ratio_vs_base']:16.3f} {d['throughput_ratio_vs_base']:19.3f}  "
                + " ".join(f"{w:.2f}" for w in d["walls_s"]))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "inference_cpu"),
                    help="writes OUT.json and OUT.txt")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    from qaa.experiments.base_model import load_base_model
    from qaa.experiments.tasks import format_prompt, load_splits

    load0 = os.getloadavg()
    log("Inference cost, greedy generation, SmolLM2-135M-Instruct float32: base, LoRA r=8 merged, LoRA r=8 "
        "unmerged, QAA (not mergeable).")
    log(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads. The machine is SHARED "
        f"(2 CPU cores, other jobs running): wall times are noisy; compare ratios from the same run. "
        f"Load average at start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}")
    prompts = [format_prompt("e2e", e.input) for e in load_splits("e2e").test[: args.prompts]]
    base, tok = load_base_model()
    tok.padding_side = "left"
    models = build_models(base, tok)
    result = {"settings": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "load_average_start": load0, "note": "shared machine: wall times noisy, ratios from one run"}
    t0 = time.perf_counter()
    result["cpu"] = bench(models, tok, prompts, args.batches, args.new_tokens, args.reps, torch.device("cpu"), log)
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        models = {k: m.to(dev) for k, m in models.items()}
        result["cuda"] = bench(models, tok, prompts, args.batches, args.new_tokens, args.reps, dev, log)
        result["cuda_device"] = torch.cuda.get_device_name(dev)
    else:
        log("\nno CUDA device: GPU figures skipped")
    load1 = os.getloadavg()
    result["load_average_end"] = load1
    result["wall_s"] = time.perf_counter() - t0
    log(f"\nload average at end {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}; benchmark wall time "
        f"{result['wall_s']:.0f} s")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as fh:
        json.dump(result, fh, indent=1)
    with open(args.out + ".txt", "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
