"""Memory account of one training step per method (issue 23, item 3: "up to 37% less GPU memory").

    python benchmarks/memory_account.py [--lengths 64 256] [--batches 1 8] [--extrap-configs 1x256 8x64]
        [--json benchmarks/results/memory_account.json]

Part 1, measured: SmolLM2-135M-Instruct (qaa.experiments.base_model.load_base_model, offline), each method
attached through qaa.experiments.registry (qaa, lora_r4, lora = r 8, prefix, sora, full), one training step
(forward, backward, AdamW step) on a batch of random token ids (seed 0, every position a target) for every
batch size x sequence length; qaa.experiments.memory.memory_account gives bytes per component: trainable
parameters, gradients, AdamW state (read from the optimizer after a real step), saved-for-backward activations
(each storage once), frozen parameters and buffers, and their sum. These are deterministic byte counts, not
timings: the machine (2 shared CPU cores) does not change them. On CPU there is no exact peak (no
torch.cuda.max_memory_allocated); on CUDA it is reported too.

Part 2, extrapolated: for SmolLM2-360M, SmolLM2-1.7B and a 7B Llama shape, randomly initialised
LlamaForCausalLM models of the real width with 1 and 2 decoder layers are measured the same way; per layer =
account(2 layers) - account(1 layer), component by component, and total(L) = account(1) + (L - 1) x per layer.
The rule is checked against the whole 135M model's measured account (its 1- and 2-layer models built from
benchmarks/smollm2_135m_config.json); the relative error is printed. Where full fine-tuning's AdamW state would
not fit this machine's memory (--analytic-full-state, default the 7B shape) that one component is computed in
closed form, 2 x the trainable parameter bytes + 4 bytes (AdamW's float32 step counter) per parameter tensor,
as tests/experiments/test_memory.py checks memory_account measures it; the JSON marks it "analytic".

Verdict: "up to 37% less memory" holds against a baseline where QAA's total <= 0.63 x the baseline's total
(same shape, batch and length). Printed for the total (everything the step holds, frozen weights included) and
for the training state alone (total minus frozen weights and buffers).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import copy
import gc
import json
import platform
import time
import types

import torch

from qaa.experiments import registry
from qaa.experiments.memory import ACCOUNT_COMPONENTS, memory_account

METHODS = ("qaa", "lora_r4", "lora", "prefix", "sora", "full")
BASELINES = METHODS[1:]
CLAIM = 0.63  # "up to 37% less": QAA total <= 0.63 x baseline total
MiB = 2 ** 20
HERE = os.path.dirname(os.path.abspath(__file__))

#: Shapes to extrapolate to (public configs of SmolLM2-360M / 1.7B; the 7B Llama shape of Touvron et al. 2023).
SHAPES = {
    "SmolLM2-360M": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                         intermediate_size=2560, vocab_size=49152, tie_word_embeddings=True),
    "SmolLM2-1.7B": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                         intermediate_size=8192, vocab_size=49152, tie_word_embeddings=True),
    "Llama-7B": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                     intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False),
}


def make_batch(vocab: int, batch: int, length: int) -> dict:
    ids = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def context(tokenizer, vocab: int) -> registry.RunContext:
    ids = torch.randint(3, vocab, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    return registry.RunContext(settings=types.SimpleNamespace(sora_xi=registry.SORA_XI), seed=0,
                               tokenizer=tokenizer, train_pairs=[(ids, ids)], pad_id=0, batch_size=1)


def account(name, model, ctx, batch, optimizer="adamw"):
    """memory_account of ``model`` with the method's extra loss term (SoRA's L1, when configured)."""
    method = registry.get(name)
    extra = method.hooks(model, ctx).extra_loss if method.hooks else None

    def loss_fn(m, b):
        loss = m(**b).loss
        return loss + extra() if extra is not None else loss

    return memory_account(model, batch, optimizer=optimizer, loss_fn=loss_fn)


def adamw_state_closed_form(model) -> int:
    """AdamW's state in bytes as torch stores it: exp_avg and exp_avg_sq (each the parameter's size and dtype)
    and a float32 scalar step per parameter tensor."""
    ps = [p for p in model.parameters() if p.requires_grad]
    return sum(2 * p.numel() * p.element_size() + 4 for p in ps)


def cfg_key(b, n):
    return f"b{b}xL{n}"


def measure_methods(base, tokenizer, configs, methods, analytic_full=False, log=print):
    """{method: {config key: account}} for one base model (copied per method; 'full' takes the base itself when
    it is last)."""
    out = {}
    vocab = base.config.vocab_size
    ctx = context(tokenizer, vocab)
    for i, name in enumerate(methods):
        last = i == len(methods) - 1
        model = registry.get(name).attach(base if last else copy.deepcopy(base), ctx)
        out[name] = {}
        for b, n in configs:
            t0 = time.perf_counter()
            opt = None if (name == "full" and analytic_full) else "adamw"
            acc = account(name, model, ctx, make_batch(vocab, b, n), optimizer=opt)
            acc["optimizer_state_source"] = "measured"
            if opt is None:
                acc["optimizer_state_bytes"] = adamw_state_closed_form(model)
                acc["optimizer_state_source"] = "analytic (closed form, not measured)"
                acc["total_bytes"] = sum(acc[k] for k in ACCOUNT_COMPONENTS)
            out[name][cfg_key(b, n)] = acc
            log(f"  {name:8s} {cfg_key(b, n):9s} total {acc['total_bytes'] / MiB:10.1f} MiB "
                f"({time.perf_counter() - t0:.1f} s)")
        del model
        gc.collect()
    return out


def training_state(acc):
    return acc["total_bytes"] - acc["frozen_param_bytes"] - acc["buffer_bytes"]


def table(accounts, key, title):
    lines = [title, f"{'method':8s} " + " ".join(f"{h:>11s}" for h in
             ("trainable", "grads", "AdamW", "activations", "frozen", "total", "QAA/method", "37% holds"))]
    q = accounts["qaa"][key]["total_bytes"]
    for name, per in accounts.items():
        a = per[key]
        ratio = q / a["total_bytes"]
        verdict = "" if name == "qaa" else ("yes" if ratio <= CLAIM else "no")
        lines.append(f"{name:8s} " + " ".join(f"{v / MiB:11.2f}" for v in (
            a["trainable_param_bytes"], a["gradient_bytes"], a["optimizer_state_bytes"], a["activation_bytes"],
            a["frozen_param_bytes"] + a["buffer_bytes"], a["total_bytes"])) + f" {ratio:11.3f} {verdict:>11s}")
    return "\n".join(lines)


def verdicts(accounts):
    """{baseline: {config: {ratio_total, holds_total, ratio_training_state, holds_training_state}}}"""
    out = {}
    for name in accounts:
        if name == "qaa":
            continue
        out[name] = {}
        for key, a in accounts[name].items():
            q = accounts["qaa"][key]
            r_tot = q["total_bytes"] / a["total_bytes"]
            r_train = training_state(q) / training_state(a)
            out[name][key] = {"ratio_total": r_tot, "holds_total": r_tot <= CLAIM,
                              "ratio_training_state": r_train, "holds_training_state": r_train <= CLAIM}
    return out


def print_verdicts(v, label, log=print):
    log(f"\n'up to 37% less memory' (QAA <= {CLAIM} x baseline), {label}: total | training state (no frozen weights)")
    for name, per in v.items():
        cells = [f"{k}: {d['ratio_total']:.3f} {'HOLDS' if d['holds_total'] else 'fails'} | "
                 f"{d['ratio_training_state']:.3f} {'HOLDS' if d['holds_training_state'] else 'fails'}"
                 for k, d in per.items()]
        log(f"  vs {name:8s} " + ";  ".join(cells))


def llama(shape: dict, layers: int, attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(shape, num_hidden_layers=layers, attn_implementation=attn, max_position_embeddings=8192,
               rms_norm_eps=1e-5, hidden_act="silu", bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**cfg)).float().eval()


def extrapolate(shape, layers_total, configs, methods, attn, analytic_full, log=print):
    """Per-layer rule: {method: {config: {one_layer, two_layers, per_layer, total (bytes per component)}}}."""
    one = measure_methods(llama(shape, 1, attn), None, configs, methods, analytic_full, log)
    gc.collect()
    two = measure_methods(llama(shape, 2, attn), None, configs, methods, analytic_full, log)
    gc.collect()
    out = {}
    for name in methods:
        out[name] = {}
        for key in one[name]:
            a1, a2 = one[name][key], two[name][key]
            per = {k: a2[k] - a1[k] for k in ACCOUNT_COMPONENTS}
            tot = {k: a1[k] + (layers_total - 1) * per[k] for k in ACCOUNT_COMPONENTS}
            tot["total_bytes"] = sum(tot.values())
            out[name][key] = {"one_layer": a1, "two_layers": a2, "per_layer": per, "total": tot,
                              "optimizer_state_source": a1["optimizer_state_source"]}
    return out


#: Components in the memory chart, bottom to top, with their legend names.
PLOT_COMPONENTS = (("frozen_param_bytes", "frozen weights"), ("activation_bytes", "saved activations"),
                   ("trainable_param_bytes", "trainable parameters"), ("gradient_bytes", "gradients"),
                   ("optimizer_state_bytes", "AdamW state"))


def plot_components(result: dict, path: str) -> str:
    """A stacked bar per method and batch x length of the measured 135M account (MiB by component), one panel
    per configuration, from a memory_account JSON's ``measured_135m``; returns ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured = result["measured_135m"]
    methods = list(measured)
    configs = list(measured[methods[0]])
    fig = Figure(figsize=(4 * len(configs), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(configs), squeeze=False)[0]
    for ax, key in zip(axes, configs):
        bottom = [0.0] * len(methods)
        for comp, name in PLOT_COMPONENTS:
            vals = [measured[m][key].get(comp, 0) / MiB for m in methods]
            ax.bar(methods, vals, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_title(f"{key.replace('x', ' x ').replace('b', 'batch ').replace('L', 'length ')}", fontsize=9)
        ax.set_ylabel("MiB (one training step)")
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle("SmolLM2-135M: bytes of one training step by component (deterministic count)")
    fig.savefig(path, format="png", dpi=110)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--extrap-configs", nargs="*", default=["1x256", "8x64"],
                    help="BATCHxLENGTH pairs measured for the extrapolation (none: skip it)")
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES))
    ap.add_argument("--analytic-full-state", nargs="*", default=["Llama-7B"],
                    help="shapes where full fine-tuning's AdamW state is the closed form (memory)")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "memory_account.json"))
    ap.add_argument("--plot-only", action="store_true",
                    help="only draw the chart (memory_account.png beside --json) from an existing --json")
    args = ap.parse_args()
    png = os.path.splitext(args.json)[0] + ".png"
    if args.plot_only:
        with open(args.json) as fh:
            print(plot_components(json.load(fh), png))
        return
    if args.methods[0] != "qaa":
        raise SystemExit("--methods must start with qaa (the ratios are QAA / method)")
    lines = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    t_start = time.perf_counter()
    load = os.getloadavg()
    log("Memory account of one training step (forward, backward, AdamW step), bytes from "
        "qaa.experiments.memory.memory_account.")
    log(f"Deterministic byte counts, not timings: the machine is shared (2 CPU cores, load average "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at start) and that does not change them.")
    log(f"torch {torch.__version__}, {platform.machine()}, device cpu (no CUDA peak figure; RSS not reported)")
    from qaa.experiments.base_model import load_base_model

    base, tok = load_base_model()
    attn = base.config._attn_implementation
    log(f"SmolLM2-135M-Instruct, float32, attention implementation {attn!r}; batch = random token ids (seed 0), "
        "every position a target; methods attached through qaa.experiments.registry (q_proj/v_proj; QAA "
        f"n_layers={registry.QAA_N_LAYERS}, prefix {registry.PREFIX_TOKENS} tokens, SoRA r_max={registry.LORA_R})")
    configs = [(b, n) for b in args.batches for n in args.lengths]
    log("\n== measured, SmolLM2-135M ==")
    measured = measure_methods(base, tok, configs, args.methods, log=log)
    del base
    gc.collect()
    for b, n in configs:
        log("\n" + table(measured, cfg_key(b, n), f"SmolLM2-135M, batch {b}, length {n} (MiB)"))
    v135 = verdicts(measured)
    print_verdicts(v135, "SmolLM2-135M measured", log)
    result = {"note": "deterministic byte counts of one training step (memory_account); machine shared, not timings",
              "torch": torch.__version__, "attn_implementation": attn, "claim_ratio": CLAIM,
              "load_average_start": load, "measured_135m": measured, "verdicts_135m": v135}
    ex_cfgs = [tuple(int(x) for x in c.split("x")) for c in args.extrap_configs]
    if ex_cfgs:
        with open(os.path.join(HERE, "smollm2_135m_config.json")) as fh:
            c135 = json.load(fh)
        shape135 = {k: c135[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                         "intermediate_size", "vocab_size", "tie_word_embeddings")}
        log("\n== per-layer rule checked on SmolLM2-135M (1- and 2-layer models -> 30 layers vs the whole model) ==")
        ex135 = extrapolate(shape135, c135["num_hidden_layers"], ex_cfgs, args.methods, attn, False, log)
        check = {}
        for name in args.methods:
            check[name] = {}
            for key, e in ex135[name].items():
                m = measured[name].get(key)
                if m is None:
                    continue
                errs = {k: (e["total"][k] - m[k]) / m[k] if m[k] else float(e["total"][k] != 0)
                        for k in ACCOUNT_COMPONENTS + ("total_bytes",)}
                check[name][key] = {"relative_error": errs, "extrapolated_total_bytes": e["total"]["total_bytes"],
                                    "measured_total_bytes": m["total_bytes"]}
                log(f"  {name:8s} {key:9s} extrapolated {e['total']['total_bytes'] / MiB:10.2f} MiB, measured "
                    f"{m['total_bytes'] / MiB:10.2f} MiB, error of the total {100 * errs['total_bytes']:+.4f}%, "
                    f"largest component error {100 * max(abs(x) for x in errs.values()):.4f}%")
        worst = max(abs(c["relative_error"]["total_bytes"]) for per in check.values() for c in per.values())
        log(f"  largest error of a total: {100 * worst:.4f}%")
        result["extrapolation_check_135m"] = {"per_method": check, "max_abs_relative_error_total": worst}
        result["extrapolated"] = {}
        for shape_name in args.shapes:
            shape = dict(SHAPES[shape_name])
            L = shape.pop("num_hidden_layers")
            log(f"\n== {shape_name} ({L} layers), per-layer rule ==")
            ex = extrapolate(shape, L, ex_cfgs, args.methods, attn, shape_name in args.analytic_full_state, log)
            totals = {name: {k: e["total"] for k, e in per.items()} for name, per in ex.items()}
            for b, n in ex_cfgs:
                log("\n" + table(totals, cfg_key(b, n), f"{shape_name}, batch {b}, length {n} (MiB, extrapolated)"))
            if "full" in ex and shape_name in args.analytic_full_state:
                log("  full fine-tuning's AdamW state here: closed form 2 x trainable bytes + 4 B per tensor "
                    "(not measured: it would not fit this machine's memory); every other figure measured")
            v = verdicts(totals)
            print_verdicts(v, f"{shape_name} extrapolated", log)
            result["extrapolated"][shape_name] = {"layers": L, "shape": shape, "accounts": ex, "verdicts": v}
    log(f"\nwall time {time.perf_counter() - t_start:.0f} s")
    result["wall_s"] = time.perf_counter() - t_start
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=1)
    with open(os.path.splitext(args.json)[0] + ".txt", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    plot_components(result, png)


if __name__ == "__main__":
    main()
