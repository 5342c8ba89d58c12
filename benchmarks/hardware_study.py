"""The hardware study: the trained QAA adapters of a comparison, scored as a quantum device would run them.

For each final adapter of the chosen methods (by default QAA and the frozen-angle control on E2E, every seed of
the comparison), the task's first ``--eval-size`` test inputs are scored (teacher-forced NLL per input over all
its references, greedy generations with BLEU and chrF++) under each measurement setting: exact features, finite
shots (10^4, 10^3, 10^2, 10), readout error (1%, 3% per qubit) and global depolarising noise (0.1%, 1% per
ansatz layer; closed forms, docs/design.md section 9), and with ``--local`` per-qubit depolarising by Pauli
trajectories on fewer inputs. Everything else in the model is exact.

Verdicts: for each metric, a setting *keeps* the metric when its seed-mean lies inside the exact adapters' 95%
bootstrap interval (resampling test inputs, 2000 draws, seed 0; the seed-mean per input first); the shots needed
per metric are the fewest shots of the grid that keep it. Records are written as each evaluation finishes
(``results.json``; a rerun skips finished ones), with every generation; ``study.md`` and two charts follow.

    python benchmarks/hardware_study.py --compare runs/compare_cpu --out docs/results/hardware_study
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = {  # name -> MeasurementSetting fields
    "exact": None,
    "shots=10000": {"shots": 10000}, "shots=1000": {"shots": 1000}, "shots=100": {"shots": 100},
    "shots=10": {"shots": 10},
    "readout=0.01": {"readout_error": 0.01}, "readout=0.03": {"readout_error": 0.03},
    "depolarizing=0.001": {"depolarizing": 0.001}, "depolarizing=0.01": {"depolarizing": 0.01},
}
LOCAL = {"local_depolarizing=0.01": {"depolarizing": 0.01, "depolarizing_model": "local", "trajectories": 100}}
SHOTS = [("shots=10000", 10000), ("shots=1000", 1000), ("shots=100", 100), ("shots=10", 10)]
BOOT, BOOT_SEED = 2000, 0


def _write(path: Path, data: dict) -> None:
    from qaa.tuners.save_load import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def _final_adapters(compare_dir: Path, task: str, methods) -> list:
    """``[(method, seed, adapter folder)]`` of the comparison's final runs (the selected configuration)."""
    res = json.loads((compare_dir / "results.json").read_text())
    seeds = res["settings"]["seeds"]
    out = []
    for method in methods:
        sel = res.get("selection", {}).get(f"{task}|{method}")
        if not sel or sel.get("status") != "ok":
            continue
        for seed in seeds:
            key = f"{task}|{method}|lr={sel['lr']:.6g}|ratio={sel['theta_lr_ratio']:.6g}|seed={seed}"
            rec = res.get("runs", {}).get(key)
            if rec and rec.get("status") == "ok" and (compare_dir / rec["adapter_dir"]).is_dir():
                out.append((method, seed, compare_dir / rec["adapter_dir"]))
    return out, res["settings"]


def _bootstrap(per_input: np.ndarray, stat) -> tuple:
    rng = np.random.default_rng(BOOT_SEED)
    n = per_input.shape[0]
    draws = [stat(per_input[rng.integers(0, n, n)]) for _ in range(BOOT)]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def _metric_views(records: list):
    """Seed-mean per input of NLL, and the summed BLEU / chrF++ statistics across seeds."""
    nll = np.mean([r["nll"] for r in records], axis=0)
    bleu = np.sum([r["scores"]["bleu_stats"] for r in records], axis=0)
    chrf = np.sum([r["scores"]["chrf_stats"] for r in records], axis=0) if all(
        "chrf_stats" in r["scores"] for r in records) else None
    return nll, bleu, chrf


def analyse(results: dict) -> dict:
    """Per method: each setting's seed-mean of NLL, BLEU and chrF++ and whether it lies inside the exact
    adapters' 95% interval; the fewest shots keeping each metric."""
    from qaa.experiments.metrics import bleu_from_stats, chrf_from_stats

    out = {}
    methods = sorted({r["method"] for r in results["evals"].values()})
    for method in methods:
        by_setting = {}
        for rec in results["evals"].values():
            if rec["method"] == method:
                by_setting.setdefault(rec["setting"], []).append(rec)
        exact = by_setting.get("exact")
        if not exact:
            continue
        seeds = sorted(r["seed"] for r in exact)
        nll, bleu, chrf = _metric_views(exact)
        intervals = {"nll": _bootstrap(nll, np.mean), "bleu": _bootstrap(bleu, bleu_from_stats)}
        if chrf is not None:
            intervals["chrf"] = _bootstrap(chrf, chrf_from_stats)
        rows = {}
        for name, recs in by_setting.items():
            if sorted(r["seed"] for r in recs) != seeds:
                continue  # only settings evaluated on every seed of the exact row
            n, b, c = _metric_views(sorted(recs, key=lambda r: r["seed"]))
            vals = {"nll": float(np.mean(n)), "bleu": bleu_from_stats(b)}
            if c is not None and "chrf" in intervals:
                vals["chrf"] = chrf_from_stats(c)
            rows[name] = {k: {"value": v, "inside": intervals[k][0] <= v <= intervals[k][1]} for k, v in vals.items()}
        needed = {}
        for metric in intervals:
            kept = [shots for name, shots in SHOTS if name in rows and rows[name][metric]["inside"]]
            tried = [shots for name, shots in SHOTS if name in rows]
            # The fewest shots such that this and every larger shot count of the grid keep the metric.
            ok = None
            for shots in sorted(tried, reverse=True):
                if shots in kept:
                    ok = shots
                else:
                    break
            needed[metric] = ok
        out[method] = {"seeds": seeds, "intervals": intervals, "rows": rows, "shots_needed": needed,
                       "inputs": len(nll)}
    return out


def write_report(results: dict, out: Path) -> None:
    from qaa.experiments import registry

    analysis = analyse(results)
    lines = ["# Hardware study: trained adapters under finite shots and noise", "",
             f"Task {results['task']}, first {results['eval_size']} test inputs (every reference of each), adapters "
             f"of `{results['compare']}` (final runs, seeds as listed). Metrics are seed-means; an entry is marked "
             "`in` when it lies inside the exact adapters' 95% bootstrap interval (test inputs resampled, "
             f"{BOOT} draws). Shots and noise apply to the QAA branch alone; the rest of the model is exact.", ""]
    for method, a in analysis.items():
        iv = a["intervals"]
        lines += [f"## {registry.label(method)} (seeds {', '.join(map(str, a['seeds']))})", "",
                  "Exact interval: " + "; ".join(f"{k} [{lo:.3f}, {hi:.3f}]" for k, (lo, hi) in iv.items()), "",
                  "| setting | test NLL | BLEU | chrF++ |", "|---|---:|---:|---:|"]
        for name in list(SETTINGS) + list(LOCAL):
            row = a["rows"].get(name)
            if row is None:
                continue
            cell = lambda k: (f"{row[k]['value']:.3f} ({'in' if row[k]['inside'] else 'out'})"  # noqa: E731
                              if k in row else "-")
            lines.append(f"| {name} | {cell('nll')} | {cell('bleu')} | {cell('chrf')} |")
        lines.append("")
        for metric, shots in a["shots_needed"].items():
            tried = [s for n, s in SHOTS if n in a["rows"]]
            if shots is None:
                lines.append(f"- {metric}: no shot count of the grid ({', '.join(map(str, tried))}) keeps it inside "
                             "the exact interval.")
            else:
                lines.append(f"- {metric}: {shots} shots per circuit keep it inside the exact interval (and every "
                             "larger count of the grid does).")
        lines.append("")
    (out / "study.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plots(analysis, out)


def _plots(analysis: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qaa.experiments import registry

    for kind, names, xs, xlabel, fname in (
            ("shots", [n for n, _ in SHOTS], [s for _, s in SHOTS], "shots per circuit (log)", "shots.png"),
            ("noise", ["readout=0.01", "readout=0.03", "depolarizing=0.001", "depolarizing=0.01"], None,
             "setting", "noise.png")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, metric in zip(axes, ("nll", "bleu")):
            for method, a in analysis.items():
                pts = [(x if xs else i, a["rows"][n][metric]["value"]) for i, (n, x) in
                       enumerate(zip(names, xs or names)) if n in a["rows"]]
                if not pts:
                    continue
                colour = registry.colour(method)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colour, label=registry.label(method))
                lo, hi = a["intervals"][metric]
                ax.axhspan(lo, hi, color=colour, alpha=0.12)
                ax.axhline(a["rows"]["exact"][metric]["value"], color=colour, ls=":", lw=1)
            if xs:
                ax.set_xscale("log")
            else:
                ax.set_xticks(range(len(names)))
                ax.set_xticklabels(names, rotation=20, fontsize=8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test NLL (nats/token)" if metric == "nll" else "BLEU")
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(fontsize=8)
        fig.suptitle(f"QAA adapters under {kind}: seed-mean (points), exact (dotted) and its 95% interval (band)")
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", required=True, help="a qaa compare output folder (results.json + adapters/)")
    p.add_argument("--task", default="e2e")
    p.add_argument("--methods", default="qaa,qaa_frozen_theta")
    p.add_argument("--eval-size", type=int, default=20, help="test inputs scored (a prefix of the comparison's)")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, from: "
                   + ", ".join(list(SETTINGS) + list(LOCAL)))
    p.add_argument("--local", action="store_true", help="also local depolarising by Pauli trajectories")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch

    from qaa.experiments.base_model import load_base_model
    from qaa.experiments.pipeline import evaluate_test, load_splits, prepare_task, set_threads
    from qaa.hardware import MeasurementSetting, measurement
    from qaa.tuners.qaa.persistence import load_adapter

    compare_dir, out = Path(args.compare), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adapters, settings = _final_adapters(compare_dir, args.task, args.methods.split(","))
    if not adapters:
        print(f"no final adapters of {args.methods} on {args.task} in {compare_dir}", file=sys.stderr)
        return 2
    names = args.settings.split(",") + (list(LOCAL) if args.local else [])
    table = {**SETTINGS, **LOCAL}
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"unknown settings {unknown}", file=sys.stderr)
        return 2
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {
        "task": args.task, "eval_size": args.eval_size, "compare": str(compare_dir), "split_seed":
        settings["split_seed"], "evals": {}}
    if results["eval_size"] != args.eval_size or results["task"] != args.task:
        print(f"{path} holds another study (task/eval size); choose another --out", file=sys.stderr)
        return 2
    set_threads(args.threads)
    base, tok = load_base_model(settings["model"], progress=False)
    splits = load_splits(args.task, settings["split_seed"], settings["val_fraction"], settings["test_fraction"],
                         eval_size=args.eval_size)
    data = prepare_task(args.task, tok, splits)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    for method, seed, folder in adapters:
        todo = [n for n in names if f"{method}|{seed}|{n}" not in results["evals"]]
        if not todo:
            continue
        base.load_state_dict(state)
        model = load_adapter(base, str(folder))
        for name in todo:
            t0 = time.perf_counter()
            fields = table[name]
            torch.manual_seed(0)
            if fields is None:
                rec = evaluate_test(model, data, tok, tok.pad_token_id, bertscore=False)
                circuits = shots_used = None
            else:
                setting = MeasurementSetting(seed=1000 + seed, **fields)
                with measurement(setting) as run:
                    rec = evaluate_test(model, data, tok, tok.pad_token_id, bertscore=False)
                circuits, shots_used = run.circuits, run.shots_used
            rec.update(method=method, seed=seed, setting=name, fields=fields, adapter=str(folder),
                       circuits=circuits, shots_used=shots_used, seconds=time.perf_counter() - t0)
            results["evals"][f"{method}|{seed}|{name}"] = rec
            _write(path, results)
            print(f"{method} seed {seed} {name}: NLL {rec['metrics']['nll']:.4f}, BLEU {rec['metrics']['bleu']:.2f} "
                  f"({rec['seconds']:.0f} s)", flush=True)
        from qaa.tuners.qaa.model import detach

        detach(model)
    write_report(results, out)
    print(out / "study.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
