"""Test support: a tiny random Llama (and tokenizer) that needs no download."""
from __future__ import annotations

import argparse
from typing import Iterable

import torch

_TINY_CORPUS = (
    "name: The Eagle, eatType: coffee shop, food: Italian, priceRange: cheap, area: riverside, familyFriendly: yes",
    "The Eagle is a cheap Italian coffee shop by the riverside. It is family friendly.",
    "name: Blue Spice, eatType: restaurant, customer rating: 5 out of 5, near: Crowne Plaza Hotel",
    "Blue Spice is a highly rated restaurant near the Crowne Plaza Hotel in the city centre.",
    "(Alan_Bean | occupation | Test_pilot), (Alan_Bean | birthPlace | Wheeler,_Texas)",
    "Alan Bean, who was born in Wheeler, Texas, worked as a test pilot.",
    "Summarize the news article in one sentence. The council said the new bridge would open next year.",
    "A dog runs across the field to catch the ball while children play in the park.",
    "Describe the restaurant in one sentence given these attributes.",
    "Write one sentence that uses all of these words: dog, ball, field, catch, run.",
)


def _tiny_tokenizer(vocab: int, texts: Iterable[str] | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab < len(alphabet) + len(specials):
        raise ValueError(f"vocab must be at least {len(alphabet) + len(specials)} (256 bytes + 3 special tokens), "
                         f"got {vocab}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    corpus = list(_TINY_CORPUS) + ([str(t) for t in texts] if texts is not None else [])
    backend.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   padding_side="left")


def tiny_llama(seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
               vocab: int = 512, intermediate: int | None = None, texts: Iterable[str] | None = None):
    """A tiny randomly initialised ``LlamaForCausalLM`` and a matching tokenizer, built offline (test/CI helper).

    The tokenizer is a byte-level BPE (any text encodes, no unknown token) trained in memory on a small built-in
    corpus of task-like sentences plus ``texts``, wrapped in a ``PreTrainedTokenizerFast`` with ``<pad>`` (id 0),
    ``<s>`` (id 1) and ``</s>`` (id 2) and ``padding_side="left"``, like :func:`load_base_model`. The model has
    the SmolLM2 layout in miniature (grouped-query attention, SiLU MLP, RMSNorm, RoPE, tied embeddings), so
    ``v_proj`` maps ``hidden -> kv_heads * hidden // heads``. Nothing is downloaded and the global torch RNG
    state is left untouched.

    Args:
        seed: seed of the weight initialisation; equal arguments give identical weights.
        hidden: hidden size (default 64); must be divisible by ``heads`` with an even head size.
        layers: number of decoder layers (default 2).
        heads: attention heads (default 4).
        kv_heads: key/value heads (default 2); must divide ``heads``.
        vocab: largest vocabulary size for the BPE trainer (default 512, at least 259). The actual vocabulary
            can be smaller when the corpus has fewer merges; the model's ``vocab_size`` equals ``len(tokenizer)``.
        intermediate: MLP size; default ``2 * hidden``.
        texts: optional extra sentences for the tokenizer's training corpus.

    Returns:
        ``(model, tokenizer)``, the model in eval mode, float32.

    Raises:
        ValueError: inconsistent sizes.
    """
    sizes = {"hidden": hidden, "layers": layers, "heads": heads, "kv_heads": kv_heads, "vocab": vocab}
    if intermediate is not None:
        sizes["intermediate"] = intermediate
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    if hidden % heads or (hidden // heads) % 2:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads}) with an even head size")
    if heads % kv_heads:
        raise ValueError(f"kv_heads ({kv_heads}) must divide heads ({heads})")
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_tokenizer(vocab, texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval(), tokenizer


# ---------------------------------------------------------------- comparison tests
_NAMES = ["The Eagle", "Blue Spice", "The Mill", "Aromi", "Zizzi", "Cotto", "Strada", "The Wrestlers"]
_FOODS = ["Italian", "French", "Chinese", "Indian", "English"]


def fake_examples(task: str) -> list:
    """A small deterministic task in the shape of E2E or (for triple tasks) WebNLG, several references per
    input, in the vendored files' input formats."""
    from qaa.experiments.data import Example

    out = []
    for i, name in enumerate(_NAMES):
        food = _FOODS[i % len(_FOODS)]
        if task in FAKE_TRIPLE_TASKS:
            inp = f"({name.replace(' ', '_')} | cuisine | {food}), ({name.replace(' ', '_')} | area | riverside)"
        else:
            inp = f"name[{name}], food[{food}], area[riverside]"
        refs = (f"{name} serves {food} food by the riverside.", f"{name} is a {food} place near the river.")
        out.append(Example(inp, refs))
    return out


#: Task names whose fake data are triples.
FAKE_TRIPLE_TASKS = ("webnlg", "webnlg_unseen", "dart", "webnlg_en")


def fake_task_registry() -> dict:
    """Registry entries for the test tasks: each registered task name (but ``jsonl``) replaced by a one-pool task
    over :func:`fake_examples` with the real task's prompt and semantic check, split by the registry's own rule
    for pools (``split_three``). Use with ``monkeypatch.setattr(qaa.experiments.tasks, "TASKS", ...)``."""
    import dataclasses

    from qaa.experiments import tasks

    entries = dict(tasks.TASKS)
    for name, task in tasks.TASKS.items():
        if name == "jsonl":
            continue
        load = (lambda n: lambda data_dir: (fake_examples(n), [{"file": f"fake/{n}", "source": "test"}]))(name)
        entries[name] = dataclasses.replace(task, build=tasks._build_pool(load, "fake pool split three ways"))
    return entries


def compare_args(**kw) -> argparse.Namespace:
    """A ``qaa compare`` namespace with every option at its parser default, overridden by ``kw``."""
    base = dict(model="unused", seed=None, max_length=None, max_new_tokens=None, test_fraction=0.25, eval_size=None,
                threads=1, no_progress=True, preset="cpu", tasks=None, methods=None, full=False, steps=None,
                batch_size=None, no_bertscore=False, out="unused", lr=None, sora_xi=None, device="cpu")
    base.update(kw)
    return argparse.Namespace(**base)


# ---------------------------------------------------------------- distributed tests
def torchrun(args, nproc: int = 2, timeout: float = 300, env: dict | None = None):
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node nproc *args`` in its own session;
    returns the ``CompletedProcess`` (text output). On timeout the whole session (launcher and ranks) is killed
    and ``subprocess.TimeoutExpired`` raised, so a hung collective never outlives the test."""
    import os
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
