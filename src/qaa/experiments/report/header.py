"""The report's opening: the model, the budget, the protocol as this run applied it (how each rate was set,
the seeds, the significance rule), the caveats, the machine and the versions."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

from .. import registry
from ..metrics import BERTSCORE_LABEL
from ..provenance import QAA_DEFAULTS, defaults_overlap
from ..results import split_key
from ..settings import WARMUP_SHARE
from ..stats import seed_level_factor
from ..train import describe_optimizer
from .format import NLL_LINE, _finite
from .records import REFERENCE, _order

# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------

#: How a method's rate was set, as the selection records say (``swept``, ``given_by``), and how the protocol
#: paragraph words it.
RATE_SOURCES = {
    "swept": "chosen by the lowest teacher-forced **validation** NLL of runs with training seed {seed} (grids below)",
    "--lr": "given on the command line (`--lr`), not chosen by this run",
    "--lr-from": "read from the validation selection of an earlier comparison ({option}, checked to share this "
                 "run's split seed and fractions; each task's selection table names the task that chose the rate), "
                 "not chosen by this run",
    "given": "given (`--lr` or `--lr-from`), not chosen by this run",
    "default": "the registry's default rate, with no sweep (learning-rate selection was off in this run)",
}


def rate_sources(results: dict) -> Dict[str, List[str]]:
    """How each method's rate was set, from the run's selection records: ``{source: [methods in registry
    order]}`` with source one of :data:`RATE_SOURCES` (``"swept"``; ``"--lr"`` / ``"--lr-from"`` from the record's
    ``given_by``, ``"given"`` for a record without it; ``"default"``). A method whose tasks differ is listed under
    each of its sources."""
    found: Dict[str, set] = {}
    for key, sel in results.get("selection", {}).items():
        if not isinstance(sel, dict) or sel.get("status") != "ok":
            continue
        method = split_key(key)[1]
        if sel.get("swept"):
            source = "swept"
        elif sel.get("given"):
            source = sel.get("given_by") if sel.get("given_by") in ("--lr", "--lr-from") else "given"
        else:
            source = "default"
        found.setdefault(source, set()).add(method)
    return {src: _order(found[src]) for src in RATE_SOURCES if src in found}


def selection_seed(results: dict) -> int:
    """The training seed the validation sweeps used: a swept selection record's ``seed``, else the settings'
    ``selection_seed``, else 0 (runs recorded before the selection seed was a setting used seed 0). Methods
    without a sweep record their own validation seed (the first final seed)."""
    for sel in results.get("selection", {}).values():
        if (isinstance(sel, dict) and sel.get("status") == "ok" and sel.get("swept")
                and isinstance(sel.get("seed"), int)):
            return sel["seed"]
    return int(results.get("settings", {}).get("selection_seed", 0))


def _threads(results: dict) -> Optional[int]:
    """The run's torch threads: the setting, or (for 0, the library default) what the machine record says."""
    threads = results.get("settings", {}).get("threads")
    if not threads:
        threads = results.get("machine", {}).get("torch_threads")
    return threads if isinstance(threads, int) and threads > 0 else None


def shared_cores(results: dict) -> Optional[bool]:
    """Whether load beyond this run's own threads was measured: the 1-minute load average recorded at the start,
    before any work (``machine.load_average_start[0]``), above the run's thread count. None when either was not
    recorded."""
    load, threads = results.get("machine", {}).get("load_average_start"), _threads(results)
    if not load or not _finite(load[0]) or threads is None:
        return None
    return load[0] > threads


def _names(methods: Sequence[str]) -> str:
    labels = [registry.label(m) for m in methods]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _protocol(results: dict) -> str:
    s = results.get("settings", {})
    sources, seed = rate_sources(results), selection_seed(results)
    # the file each --lr-from selection read (recorded with the selection; older records: the settings')
    paths = sorted({sel["lr_from"] for sel in results.get("selection", {}).values()
                    if isinstance(sel, dict) and sel.get("given_by") == "--lr-from" and sel.get("lr_from")})
    path = ", ".join(paths) or s.get("lr_from")
    option = f"`--lr-from {path}`" if path else "`--lr-from`"
    parts = []
    for src, methods in sources.items():
        how = RATE_SOURCES[src].format(seed=seed, option=option)
        who = "every method" if len(sources) == 1 else _names(methods)
        parts.append(f"{who}: {how}")
    rates = ("Protocol: the peak learning rate (and, for methods with circuit angles, the angles' rate ratio; for "
             "SoRA, its threshold) of " + "; ".join(parts) + "." if parts else "Protocol: no method has a recorded rate yet.")
    selections = [(split_key(k)[1], v) for k, v in results.get("selection", {}).items() if isinstance(v, dict)]
    centred = sorted(m for m, sel in selections if sel.get("grid_centre") is not None)
    if centred:
        carried = sorted({m for m, sel in selections if sel.get("ratio_carried")})
        rates += (f" The sweeps of {_names(list(dict.fromkeys(centred)))} tried a grid (c/3, c, 3c) around the rate c "
                  "of an earlier comparison (`--lr-grid-from`; each selection table names it), widened at an edge"
                  + (f"; {_names(carried)} kept that comparison's angle-rate ratio, which this run did not sweep "
                     "again" if carried else "") + ".")
    return rates + " No test score enters this run's choices."


def _seed_sentence(n_seeds: int) -> str:
    """The seed-level check, worded for ``n_seeds``."""
    if n_seeds < 2:
        return ("the seed-level paired t interval (per-seed differences on all inputs, Student's t with seeds - 1 "
                f"degrees of freedom), which needs 2 or more seeds: with {n_seeds} seed there is none, so no "
                "difference can be called significant")
    t = seed_level_factor(n_seeds) * math.sqrt(n_seeds)
    return ("the seed-level paired t interval (per-seed differences on all inputs, Student's t with seeds - 1 "
            f"degrees of freedom: with {n_seeds} seeds its half-width is t({n_seeds - 1}) = {t:.2f} / "
            f"sqrt({n_seeds}) = {seed_level_factor(n_seeds):.2f} standard deviations of the per-seed differences, "
            f"and the bootstrap's seed level draws only {math.comb(2 * n_seeds - 1, n_seeds)} distinct seed sets)")


def seed_notice(n_seeds: int) -> Optional[str]:
    """With fewer than 3 training seeds: which of the three checks can pass at that seed count (None from 3 on).
    The same text ``qaa compare`` prints at its start."""
    if n_seeds >= 3:
        return None
    if n_seeds < 2:
        return (f"Only {n_seeds} training seed: there is no seed-level t interval, so the seed-level check cannot "
                "pass and no difference can be called significant; the bootstrap interval and the p-value can "
                "exclude 0, but they draw test inputs only (one seed has no seed variance to resample). Use 3 or "
                "more seeds (the default) for verdicts.")
    t = seed_level_factor(2) * math.sqrt(2)
    return (f"Only 2 training seeds: the seed-level t interval is the mean of the two per-seed differences ± "
            f"t(1) = {t:.2f} x sd / sqrt(2), i.e. ± {seed_level_factor(2):.2f} standard deviations of the per-seed "
            f"differences: it excludes 0 only when the two per-seed differences have the same sign and differ by "
            f"less than {200 / t:.1f}% of their mean, so the seed-level check passes only for a large, very "
            "consistent effect; the bootstrap interval and the Holm-adjusted p can pass (the bootstrap draws "
            "3 distinct seed sets). Use 3 or more seeds (the cpu and gpu presets' default) for verdicts.")


def _budget(results: dict) -> str:
    s = results.get("settings", {})
    n = (s.get("steps") or 0) * (s.get("batch_size") or 0)
    epochs = {t: n / i["train_pairs"] for t, i in results.get("tasks", {}).items()
              if isinstance(i, dict) and i.get("train_pairs")}
    text = f"the budget is {s.get('steps')} steps x {s.get('batch_size')} sequences = {n} sequences per run"
    if epochs:
        text += " (" + ", ".join(f"{e:.2f} epochs of {t}'s training pairs" for t, e in epochs.items()) + ")"
        if all(e < 1 for e in epochs.values()):
            text += ", so this measures early adaptation, not capacity"
    return text


def _defaults_caveat(results: dict) -> Optional[str]:
    """The sentence on QAA's defaults: where they were set (the recorded provenance) and how many of this run's
    test inputs, per task, are among the inputs they were judged on. None when QAA is not in the run."""
    if not any(k.endswith(f"|{REFERENCE}") for k in results.get("selection", {})):
        return None
    prov = results.get("qaa_defaults") or QAA_DEFAULTS
    judged = prov.get("judged_on") or []
    where = (f"QAA's own defaults ({prov.get('what')}) were set in earlier runs on {prov.get('task')} (split seed "
             f"{prov.get('split_seed')}; " + ", ".join(f"`{r['run']}`, {r['results']}" for r in prov.get("set_in", []))
             + f"), judged on {len(judged)} held-out inputs")
    counts, unknown = {}, []
    for task, info in results.get("tasks", {}).items():
        texts = info.get("test_input_texts") if isinstance(info, dict) else None
        if texts is None:
            unknown.append(task)
        else:
            counts[task] = (len(defaults_overlap(texts, prov)), len(texts))
    overlapping = {t: c for t, c in counts.items() if c[0]}
    if overlapping:
        text = where + ": " + "; ".join(f"{k} of this run's {n} test inputs on {t} are among them" for t, (k, n)
                                         in overlapping.items()) + " (their scores may favour QAA's defaults)"
    elif counts:
        text = where + f"; none of this run's test inputs ({', '.join(f'{n} on {t}' for t, (_, n) in counts.items())}) " \
                       "is among them"
    else:
        text = where
    if unknown:
        text += f"; this run did not record its test inputs on {', '.join(unknown)}, so their overlap is unknown"
    return text


def _machine_line(results: dict) -> str:
    s, m = results.get("settings", {}), results.get("machine", {})
    threads, start, end = _threads(results), m.get("load_average_start"), m.get("load_average_end")
    text = (f"Machine: {m.get('cpu_model', m.get('processor', '?'))}, {m.get('cpu_affinity', m.get('cpu_count'))} "
            f"cores, device {m.get('device')}, torch threads {s.get('threads')}")
    shared = shared_cores(results)
    if shared is None:
        text += "; no load average before the run's work was recorded, so other load on the cores is unknown"
    elif shared:
        text += (f"; the 1-minute load average at the start, before any work, was {start[0]:.2f}, above this run's "
                 f"{threads} thread(s): other processes shared the cores, so step times and memory are "
                 "indicative, not a benchmark (benchmarks/ has those)")
    else:
        text += (f"; the 1-minute load average at the start, before any work, was {start[0]:.2f}, not above this "
                 f"run's {threads} thread(s): no other load was measured at the start")
    if end:
        text += f"; at the end {end[0]:.2f} (this run's own threads included)"
    versions = ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items() if v)
    return text + (f". Versions: {versions}." if versions else ".")


def _nll_line(results: dict) -> str:
    """:data:`NLL_LINE`, or, for evaluations recorded before ``metrics.nll`` was the per-input mean (their
    metrics hold no ``nll_token_weighted``), the line that says their ``metrics.nll`` is the token-weighted one."""
    evals = [e for e in results.get("evals", {}).values() if isinstance(e, dict) and e.get("status") == "ok"]
    if all("nll_token_weighted" in e.get("metrics", {}) for e in evals):
        return NLL_LINE
    return ("Test NLL in this report: the mean over test inputs of each input's NLL (nats per target token over all "
            "its references), the quantity the bootstrap resamples. This run's results.json was recorded before "
            "that was the name's meaning: its `metrics.nll` is token-weighted (every target token of every input "
            "weighted equally), not the report's.")


def _header(results: dict) -> List[str]:
    s = results.get("settings", {})
    seeds_list = list(s.get("seeds", []))
    seeds = ", ".join(str(x) for x in seeds_list)
    n_seeds = len(seeds_list)
    lines = ["# qaa compare: results", "",
             f"Model: {results.get('model_label', s.get('model'))}. Preset `{s.get('preset')}`: {s.get('steps')} "
             f"optimizer steps x {s.get('batch_size')} sequences per run ({describe_optimizer(WARMUP_SHARE)}); "
             f"{n_seeds} training seed{'s' if n_seeds != 1 else ''} ({seeds}); split seed "
             f"{s.get('split_seed')} (train / validation / test disjoint by input).",
             "",
             _protocol(results) + " Each number is the mean over seeds ± the standard "
             "deviation over seeds, with a 95% bootstrap interval in brackets (2000 replicates drawing both the "
             "test inputs and the training seeds with replacement). Differences with QAA are paired (the same "
             "drawn inputs and seeds for both methods; only methods with every seed scored). A difference is called "
             "significant only when three checks reject 0: its bootstrap interval; " + _seed_sentence(n_seeds)
             + "; and the bootstrap p-value after Holm's adjustment over the "
             "comparisons of its table. *n.s.*: the bootstrap interval includes 0; *n.s.†*: it excludes 0 but "
             "another check does not. Test NLL: per test "
             "input, nats per target token over all its references, averaged over inputs (lower is better); "
             "validation NLL: nats per target token over all validation pairs; BLEU (sacrebleu corpus BLEU), ROUGE-L (rouge-score F1, best "
             f"reference) and {BERTSCORE_LABEL} (F1 with all-MiniLM-L6-v2, not comparable with roberta-large "
             "BERTScore) are 0-100, higher is better.",
             "",
             _nll_line(results)]
    notice = seed_notice(n_seeds)
    if notice:
        lines += ["", "**Seeds.** " + notice]
    caveats = []
    sources, sel_seed = rate_sources(results), selection_seed(results)
    swept = sources.get("swept", [])
    if swept and sel_seed in seeds_list:
        extra = [what for m, what in ((REFERENCE, "QAA's includes the angle-rate ratio"),
                                      ("sora", "SoRA's includes its threshold")) if m in swept]
        angles = (": " + "; ".join(extra)) if extra else ""
        who = "every method" if len(sources) == 1 else _names(swept)
        caveats.append(f"training seed {sel_seed} of {who} is the run that won its validation sweep (a mild "
                       "selection effect in its favour, larger for methods whose sweep tried more configurations"
                       f"{angles})")
    elif swept:
        caveats.append(f"the sweeps trained with selection seed {sel_seed}, which is not one of the final seeds, so "
                       "no final run was kept for having won its sweep")
    caveats.append(_budget(results))
    defaults = _defaults_caveat(results)
    if defaults:
        caveats.append(defaults)
    lines += ["", "Read with care: " + "; ".join(caveats) + ".", "", _machine_line(results)]
    excluded = s.get("excluded") or {}
    for method, why in excluded.items():
        lines += ["", f"Not run in this preset: **{registry.label(method)}**. {why}"]
    return lines


