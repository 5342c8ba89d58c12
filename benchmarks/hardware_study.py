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


def _paired_bootstrap(a: np.ndarray, b: np.ndarray, stat) -> tuple:
    """``stat(a) - stat(b)`` and its 95% percentile interval, both resampled with the same input indices."""
    rng = np.random.default_rng(BOOT_SEED)
    n = a.shape[0]
    draws = []
    for _ in range(BOOT):
        idx = rng.integers(0, n, n)
        draws.append(stat(a[idx]) - stat(b[idx]))
    return float(stat(a) - stat(b)), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def analyse(results: dict) -> dict:
    """Per method and setting, on the seeds that setting was evaluated with: the seed-mean of NLL, BLEU and
    chrF++; whether it lies inside the exact adapters' 95% interval on the same seeds (the issue's criterion);
    and the paired difference setting minus exact (same inputs, same seeds) with its 95% bootstrap interval,
    which also detects a small systematic shift. The fewest shots of the grid keeping each metric inside
    (``shots_needed``) and with a difference whose interval includes 0 (``shots_no_difference``)."""
    from qaa.experiments.metrics import bleu_from_stats, chrf_from_stats

    stats = {"nll": np.mean, "bleu": bleu_from_stats, "chrf": chrf_from_stats}
    out = {}
    methods = sorted({r["method"] for r in results["evals"].values()})
    for method in methods:
        by_setting = {}
        for rec in results["evals"].values():
            if rec["method"] == method:
                by_setting.setdefault(rec["setting"], []).append(rec)
        exact = {r["seed"]: r for r in by_setting.get("exact", [])}
        if not exact:
            continue
        views = lambda recs: dict(zip(("nll", "bleu", "chrf"), _metric_views(recs)))  # noqa: E731
        all_exact = views([exact[s] for s in sorted(exact)])
        intervals = {k: _bootstrap(v, stats[k]) for k, v in all_exact.items() if v is not None}
        rows = {}
        for name, recs in by_setting.items():
            seeds = sorted(r["seed"] for r in recs)
            if not set(seeds) <= set(exact):
                continue
            mine = views(sorted(recs, key=lambda r: r["seed"]))
            base = views([exact[s] for s in seeds])
            row = {}
            for k in intervals:
                if mine.get(k) is None or base.get(k) is None:
                    continue
                lo, hi = _bootstrap(base[k], stats[k])
                value = float(stats[k](mine[k]))
                d, dlo, dhi = _paired_bootstrap(mine[k], base[k], stats[k])
                row[k] = {"value": value, "inside": lo <= value <= hi, "interval": [lo, hi],
                          "diff": d, "diff_interval": [dlo, dhi], "differs": not (dlo <= 0.0 <= dhi)}
            rows[name] = {"seeds": seeds, **row}

        def fewest(test) -> dict:
            found = {}
            for metric in intervals:
                tried = sorted((shots for name, shots in SHOTS if name in rows and metric in rows[name]),
                               reverse=True)
                ok = None
                for shots in tried:  # this and every larger shot count of the grid pass
                    if test(rows[f"shots={shots}"][metric]):
                        ok = shots
                    else:
                        break
                found[metric] = ok
            return found

        out[method] = {"seeds": sorted(exact), "intervals": intervals, "rows": rows,
                       "shots_needed": fewest(lambda r: r["inside"]),
                       "shots_no_difference": fewest(lambda r: not r["differs"]),
                       "inputs": len(all_exact["nll"])}
    return out


def write_report(results: dict, out: Path) -> None:
    from qaa.experiments import registry

    analysis = analyse(results)
    lines = ["# Hardware study: trained adapters under finite shots and noise", "",
             f"Task {results['task']}, first {results['eval_size']} test inputs (every reference of each), adapters "
             f"of `{results['compare']}` (final runs, seeds as listed). Metrics are seed-means; an entry is marked "
             "`in` when it lies inside the exact adapters' 95% bootstrap interval (test inputs resampled, "
             f"{BOOT} draws). Shots and noise apply to the QAA branch alone; the rest of the model is exact.", ""]
    local = sorted({(r["setting"], r["fields"]["depolarizing"], r["fields"]["trajectories"])
                    for r in results["evals"].values() if r["setting"] in LOCAL})
    for name, p, t in local:
        lines += [f"`{name}`: after every ansatz layer each qubit independently gets a depolarising channel of "
                  f"probability {p:g}, simulated by {t} Pauli trajectories per input token (each a pure statevector "
                  f"with random Pauli errors; the features are the trajectory average, whose standard error is at "
                  f"most 1/sqrt({t}) = {t ** -0.5:.2g} per feature). Unlike the global model (`depolarizing=`, a "
                  "closed-form rescaling of <Z> by (1 - p)^L) it does not reduce to a rescaling.", ""]
    for method, a in analysis.items():
        iv = a["intervals"]
        lines += [f"## {registry.label(method)} (exact on seeds {', '.join(map(str, a['seeds']))})", "",
                  "Exact interval (all those seeds): " + "; ".join(f"{k} [{lo:.3f}, {hi:.3f}]"
                                                                    for k, (lo, hi) in iv.items()), "",
                  "Each cell: the seed-mean (`in`/`out` of the exact interval on the same seeds), then the paired "
                  "difference setting minus exact with its 95% bootstrap interval (`*`: the interval excludes 0).", "",
                  "| setting | seeds | test NLL | BLEU | chrF++ |", "|---|---|---:|---:|---:|"]
        for name in list(SETTINGS) + list(LOCAL):
            row = a["rows"].get(name)
            if row is None:
                continue

            def cell(k, row=row):
                if k not in row:
                    return "-"
                r = row[k]
                if name == "exact":
                    return f"{r['value']:.3f}"
                lo, hi = r["diff_interval"]
                return (f"{r['value']:.3f} ({'in' if r['inside'] else 'out'}); {r['diff']:+.3f} "
                        f"[{lo:+.3f}, {hi:+.3f}]{'*' if r['differs'] else ''}")
            lines.append(f"| {name} | {', '.join(map(str, row['seeds']))} | {cell('nll')} | {cell('bleu')} | "
                         f"{cell('chrf')} |")
        lines.append("")
        tried = [s for n, s in SHOTS if n in a["rows"]]
        for metric, shots in (a["shots_needed"].items() if tried else ()):  # no shot setting: no shots verdict
            same = a["shots_no_difference"].get(metric)
            first = (f"no shot count of the grid ({', '.join(map(str, tried))}) keeps it inside the exact interval"
                     if shots is None else f"{shots} shots per circuit keep it inside the exact interval (and every "
                     "larger count of the grid does)")
            second = ("no count of the grid shows no paired difference" if same is None else
                      f"from {same} shots up the paired difference's interval includes 0")
            lines.append(f"- {metric}: {first}; {second}.")
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
            for k, (method, a) in enumerate(analysis.items()):
                pts = [(x if xs else i, a["rows"][n][metric]) for i, (n, x) in enumerate(zip(names, xs or names))
                       if n in a["rows"] and metric in a["rows"][n]]
                if not pts:
                    continue
                # methods side by side: a small horizontal offset so the error bars do not hide each other
                px = [p[0] * (1.08 ** k) if xs else p[0] + 0.1 * k for p in pts]
                d = [p[1]["diff"] for p in pts]
                err = [[p[1]["diff"] - p[1]["diff_interval"][0] for p in pts],
                       [p[1]["diff_interval"][1] - p[1]["diff"] for p in pts]]
                # shot counts are an ordered axis (a line between them); noise settings are categories (none)
                ax.errorbar(px, d, yerr=err, fmt="o-" if xs else "o", capsize=3, color=registry.colour(method),
                            label=f"{registry.label(method)} (seeds per setting: study.md)")
            ax.axhline(0.0, color="#555555", lw=0.8)
            if xs:
                ax.set_xscale("log")
            else:
                ax.set_xticks(range(len(names)))
                ax.set_xticklabels(names, rotation=20, fontsize=8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(("test NLL" if metric == "nll" else "BLEU") + ": setting − exact (same seeds)")
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(fontsize=7)
        fig.suptitle(f"QAA adapters under {kind}: paired difference from exact features, 95% bootstrap interval")
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
    p.add_argument("--seeds", default=None, help="comma-separated training seeds to score (default: every final "
                   "seed of the comparison)")
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
    if args.seeds:
        try:
            wanted = {int(v) for v in args.seeds.split(",")}
        except ValueError:
            print(f"--seeds {args.seeds!r}: comma-separated integers expected", file=sys.stderr)
            return 2
        adapters = [a for a in adapters if a[1] in wanted]
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
