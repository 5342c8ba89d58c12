"""The size sweep's configurations (registry.SIZE_SWEEP): each attaches, trains, saves and reloads with
identical logits, and its trainable-parameter count equals the closed-form count of its configuration."""
import math

import pytest
import torch

from qaa.experiments import registry
from qaa.experiments.train import collate
from support import tiny_llama

HIDDEN, LAYERS, HEADS, KV_HEADS, INTER = 64, 2, 4, 2, 128
HEAD_DIM = HIDDEN // HEADS
#: [in, out] of each Llama linear layer of the tiny model.
SHAPES = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (HIDDEN, KV_HEADS * HEAD_DIM), "v_proj": (HIDDEN, KV_HEADS * HEAD_DIM),
          "o_proj": (HIDDEN, HIDDEN), "gate_proj": (HIDDEN, INTER), "up_proj": (HIDDEN, INTER),
          "down_proj": (INTER, HIDDEN)}
QV, QKVO = ("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj")
ALL = QKVO + ("gate_proj", "up_proj", "down_proj")


def _qaa_count(targets, n_layers=4, readout="z"):
    """Closed form: per adapted layer, ``n_layers * n`` RY angles (one per wire per ansatz layer) and the
    zero-initialised output map ``features x out`` (no bias), with ``n = ceil(log2 in)`` qubits and ``n``
    features (``z``) or ``2**n`` (``probs``); times the decoder layers."""
    total = 0
    for name in targets:
        d_in, d_out = SHAPES[name]
        n = math.ceil(math.log2(d_in))
        total += n_layers * n + (n if readout == "z" else 2 ** n) * d_out
    return LAYERS * total


EXPECTED = {
    "qaa": _qaa_count(QV), "qaa_l1": _qaa_count(QV, 1), "qaa_qkvo": _qaa_count(QKVO),
    "qaa_qkvo_l1": _qaa_count(QKVO, 1), "qaa_all": _qaa_count(ALL), "qaa_all_l1": _qaa_count(ALL, 1),
    "qaa_probs": _qaa_count(QV, readout="probs"), "qaa_rescale": _qaa_count(QV), "qaa_std": _qaa_count(QV),
    "qaa_std_l1": _qaa_count(QV, 1),
    # LoRA: A [r, in] and B [out, r] per adapted layer (q, v)
    **{f"lora_r{r}": LAYERS * sum(r * (SHAPES[m][0] + SHAPES[m][1]) for m in QV) for r in (1, 2, 4, 16)},
    "lora": LAYERS * sum(8 * (SHAPES[m][0] + SHAPES[m][1]) for m in QV),
    # prefix tuning: one key and one value per virtual token, layer and KV head (sized for grouped-query attention)
    **{f"prefix_t{t}": t * LAYERS * 2 * KV_HEADS * HEAD_DIM for t in (4, 8, 32)},
    "prefix": 16 * LAYERS * 2 * KV_HEADS * HEAD_DIM,
    # bias only: one bias vector of the output size per adapted layer (q, v)
    "bias": LAYERS * sum(SHAPES[m][1] for m in QV),
}


def test_every_sweep_method_has_a_closed_form_count():
    assert set(registry.SIZE_SWEEP) == set(EXPECTED)
    assert all(not registry.get(m).default or m in ("qaa", "lora", "prefix") for m in registry.SIZE_SWEEP)


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_llama(seed=0, hidden=HIDDEN, layers=LAYERS, heads=HEADS, kv_heads=KV_HEADS, intermediate=INTER)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(8):
        ids = torch.randint(3, len(tok), (40,), generator=gen).tolist()
        pairs.append((ids, [-100] * 20 + ids[20:]))
    return model.config, state, pairs


def _fresh(config, state):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(config)
    model.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("name", registry.SIZE_SWEEP)
def test_sweep_method_trains_saves_and_reloads(name, tiny, tmp_path):
    config, state, pairs = tiny
    method = registry.get(name)
    ctx = registry.RunContext(settings=None, seed=0, train_pairs=pairs, pad_id=0, batch_size=2)
    model = method.attach(_fresh(config, state), ctx)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == EXPECTED[name]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    for batch in ctx.first_batches(2):
        loss = model(**batch).loss
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    method.save(model, tmp_path / "adapter")
    reloaded = method.reload(_fresh(config, state), tmp_path / "adapter")
    batch = collate(pairs[:2], 0)
    with torch.no_grad():
        trained = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        again = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        base = _fresh(config, state)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.equal(trained, base)  # two steps changed the model (the output map starts at zero)
    torch.testing.assert_close(again, trained, rtol=0, atol=1e-5 if name.startswith("prefix") else 0)
