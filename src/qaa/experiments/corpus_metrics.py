"""Per-input statistics of the corpus metrics (BLEU, chrF++, TER, NIST) and the per-input CIDEr-D and METEOR
scores, with the corpus values computed from them, so a bootstrap can resample inputs and recompute each
metric exactly. Definitions, scales and sources: :mod:`qaa.experiments.metrics` (which re-exports every public
name here). Inputs are validated by :func:`_normalise` as :mod:`qaa.experiments.metrics` describes."""
from __future__ import annotations

import threading
from typing import Sequence

__all__ = ["bleu_statistics", "bleu_from_stats", "brevity_penalty_from_stats", "length_ratio_from_stats",
           "ratio_from_stats", "chrf", "chrf_statistics", "chrf_from_stats", "ter", "ter_statistics",
           "ter_from_stats", "nist", "nist_statistics", "nist_from_stats", "cider", "cider_scores", "meteor",
           "meteor_scores", "NIST_ORDER"]

#: NIST's highest n-gram order (NIST's and NLTK's default).
NIST_ORDER = 5


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
    return [[int(v) for v in row] for row in BLEU()._extract_corpus_statistics(hyps, _streams(refs))]


def bleu_from_stats(stats) -> float:
    """Corpus BLEU (0-100) from per-input statistics of :func:`bleu_statistics` (``[N, 10]``, summed here)."""
    import numpy as np
    from sacrebleu.metrics import BLEU

    total = np.asarray(stats, dtype=np.float64).sum(axis=0)
    return float(BLEU()._compute_score_from_stats([int(round(v)) for v in total]).score)


def _streams(refs: list[list[str]]) -> list[list]:
    """sacrebleu reference streams: stream ``j`` holds every input's ``j``-th reference or ``None``."""
    width = max(len(group) for group in refs)
    return [[group[j] if j < len(group) else None for group in refs] for j in range(width)]


def brevity_penalty_from_stats(stats) -> float:
    """sacrebleu's BLEU brevity penalty (0-1) from :func:`bleu_statistics` rows (``[N, 10]``, summed here):
    ``exp(1 - r / c)`` when the hypotheses' length ``c`` is below the closest references' length ``r``, else 1;
    0 when ``c`` is 0 (Papineni et al. 2002, sacrebleu's ``BLEU.compute_bleu``)."""
    import numpy as np
    from sacrebleu.metrics import BLEU

    total = np.asarray(stats, dtype=np.float64).reshape(-1, 10).sum(axis=0)
    sys_len = int(round(total[0]))
    if sys_len == 0:
        return 0.0
    return float(BLEU()._compute_score_from_stats([int(round(v)) for v in total]).bp)


def length_ratio_from_stats(stats) -> float:
    """System/reference length ratio ``sys_len / ref_len`` (sacrebleu's ``ratio``: hypothesis tokens over the
    closest reference's tokens, summed over inputs) from :func:`bleu_statistics` rows or from ``[N, 2]``
    ``(sys_len, ref_len)`` rows. Unitless, >= 0; 1 means as long as the references.

    Raises:
        ValueError: the references' total length is 0.
    """
    import numpy as np

    arr = np.asarray(stats, dtype=np.float64)
    total = arr.reshape(-1, arr.shape[-1]).sum(axis=0)
    if total[1] <= 0:
        raise ValueError("the references have no tokens: no length ratio")
    return float(total[0] / total[1])


def ratio_from_stats(stats) -> float:
    """``100 * sum(column 0) / sum(column 1)`` of ``[N, 2]`` rows (0 when column 1 sums to 0): the reduction of
    count statistics such as the slot error rate's ``(errors, slots)``."""
    import numpy as np

    arr = np.asarray(stats, dtype=np.float64)
    total = arr.reshape(-1, 2).sum(axis=0)
    return float(100.0 * total[0] / total[1]) if total[1] > 0 else 0.0


def _chrf_metric():
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=2)


def chrf_statistics(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per-input chrF++ statistics of ``sacrebleu.metrics.CHRF(word_order=2)`` (per character 1..6-gram and word
    1..2-gram order: hypothesis, reference and matched counts of the input's best reference): ``[N, 24]`` ints.
    Summed over any subset they give its corpus chrF++ (:func:`chrf_from_stats`).

    Raises:
        ValueError / TypeError: as :func:`bleu`.
    """
    hyps, refs = _normalise(hypotheses, references_list)
    return [[int(v) for v in row] for row in _chrf_metric()._extract_corpus_statistics(hyps, _streams(refs))]


def chrf_from_stats(stats) -> float:
    """Corpus chrF++ (0-100) from :func:`chrf_statistics` rows (summed here)."""
    import numpy as np

    total = np.asarray(stats, dtype=np.float64).sum(axis=0)
    return float(_chrf_metric()._compute_score_from_stats([int(round(v)) for v in total]).score)


def chrf(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> float:
    """Corpus chrF++ (0-100): ``sacrebleu.metrics.CHRF(word_order=2).corpus_score`` over all references.

    Raises:
        ValueError / TypeError: as :func:`bleu`.
    """
    hyps, refs = _normalise(hypotheses, references_list)
    return float(_chrf_metric().corpus_score(hyps, _streams(refs)).score)


def ter_statistics(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> list[list[float]]:
    """Per-input TER statistics of ``sacrebleu.metrics.TER()``: ``[N, 2]`` rows ``(edits of the closest
    reference, mean reference length in words)``. Summed over a subset they give its corpus TER
    (:func:`ter_from_stats`).

    Raises:
        ValueError / TypeError: as :func:`bleu`.
    """
    from sacrebleu.metrics import TER

    hyps, refs = _normalise(hypotheses, references_list)
    return [[float(v) for v in row] for row in TER()._extract_corpus_statistics(hyps, _streams(refs))]


def ter_from_stats(stats) -> float:
    """Corpus TER (0-100 and above; lower is better) from :func:`ter_statistics` rows: ``100 * sum(edits) /
    sum(reference lengths)`` (sacrebleu's ``TER._compute_score_from_stats``)."""
    import numpy as np
    from sacrebleu.metrics import TER

    total = np.asarray(stats, dtype=np.float64).reshape(-1, 2).sum(axis=0)
    return float(TER()._compute_score_from_stats([float(v) for v in total]).score)


def ter(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> float:
    """Corpus TER (``sacrebleu.metrics.TER().corpus_score`` over all references; 0-100 and above, lower is better).

    Raises:
        ValueError / TypeError: as :func:`bleu`.
    """
    from sacrebleu.metrics import TER

    hyps, refs = _normalise(hypotheses, references_list)
    return float(TER().corpus_score(hyps, _streams(refs)).score)


def _tokens(text: str) -> list[str]:
    """Lower-cased sacrebleu 13a tokens (the tokenisation of NIST's ``mteval-v13a.pl``)."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    global _tok13a
    if _tok13a is None:
        _tok13a = Tokenizer13a()
    return _tok13a(text.lower()).split()


_tok13a = None


def nist_statistics(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]],
                    n: int = NIST_ORDER) -> list[list[float]]:
    """Per-input NIST statistics after NLTK's ``corpus_nist`` (Doddington 2002): ``[N, 2 n + 2]`` rows
    ``(info_1..info_n, hyp_ngrams_1..hyp_ngrams_n, sum over orders of the chosen reference's length, n * hypothesis
    length)``, where ``info_k`` sums the information weights ``log2(count(w_1..w_k-1) / count(w_1..w_k))`` (counts
    over all references of all N inputs) of the hypothesis k-grams matched (clipped) in the reference NLTK picks
    for that order (the largest ``(precision, matched info, hypothesis k-grams, reference length)``). Tokens:
    lower-cased sacrebleu 13a. Summing rows and :func:`nist_from_stats` gives NIST; on all N rows it equals
    ``nltk.translate.nist_score.corpus_nist`` on the same tokens. A bootstrap that sums resampled rows keeps the
    information weights of all N inputs' references.

    Raises:
        ValueError / TypeError: as :func:`bleu`; ``n`` below 1.
    """
    import math
    from collections import Counter

    from nltk.util import ngrams

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    hyps, refs = _normalise(hypotheses, references_list)
    hyp_tok = [_tokens(h) for h in hyps]
    ref_tok = [[_tokens(r) for r in group] for group in refs]
    freq: Counter = Counter()
    words = 0
    for group in ref_tok:
        for ref in group:
            for k in range(1, n + 1):
                freq.update(ngrams(ref, k))
            words += len(ref)
    weights = {}
    for gram, count in freq.items():
        head = gram[:-1]
        weights[gram] = math.log((freq[head] if head and head in freq else words) / count, 2)
    rows = []
    for hyp, group in zip(hyp_tok, ref_tok):
        info, total, ref_len = [0.0] * n, [0.0] * n, 0.0
        for k in range(1, n + 1):
            hyp_grams = Counter(ngrams(hyp, k)) if len(hyp) >= k else Counter()
            best = None
            for ref in group:
                ref_grams = Counter(ngrams(ref, k)) if len(ref) >= k else Counter()
                num = sum(weights[g] * c for g, c in (hyp_grams & ref_grams).items())
                den = sum(hyp_grams.values())
                cand = (0 if den == 0 else num / den, num, den, len(ref))
                best = cand if best is None or cand > best else best
            info[k - 1], total[k - 1] = best[1], best[2]
            ref_len += best[3]
        rows.append([float(v) for v in info + total] + [ref_len, float(n * len(hyp))])
    return rows


def nist_from_stats(stats) -> float:
    """NIST (0 to about 15) from :func:`nist_statistics` rows (summed here): ``sum_k info_k / hyp_ngrams_k`` (a
    term with no hypothesis k-grams counts 0; NLTK would divide by zero) times NLTK's ``nist_length_penalty``
    of the summed lengths (``exp(beta log(ratio)^2)``, ``beta = log 0.5 / log(1.5)^2``, for a length ratio below
    1; 0 for an empty output)."""
    import numpy as np
    from nltk.translate.nist_score import nist_length_penalty

    total = np.asarray(stats, dtype=np.float64)
    total = total.reshape(-1, total.shape[-1]).sum(axis=0)
    n = (total.shape[0] - 2) // 2
    precision = sum(total[k] / total[n + k] for k in range(n) if total[n + k] > 0)
    if total[-2] <= 0:
        return 0.0
    return float(precision * nist_length_penalty(total[-2], total[-1]))


def nist(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> float:
    """Corpus NIST (n = 5) of :func:`nist_statistics`; see the module docstring for how it relates to
    ``mteval-v13a.pl``.

    Raises:
        ValueError / TypeError: as :func:`bleu`.
    """
    return nist_from_stats(nist_statistics(hypotheses, references_list))


def _cider_inputs(hyps, refs):
    gts = {i: [" ".join(_tokens(r)) for r in group] for i, group in enumerate(refs)}
    res = {i: [" ".join(_tokens(h))] for i, h in enumerate(hyps)}
    return gts, res


def cider_scores(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> list[float]:
    """Per-input CIDEr-D (``pycocoevalcap.cider.Cider``: n = 4, sigma 6, document frequencies over the references
    of all N inputs; Vedantam et al. 2015) on lower-cased sacrebleu 13a tokens; CIDEr's own scale (0-10).

    Raises:
        ValueError / TypeError: as :func:`bleu`. ImportError: ``pycocoevalcap`` is missing.
    """
    from pycocoevalcap.cider.cider import Cider

    hyps, refs = _normalise(hypotheses, references_list)
    _, scores = Cider().compute_score(*_cider_inputs(hyps, refs))
    return [float(v) for v in scores]


def cider(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> float:
    """Corpus CIDEr-D: the mean of :func:`cider_scores` (pycocoevalcap's corpus score); 0-10."""
    scores = cider_scores(hypotheses, references_list)
    return float(sum(scores) / len(scores))


_meteor_proc = None
_meteor_lock = threading.Lock()


def _meteor_scorer():
    """The process-wide ``pycocoevalcap.meteor.meteor.Meteor`` (a METEOR 1.5 Java process), started on first use."""
    global _meteor_proc
    import shutil

    if shutil.which("java") is None:
        raise RuntimeError("METEOR needs Java: install a Java runtime (e.g. the Debian package "
                           "default-jre-headless) so that `java` is on the PATH")
    with _meteor_lock:
        if _meteor_proc is None:
            from pycocoevalcap.meteor.meteor import Meteor

            _meteor_proc = Meteor()
        return _meteor_proc


def _meteor_text(text: str) -> str:
    """One line for the jar's stdin protocol (no newlines, no field separator)."""
    return " ".join(text.replace("|||", " ").split())


def meteor_scores(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """METEOR 1.5 (``-l en -norm``) of pycocoevalcap's jar: ``(corpus score, per-input segment scores)``, both
    0-100. The corpus score comes from the jar's summed statistics, so it is not the mean of the segment scores.
    An empty hypothesis scores 0.

    Raises:
        ValueError / TypeError: as :func:`bleu`. RuntimeError: no ``java`` on the PATH.
        ImportError: ``pycocoevalcap`` is missing.
    """
    hyps, refs = _normalise(hypotheses, references_list)
    scorer = _meteor_scorer()
    gts = {i: [_meteor_text(r) or "." for r in group] for i, group in enumerate(refs)}
    res = {i: [_meteor_text(h)] for i, h in enumerate(hyps)}
    corpus, per_input = scorer.compute_score(gts, res)
    return 100.0 * float(corpus), [100.0 * float(v) for v in per_input]


def meteor(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> float:
    """Corpus METEOR 1.5 (0-100) of :func:`meteor_scores`."""
    return meteor_scores(hypotheses, references_list)[0]
