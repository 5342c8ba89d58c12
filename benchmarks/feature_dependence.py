"""How much of QAA's circuit features depends on the token, with and without the "standardize" input transform.

On SmolLM2-135M-Instruct (de-quantised Q4_1, offline) and E2E-NLG training prompts, for every adapted layer
(``q_proj`` and ``v_proj`` of all 30 decoder layers; d_in = 576, so n = 10 qubits) at initialisation
(``ry_cnot_ring``, L = 4, theta ~ N(0, 0.1), seed 0), the <Z> features f of ~1k tokens are computed from

- the raw layer input x (``input_transform=None``), and
- the standardised input (x - mean) / scale, with mean and scale from :func:`qaa.calibrate_input_transform`
  on *other* prompts (disjoint from the evaluated ones).

Printed per layer:

- ``dep_raw`` / ``dep_std``: the token-dependent share of the feature energy,
  ``1 - ||mean_t f_t||^2 / mean_t ||f_t||^2`` (0: every token gives the same features; 1: zero-mean features);
- ``dep_rms_raw`` / ``dep_rms_std``: the size of that token-dependent part, ``sqrt(mean_t ||f_t - mean f||^2)``
  (a share near 1 of tiny features would still be a weak signal for ``P``);
- ``state_dep_raw`` / ``state_dep_std``: the same share for the embedded state ``x / ||x||`` itself;
- ``top2_raw`` / ``top2_std``: the mean share of ``||x||^2`` held by the two largest coordinates of a token.

Then the medians over layers. ``--out`` writes everything as JSON. Runs in about a minute on 2 CPU cores.

    python benchmarks/feature_dependence.py --out benchmarks/results/feature_dependence.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import qaa
from qaa.experiments.base_model import load_base_model
from qaa.experiments.data import training_pairs
from qaa.experiments.tasks import format_prompt, load_splits

#: The E2E task of the registry (the committed results/feature_dependence.* were measured on GEM's E2E from the
#: BIG-bench archive, task e2e_nlg, before the vendored releases; rerun to measure on this one).
TASK = "e2e"


def texts(pairs):
    return [format_prompt(TASK, inp) + " " + ref for inp, ref in pairs]


def token_dependent_share(f: torch.Tensor) -> float:
    """``1 - ||mean f||^2 / mean ||f||^2`` over the rows of ``f`` (float64)."""
    f = f.to(torch.float64)
    return float(1.0 - f.mean(0).pow(2).sum() / f.pow(2).sum(1).mean())


def token_dependent_rms(f: torch.Tensor) -> float:
    """``sqrt(mean_t ||f_t - mean f||^2)``: the size of the token-dependent part itself (float64)."""
    f = f.to(torch.float64)
    return float((f - f.mean(0)).pow(2).sum(1).mean().sqrt())


def top2_share(x: torch.Tensor) -> float:
    """Mean over rows of (sum of the two largest ``x_i^2``) / ``||x||^2``."""
    sq = x.to(torch.float64).pow(2)
    return float((sq.topk(2, dim=1).values.sum(1) / sq.sum(1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON output path")
    ap.add_argument("--tokens", type=int, default=1024, help="evaluated tokens (default 1024)")
    ap.add_argument("--calib-prompts", type=int, default=32, help="calibration prompts (default 32)")
    ap.add_argument("--n-layers", type=int, default=4, help="ansatz layers L (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(args.seed)

    model, tok = load_base_model()
    model.eval()
    pairs = training_pairs(load_splits(TASK).train)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(pairs), generator=g).tolist()
    calib_texts = texts([pairs[i] for i in order[: args.calib_prompts]])
    eval_pool = texts([pairs[i] for i in order[args.calib_prompts:]])

    cfg = qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=args.n_layers, seed=args.seed,
                        input_transform="standardize")
    model = qaa.attach(model, cfg)
    layers = list(qaa.qaa_layers(model))

    # Calibration on prompts disjoint from the evaluated ones, padded in batches of 8 (the mask excludes pads).
    calib_batches = [dict(tok(calib_texts[i:i + 8], return_tensors="pt", padding=True))
                     for i in range(0, len(calib_texts), 8)]
    calib = qaa.calibrate_input_transform(model, calib_batches)
    calib_tokens = next(iter(calib.values()))["count"]

    # Inputs of every adapted layer for ~args.tokens evaluated tokens (one prompt at a time: no padding).
    inputs = {name: [] for name, _ in layers}
    hooks = [layer.register_forward_pre_hook(lambda _m, a, name=name: inputs[name].append(a[0][0].detach()))
             for name, layer in layers]
    n_tokens, n_prompts = 0, 0
    with torch.no_grad():
        for text in eval_pool:
            if n_tokens >= args.tokens:
                break
            ids = tok(text, return_tensors="pt")["input_ids"]
            model(input_ids=ids)
            n_tokens += ids.shape[1]
            n_prompts += 1
    for h in hooks:
        h.remove()

    rows = []
    with torch.no_grad():
        for name, layer in layers:
            x = torch.cat(inputs[name])[: args.tokens].to(torch.float32)
            theta = layer.qaa_theta["default"].detach()
            circ = layer.circuit("default")
            xs = layer.qaa_input["default"](x)
            f_raw, _ = qaa.qaa_features(x, theta, circ, "z")
            f_std, _ = qaa.qaa_features(xs, theta, circ, "z")
            rows.append({
                "layer": name, "n_qubits": circ.n_qubits,
                "dep_raw": token_dependent_share(f_raw), "dep_std": token_dependent_share(f_std),
                "dep_rms_raw": token_dependent_rms(f_raw), "dep_rms_std": token_dependent_rms(f_std),
                "state_dep_raw": token_dependent_share(x / x.norm(dim=1, keepdim=True)),
                "state_dep_std": token_dependent_share(xs / xs.norm(dim=1, keepdim=True)),
                "top2_raw": top2_share(x), "top2_std": top2_share(xs),
            })
            inputs[name] = None

    keys = ["dep_raw", "dep_std", "dep_rms_raw", "dep_rms_std", "state_dep_raw", "state_dep_std", "top2_raw", "top2_std"]
    print(f"{'layer':<22} " + " ".join(f"{k:>13}" for k in keys))
    for r in rows:
        short = r["layer"].replace("model.layers.", "L").replace(".self_attn.", ".")
        print(f"{short:<22} " + " ".join(f"{r[k]:13.4f}" for k in keys))
    medians = {k: statistics.median(r[k] for r in rows) for k in keys}
    print(f"{'median (' + str(len(rows)) + ' layers)':<22} " + " ".join(f"{medians[k]:13.4f}" for k in keys))
    elapsed = time.time() - t0
    print(f"tokens evaluated: {min(n_tokens, args.tokens)} from {n_prompts} prompts; calibration tokens: "
          f"{calib_tokens} from {len(calib_texts)} other prompts; {elapsed:.1f} s")

    result = {
        "model": "SmolLM2-135M-Instruct (de-quantised Q4_1)", "task": TASK,
        "config": {"ansatz": cfg.ansatz, "n_layers": cfg.n_layers, "init_std": cfg.init_std, "seed": args.seed,
                   "readout": cfg.readout},
        "tokens": min(n_tokens, args.tokens), "eval_prompts": n_prompts, "calibration_tokens": calib_tokens,
        "calibration_prompts": len(calib_texts),
        "definitions": {
            "dep": "1 - ||mean_t f_t||^2 / mean_t ||f_t||^2 of the <Z> features f at init",
            "dep_rms": "sqrt(mean_t ||f_t - mean f||^2)",
            "state_dep": "the same for the embedded state x/||x||",
            "top2": "mean over tokens of the share of ||x||^2 in the two largest coordinates",
            "raw/std": "without / with the standardize input transform (calibrated on other prompts)",
        },
        "median": medians, "layers": rows, "seconds": round(elapsed, 1), "qaa_version": qaa.__version__,
    }
    from qaa.tuners.save_load import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
