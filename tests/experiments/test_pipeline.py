"""Task preparation shared by both commands (qaa.experiments.pipeline): lengths fitted to the training split
and counted by hand with the tokenizer, cut and dropped pairs under a cap, every test reference owned by its
input."""
import pytest
from transformers import AutoTokenizer

from qaa.experiments import pipeline
from qaa.experiments.tasks import format_prompt


@pytest.fixture
def prepared(tiny_model_dir, fake_tasks):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    splits = pipeline.load_splits("e2e", split_seed=0, val_fraction=0.1, test_fraction=0.2)
    return tok, splits


def _lengths(tok, examples):
    """(prompt + " " + reference + eos, reference + eos) token counts of every pair, by hand."""
    out = []
    for e in examples:
        prompt = len(tok(format_prompt("e2e", e.input), add_special_tokens=False)["input_ids"])
        for ref in e.references:
            target = len(tok(" " + ref.strip(), add_special_tokens=False)["input_ids"]) + 1
            out.append((prompt + target, target))
    return out


def test_lengths_are_fitted_to_the_training_split(prepared):
    tok, splits = prepared
    data = pipeline.prepare_task("e2e", tok, splits)
    lengths = _lengths(tok, splits.train)
    assert data.max_length == max(t for t, _ in lengths) and data.max_new_tokens == max(g for _, g in lengths)
    assert data.info["train_pairs_cut"] == data.info["train_pairs_dropped"] == 0
    assert len(data.encoded_train) == len(lengths) == data.info["train_pairs"]
    # every test reference is a pair owned by its input, in order
    owners = [i for i, e in enumerate(splits.test) for _ in e.references]
    assert data.test_owner == owners and len(data.test_pairs) == len(owners)


def test_a_length_cap_counts_cut_and_dropped_pairs(prepared):
    tok, splits = prepared
    lengths = _lengths(tok, splits.train)
    cap = sorted(t for t, _ in lengths)[len(lengths) // 2]       # the median total: about half are longer
    data = pipeline.prepare_task("e2e", tok, splits, max_length=cap, max_new_tokens=5)
    prompts = [t - g for t, g in lengths]
    assert data.info["train_pairs_dropped"] == sum(p >= cap for p in prompts)
    assert data.info["train_pairs_cut"] == sum(t > cap > p for (t, _), p in zip(lengths, prompts))
    assert data.info["train_pairs_cut"] + data.info["train_pairs_dropped"] > 0   # the cap bites
    assert data.max_length == cap and data.max_new_tokens == 5


def test_eval_size_beyond_the_test_split_names_the_option(fake_tasks):
    splits = pipeline.load_splits("e2e", split_seed=0, val_fraction=0.1, test_fraction=0.2)
    with pytest.raises(ValueError, match="--eval-size 99 exceeds"):
        pipeline.load_splits("e2e", split_seed=0, val_fraction=0.1, test_fraction=0.2, eval_size=99)
    capped = pipeline.load_splits("e2e", split_seed=0, val_fraction=0.1, test_fraction=0.2, eval_size=1)
    assert [e.input for e in capped.test] == [splits.test[0].input]
