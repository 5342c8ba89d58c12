"""Tests for qaa.experiments.metrics against hand-computed values and an independent BERTScore computation."""
import math

import pytest
import torch

import qaa.experiments.metrics as metrics
from qaa.experiments.metrics import BERTSCORE_LABEL, bertscore, bleu, evaluate_generations, minilm_model_dir, rouge

CAT = "the cat sat on the mat"


# ------------------------------------------------------------------------------------------------ BLEU

def test_bleu_identical_is_100():
    assert bleu([CAT, "a dog barks"], [[CAT], ["a dog barks"]]) == pytest.approx(100.0)


def test_bleu_hand_computed():
    # 7-token hypothesis, 6-token reference, every reference n-gram matched: p_n = 6/7, 5/6, 4/5, 3/4, BP = 1.
    assert bleu([CAT + " today"], [[CAT]]) == pytest.approx(100 * (3 / 7) ** 0.25, abs=1e-9)
    # Hypothesis shorter than the reference: all p_n = 1, brevity penalty exp(1 - 7/6).
    assert bleu([CAT], [[CAT + " today"]]) == pytest.approx(100 * math.exp(1 - 7 / 6), abs=1e-9)


def test_bleu_variable_reference_counts():
    hyps = [CAT, "a dog barks loudly at night", "green apples are sour"]
    refs = [["a completely different sentence here", "one more unrelated reference text", CAT],
            ["a dog barks loudly at night"],
            ["nothing matches this one at all", "green apples are sour"]]
    assert bleu(hyps, refs) == pytest.approx(100.0)
    # The closest reference length is used for the brevity penalty: the matching 7-token one here.
    assert bleu([CAT], [[CAT + " today", CAT, "x"]]) == pytest.approx(100.0)


def test_bleu_missing_references_are_not_empty_strings():
    # Segment 2 has one reference of 6 tokens; its 2-token hypothesis must be compared with length 6, not
    # with a 0-length padding reference: ref_len 12, hyp_len 8, all n-gram precisions 1, BP = exp(1 - 12/8).
    hyps = [CAT, "the cat"]
    refs = [[CAT, "x y z"], [CAT]]
    assert bleu(hyps, refs) == pytest.approx(100 * math.exp(-0.5), abs=1e-9)


def test_bleu_empty_hypothesis_and_single_string_references():
    assert bleu([""], [[CAT]]) == 0.0
    assert bleu([CAT], [CAT]) == pytest.approx(100.0)                 # a bare string is one reference


# ------------------------------------------------------------------------------------------------ ROUGE

def test_rouge_hand_computed():
    # hyp / ref tokens: the cat sat on the mat / the cat is on the mat
    # unigram overlap 5 of 6 each side; bigram overlap (the cat, on the, the mat) 3 of 5; LCS 5.
    scores = rouge([CAT], [["the cat is on the mat"]])
    assert scores == pytest.approx({"rouge1": 500 / 6, "rouge2": 60.0, "rougeL": 500 / 6})


def test_rouge_takes_best_reference_and_averages():
    scores = rouge([CAT, "completely unrelated words"], [["a dog", "the cat is on the mat"], [CAT]])
    assert scores == pytest.approx({"rouge1": 250 / 6, "rouge2": 30.0, "rougeL": 250 / 6})
    assert rouge([CAT], [["the cat is on the mat", CAT]]) == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})


def test_rouge_uses_stemming_and_no_nltk_download(monkeypatch):
    import nltk

    def no_download(*args, **kwargs):
        raise AssertionError("NLTK download attempted")

    monkeypatch.setattr(nltk, "download", no_download)
    assert rouge(["Cats running"], [["cat runs"]])["rouge1"] == pytest.approx(100.0)
    assert rouge([""], [[CAT]]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


# ------------------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("fn", [bleu, rouge, bertscore, evaluate_generations])
def test_bad_inputs_raise(fn):
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        fn(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no hypotheses"):
        fn([], [])
    with pytest.raises(ValueError, match="no non-empty reference"):
        fn(["a"], [[]])
    with pytest.raises(ValueError, match="no non-empty reference"):
        fn(["a"], [["", "  "]])
    with pytest.raises(TypeError):
        fn("a string", ["a"])
    with pytest.raises(TypeError):
        fn([None], [["a"]])
    with pytest.raises(TypeError):
        fn(["a"], [[1]])


# ------------------------------------------------------------------------------------------------ BERTScore

def _reference_bertscore(hyp: str, ref: str):
    """BERTScore (P, R, F) by hand: MiniLM last-layer token embeddings, greedy cosine matching.

    Like bert-score without idf: [CLS]/[SEP] of the scored side get weight 0, but can be matched.
    """
    from transformers import AutoModel, AutoTokenizer

    folder = str(minilm_model_dir())
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()

    def embed(text):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        return torch.nn.functional.normalize(h, dim=-1)

    h, r = embed(hyp), embed(ref)
    sim = h @ r.T
    precision = sim[1:-1].max(dim=1).values.mean().item()
    recall = sim[:, 1:-1].max(dim=0).values.mean().item()
    return precision, recall, 2 * precision * recall / (precision + recall)


def test_bertscore_matches_independent_computation():
    hyp, ref = "A cat was sitting on the mat.", "The cat sat on a rug near the door."
    p, r, f = _reference_bertscore(hyp, ref)
    scores = bertscore([hyp], [[ref]])
    assert scores["precision"] == pytest.approx(100 * p, abs=1e-3)
    assert scores["recall"] == pytest.approx(100 * r, abs=1e-3)
    assert scores["f1"] == pytest.approx(100 * f, abs=1e-3)
    assert 0 < scores["f1"] < 100


def test_bertscore_identical_multireference_and_empty():
    same = bertscore([CAT], [[CAT]])
    assert same == pytest.approx({"precision": 100.0, "recall": 100.0, "f1": 100.0}, abs=1e-3)
    hyp, refs = "a small dog", ["a little puppy", "the cat sat on the mat by the door"]
    single = [bertscore([hyp], [[ref]]) for ref in refs]
    multi = bertscore([hyp], [refs])
    for key in ("precision", "recall", "f1"):          # bert-score takes each component's best reference
        assert multi[key] == pytest.approx(max(s[key] for s in single), abs=1e-4)
    both = bertscore([hyp, ""], [refs, [CAT]])        # an empty hypothesis scores 0 and counts in the mean
    assert both == pytest.approx({k: v / 2 for k, v in multi.items()}, abs=1e-4)
    assert bertscore([" "], [[CAT]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_bertscore_model_is_cached_per_process():
    bertscore(["x"], [["y"]])
    scorer = metrics._scorers["cpu"]
    bertscore(["x z"], [["y"]], batch_size=1)
    assert metrics._scorers["cpu"] is scorer
    with pytest.raises(ValueError, match="batch_size"):
        bertscore(["x"], [["y"]], batch_size=0)


# ------------------------------------------------------------------------------------------------ combined

def test_evaluate_generations_combines_all():
    hyps = [CAT, "a dog barks"]
    refs = [["the cat is on the mat", "a cat on a mat"], ["a dog barks"]]
    scores = evaluate_generations(hyps, refs)
    assert scores["bleu"] == pytest.approx(bleu(hyps, refs))
    for key, value in rouge(hyps, refs).items():
        assert scores[key] == pytest.approx(value)
    for key, value in bertscore(hyps, refs).items():
        assert scores[f"bertscore_{key}"] == pytest.approx(value)
    assert set(evaluate_generations(hyps, refs, bertscore=False, extended=False)) == {"bleu", "rouge1", "rouge2",
                                                                                       "rougeL"}
    assert BERTSCORE_LABEL == "BERTScore (MiniLM-L6)"


# ------------------------------------------------------------------------------------------------ length, chrF++, TER, NIST, CIDEr, METEOR

import shutil

import numpy as np

HYPS = ["the cat sat on the mat", "a dog barks", "green apples are sour today", ""]
REFS = [["the cat is on the mat", "a cat sat on a mat"], ["a dog barks loudly"], ["green apples are sour"],
        ["nothing"]]


def test_brevity_penalty_and_length_ratio_by_hand():
    stats = metrics.bleu_statistics([CAT], [[CAT + " today"]])          # 6 tokens against 7
    assert metrics.brevity_penalty_from_stats(stats) == pytest.approx(math.exp(1 - 7 / 6))
    assert metrics.length_ratio_from_stats([row[:2] for row in stats]) == pytest.approx(6 / 7)
    scores = evaluate_generations([CAT, "a dog"], [[CAT + " today"], ["a dog barks"]], bertscore=False,
                                  meteor=False)
    assert scores["bleu_length_ratio"] == pytest.approx(8 / 10)          # (6 + 2) / (7 + 3)
    assert scores["bleu_brevity_penalty"] == pytest.approx(math.exp(1 - 10 / 8))


def test_chrf_ter_match_sacrebleu_and_their_statistics():
    from sacrebleu.metrics import CHRF, TER

    streams = [[r[0] for r in REFS], [r[1] if len(r) > 1 else None for r in REFS]]
    assert metrics.chrf(HYPS, REFS) == pytest.approx(CHRF(word_order=2).corpus_score(HYPS, streams).score)
    assert metrics.ter(HYPS, REFS) == pytest.approx(TER().corpus_score(HYPS, streams).score)
    assert metrics.chrf_from_stats(metrics.chrf_statistics(HYPS, REFS)) == pytest.approx(metrics.chrf(HYPS, REFS))
    assert metrics.ter_from_stats(metrics.ter_statistics(HYPS, REFS)) == pytest.approx(metrics.ter(HYPS, REFS))
    # TER by hand: one substitution ("sat" -> "is") against the closest 6-word reference: 1 / 6
    assert metrics.ter([CAT], [["the cat is on the mat"]]) == pytest.approx(100 / 6)
    assert metrics.chrf([CAT], [[CAT]]) == pytest.approx(100.0)


def test_nist_equals_nltk_corpus_nist():
    from nltk.translate.nist_score import corpus_nist

    hyps, refs = HYPS[:3], REFS[:3]
    tok = metrics._tokens
    expected = corpus_nist([[tok(r) for r in group] for group in refs], [tok(h) for h in hyps], n=5)
    assert metrics.nist(hyps, refs) == pytest.approx(expected)
    # an empty hypothesis scores 0 where NLTK would divide by zero
    assert metrics.nist([""], [[CAT]]) == 0.0


def test_cider_matches_pycocoevalcap():
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [" ".join(metrics._tokens(r)) for r in g] for i, g in enumerate(REFS)}
    res = {i: [" ".join(metrics._tokens(h))] for i, h in enumerate(HYPS)}
    mean, per = Cider().compute_score(gts, res)
    assert metrics.cider_scores(HYPS, REFS) == pytest.approx(list(per))
    assert metrics.cider(HYPS, REFS) == pytest.approx(mean)
    assert metrics.cider_scores(HYPS, REFS)[3] == 0.0


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR 1.5 needs Java")
def test_meteor_identical_is_100_and_empty_is_0():
    corpus, per = metrics.meteor_scores([CAT, ""], [[CAT], [CAT]])
    assert per[0] == pytest.approx(100.0, abs=0.01) and per[1] == 0.0
    assert 0 < corpus < 100


def test_per_input_statistics_sum_to_run_scores():
    per = metrics.per_input_scores(HYPS, REFS, bertscore=False, meteor=False)
    run = evaluate_generations(HYPS, REFS, bertscore=False, meteor=False)
    assert metrics.bleu_from_stats(per["bleu_stats"]) == pytest.approx(run["bleu"])
    assert metrics.length_ratio_from_stats(per["length_stats"]) == pytest.approx(run["bleu_length_ratio"])
    assert metrics.chrf_from_stats(per["chrf_stats"]) == pytest.approx(run["chrfpp"])
    assert metrics.ter_from_stats(per["ter_stats"]) == pytest.approx(run["ter"])
    assert metrics.nist_from_stats(per["nist_stats"]) == pytest.approx(run["nist"])
    assert np.mean(per["cider"]) == pytest.approx(run["cider"])
    assert per["bleu_length_ratio"][3] == 0.0 and per["bleu_brevity_penalty"][3] == 0.0
    assert "meteor" not in per and "meteor" not in run


def test_semantic_checks_through_evaluate_generations():
    mrs = ["name[Aromi], eatType[pub], area[riverside]", "name: Zizzi, food: French"]
    hyps = ["Aromi is a pub by the river.", "Zizzi serves Italian food."]
    refs = [["Aromi is a riverside pub."], ["Zizzi serves French food."]]
    run = evaluate_generations(hyps, refs, bertscore=False, extended=False, inputs=mrs, semantic="slots")
    assert run["ser"] == pytest.approx(100 * 1 / 5)                  # one wrong food over 5 slots
    per = metrics.per_input_scores(hyps, refs, bertscore=False, extended=False, inputs=mrs, semantic="slots")
    assert per["ser_stats"] == [[0, 3], [1, 2]] and per["ser"] == pytest.approx([0.0, 50.0])
    assert per["slot_errors"][1]["wrong"] == [["food", "French", "italian"]]
    triples = ["(A_b | r | C)", "(D | r | E_f)"]
    run = evaluate_generations(["A b and C", "D only"], [["x"], ["y"]], bertscore=False, extended=False,
                               inputs=triples, semantic="entities")
    assert run["entity_coverage"] == pytest.approx(100 * (1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="needs inputs"):
        evaluate_generations(hyps, refs, bertscore=False, extended=False, semantic="slots")
    with pytest.raises(ValueError, match="semantic must be"):
        evaluate_generations(hyps, refs, bertscore=False, extended=False, inputs=mrs, semantic="ser")
    with pytest.raises(ValueError, match="2 hypotheses but 1 inputs"):
        evaluate_generations(hyps, refs, bertscore=False, extended=False, inputs=mrs[:1], semantic="slots")


def test_unavailable_metrics_say_why():
    out = metrics.unavailable_metrics()
    assert {"bleurt", "moverscore"} <= set(out) and all(isinstance(v, str) and v for v in out.values())
    assert ("meteor" in out) == (shutil.which("java") is None)
