"""Baselines of the comparison: LoRA, prefix tuning (GQA), SoRA, full fine-tuning.

Every model is a tiny random-init Llama built from ``LlamaConfig`` (no download).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from qaa.tuners.baselines import (attach_lora, attach_prefix, load_full, load_peft_adapter, prefix_kv_layout,
                                  prepare_full_finetune, save_full, save_peft_adapter)
from qaa.tuners.sora import (LowRankLinear, SoRAConfig, SoRALinear, attach_sora, l1_penalty, load_sora, proximal_step,
                             prune_sora, save_sora, sora_gates, sora_param_groups, sora_rank_summary)
from qaa.tuners.utils import print_trainable_parameters, trainable_parameter_summary
from qaa.tuners.utils import trainable_parameters_line as format_trainable_parameters

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

VOCAB = 128
HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
KV_DIM = KV_HEADS * HEAD_DIM  # v_proj output width: 32


def tiny_llama(seed: int = 0, hidden: int = HIDDEN, heads: int = HEADS, kv_heads: int = KV_HEADS) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=LAYERS,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model


def base_param_count() -> int:
    return sum(p.numel() for p in tiny_llama().parameters())


def batch(seed: int = 1, bsz: int = 2, seq: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (bsz, seq), generator=g)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def one_step(model: torch.nn.Module, params=None, lr: float = 1e-2) -> float:
    model.train()
    ids = batch()
    opt = torch.optim.AdamW(params if params is not None else [p for p in model.parameters() if p.requires_grad],
                            lr=lr, weight_decay=0.0)
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    opt.zero_grad()
    model.eval()
    return loss.item()


def changed(before: dict, model: torch.nn.Module) -> set[str]:
    after = dict(model.named_parameters())
    return {n for n, t in before.items() if not torch.equal(t, after[n].detach())}


@torch.no_grad()
def logits(model: torch.nn.Module, ids: torch.Tensor | None = None) -> torch.Tensor:
    ids = batch(seed=7) if ids is None else ids
    return model(input_ids=ids).logits


# ---------------------------------------------------------------------------------------------------------
# parameter report


def test_trainable_report_matches_peft_format(capsys):
    model = tiny_llama()
    total = base_param_count()
    for p in model.parameters():
        p.requires_grad_(False)
    model.lm_head.weight.requires_grad_(True)
    t = VOCAB * HIDDEN
    assert trainable_parameter_summary(model) == (t, total, pytest.approx(100.0 * t / total))
    line = format_trainable_parameters(model)
    assert line == f"trainable params: {t:,} || all params: {total:,} || trainable%: {100.0 * t / total:.4f}"
    print_trainable_parameters(model)
    assert capsys.readouterr().out == line + "\n"
    empty = "trainable params: 0 || all params: 0 || trainable%: 0.0000"
    assert format_trainable_parameters(torch.nn.Module()) == empty
    with pytest.raises(TypeError):
        trainable_parameter_summary("not a model")


# ---------------------------------------------------------------------------------------------------------
# LoRA


def test_lora_attach_train_save_load(tmp_path, capsys):
    model = attach_lora(tiny_llama())
    # q_proj: A (8, 64) + B (64, 8); v_proj: A (8, 64) + B (32, 8); two layers
    expected = LAYERS * ((8 * HIDDEN + HIDDEN * 8) + (8 * HIDDEN + KV_DIM * 8))
    trainable, total, _ = trainable_parameter_summary(model)
    assert (trainable, total) == (expected, base_param_count() + expected)
    model.print_trainable_parameters()
    assert capsys.readouterr().out.strip() == format_trainable_parameters(model)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)

    before = snapshot(model)
    one_step(model)
    moved = changed(before, model)
    assert moved and all("lora_" in n for n in moved)
    assert any("lora_B" in n for n in moved)

    save_peft_adapter(model, tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    loaded = load_peft_adapter(tiny_llama(), tmp_path)
    assert torch.equal(logits(model), logits(loaded))
    assert not logits(model).equal(logits(tiny_llama()))


def test_lora_bad_targets_list_candidates():
    with pytest.raises(ValueError, match="Candidate linear layer names") as err:
        attach_lora(tiny_llama(), target_modules=("query", "value"))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"):
        assert name in str(err.value)
    with pytest.raises(ValueError):
        attach_lora(tiny_llama(), r=0)


# ---------------------------------------------------------------------------------------------------------
# prefix tuning with grouped-query attention


GQA_SHAPES = [(64, 4, 2), (72, 9, 3)]  # (hidden, heads, kv_heads); the second has SmolLM2-135M's head ratio


def manual_prefix_cache(model, bsz: int) -> DynamicCache:
    """Prefix keys/values straight from the trained embedding, laid out as peft stores them:
    (num_virtual_tokens, num_layers * 2 * kv_heads * head_dim), layer l keys at block 2l, values at 2l+1."""
    cfg = model.active_peft_config
    kv, hd = cfg.num_attention_heads, cfg.token_dim // cfg.num_attention_heads
    w = model.prompt_encoder["default"].embedding.weight.detach()
    w = w.view(cfg.num_virtual_tokens, cfg.num_layers * 2, kv, hd).permute(1, 2, 0, 3)  # (2L, kv, P, hd)
    cache = DynamicCache()
    for layer in range(cfg.num_layers):
        k = w[2 * layer].unsqueeze(0).expand(bsz, -1, -1, -1).contiguous()
        v = w[2 * layer + 1].unsqueeze(0).expand(bsz, -1, -1, -1).contiguous()
        cache.update(k, v, layer)
    return cache


@pytest.mark.parametrize("hidden,heads,kv_heads", GQA_SHAPES)
def test_prefix_gqa_layout_and_forward(hidden, heads, kv_heads):
    n_virtual = 5
    head_dim = hidden // heads
    base = tiny_llama(hidden=hidden, heads=heads, kv_heads=kv_heads)
    assert prefix_kv_layout(base.config) == {"num_layers": LAYERS, "num_kv_heads": kv_heads, "head_dim": head_dim,
                                             "token_dim": kv_heads * head_dim}
    model = attach_prefix(base, num_virtual_tokens=n_virtual)
    cfg = model.active_peft_config
    assert (cfg.token_dim, cfg.num_attention_heads) == (kv_heads * head_dim, kv_heads)
    trainable, _, _ = trainable_parameter_summary(model)
    assert trainable == n_virtual * LAYERS * 2 * kv_heads * head_dim

    prompt = model.get_prompt(batch_size=3)
    assert prompt.layers[0].keys.shape == (3, kv_heads, n_virtual, head_dim)

    # the training forward equals the base model run on a prefix cache built by hand
    ids = batch(seed=3, bsz=2, seq=7)
    got = logits(model, ids)
    ref = model.get_base_model()(input_ids=ids, cache=manual_prefix_cache(model, 2),
                                 attention_mask=torch.ones(2, n_virtual + 7, dtype=torch.long)).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert (got - logits(tiny_llama(hidden=hidden, heads=heads, kv_heads=kv_heads), ids)).abs().max() > 1e-3


def greedy_without_cache(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    seq = ids.clone()
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    return seq


@pytest.mark.parametrize("hidden,heads,kv_heads", GQA_SHAPES)
def test_prefix_gqa_generate(hidden, heads, kv_heads):
    model = attach_prefix(tiny_llama(hidden=hidden, heads=heads, kv_heads=kv_heads), num_virtual_tokens=5)
    model.eval()
    ids = batch(seed=4, bsz=2, seq=6)
    expected = greedy_without_cache(model, ids, steps=5)
    for use_cache in (True, False):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                             use_cache=use_cache, pad_token_id=0)
        assert torch.equal(out, expected), f"use_cache={use_cache}"
    # a left-padded row generates what it generates alone
    padded = ids.clone()
    padded[0, :2] = 0
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    out = model.generate(input_ids=padded, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    alone = model.generate(input_ids=ids[:1, 2:], attention_mask=torch.ones_like(ids[:1, 2:]), max_new_tokens=4,
                           do_sample=False, pad_token_id=0)
    assert torch.equal(out[0, 2:], alone[0])


def test_prefix_train_save_load_generate(tmp_path):
    model = attach_prefix(tiny_llama(), num_virtual_tokens=4)
    before = snapshot(model)
    one_step(model)
    moved = changed(before, model)
    assert moved == {"prompt_encoder.default.embedding.weight"}

    save_peft_adapter(model, tmp_path)
    loaded = load_peft_adapter(tiny_llama(), tmp_path)
    assert torch.equal(logits(model), logits(loaded))
    ids = batch(seed=5, bsz=2, seq=6)
    out = loaded.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert torch.equal(out, greedy_without_cache(loaded, ids, steps=4))


def test_prefix_bad_args():
    with pytest.raises(ValueError):
        attach_prefix(tiny_llama(), num_virtual_tokens=0)
    with pytest.raises(ValueError, match="fewer than"):
        attach_prefix(tiny_llama(), num_virtual_tokens=4, init_token_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="outside"):
        attach_prefix(tiny_llama(), num_virtual_tokens=2, init_token_ids=[1, VOCAB])


@pytest.mark.parametrize("hidden,heads,kv_heads", GQA_SHAPES)
def test_prefix_real_token_init_equals_base_on_tokens_then_text(hidden, heads, kv_heads):
    """With the prefix initialised from the base model's keys/values of tokens T, the prefixed model on a text
    C is the base model on T + C (logits, loss, greedy generation), because the real tokens are numbered after
    the prefix positions."""
    n = 5
    init = batch(seed=6, bsz=1, seq=n + 3)[0].tolist()  # longer than n: truncated
    base = tiny_llama(hidden=hidden, heads=heads, kv_heads=kv_heads)
    model = attach_prefix(tiny_llama(hidden=hidden, heads=heads, kv_heads=kv_heads), num_virtual_tokens=n,
                          init_token_ids=init)
    text = batch(seed=7, bsz=2, seq=7)
    full = torch.cat([torch.tensor([init[:n]] * 2), text], dim=1)
    torch.testing.assert_close(logits(model, text), logits(base, full)[:, n:], rtol=0, atol=1e-5)

    with torch.no_grad():
        loss = model(input_ids=text, labels=text).loss
        # the prefixed loss predicts text[1:] from text; on T + C the same targets sit after position n
        labels = torch.cat([torch.full((2, n + 1), -100), text[:, 1:]], dim=1)
        ref = base(input_ids=full, labels=labels).loss
        alone = base(input_ids=text, labels=text).loss
    assert float(loss) == pytest.approx(float(ref), abs=1e-5)
    assert abs(float(loss) - float(alone)) < 0.05 * float(alone)  # step 0 starts near the base model

    model.eval()
    model.generation_config.eos_token_id = None  # compare all 4 steps, never stopped early
    out = model.generate(input_ids=text, attention_mask=torch.ones_like(text), max_new_tokens=4, do_sample=False,
                         pad_token_id=0)
    assert torch.equal(out, greedy_without_cache(base, full, steps=4)[:, n:])


# ---------------------------------------------------------------------------------------------------------
# SoRA


def sora_model(**kw) -> LlamaForCausalLM:
    return attach_sora(tiny_llama(), SoRAConfig(**kw))


def test_sora_attach_counts_and_identity_at_init():
    model = sora_model()
    # q: A (8, 64) + B (64, 8) + g (8); v: A (8, 64) + B (32, 8) + g (8)
    expected = LAYERS * ((8 * HIDDEN + HIDDEN * 8 + 8) + (8 * HIDDEN + KV_DIM * 8 + 8))
    total = base_param_count() + expected
    assert trainable_parameter_summary(model)[:2] == (expected, total)
    assert format_trainable_parameters(model) == (
        f"trainable params: {expected:,} || all params: {total:,} || trainable%: {100 * expected / total:.4f}")
    names = sorted(n for n, m in model.named_modules() if isinstance(m, SoRALinear))
    assert names == [f"model.layers.{i}.self_attn.{p}" for i in range(LAYERS) for p in ("q_proj", "v_proj")]
    layer = model.model.layers[0].self_attn.q_proj
    assert torch.equal(layer.sora_gate, torch.ones(8)) and torch.equal(layer.sora_B, torch.zeros(HIDDEN, 8))
    bound = 1.0 / np.sqrt(HIDDEN)  # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert layer.sora_A.abs().max() <= bound and layer.sora_A.abs().max() > 0.5 * bound
    assert torch.equal(logits(model), logits(tiny_llama()))  # B = 0: the base model exactly


def test_sora_linear_formula_float64():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5).double()
    layer = SoRALinear(base, r_max=3, alpha=6.0)
    with torch.no_grad():
        layer.sora_B.normal_()
        layer.sora_gate.copy_(torch.tensor([0.5, 0.0, -2.0], dtype=torch.float64))
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    A, B, g = (t.detach().numpy() for t in (layer.sora_A, layer.sora_B, layer.sora_gate))
    W, b = base.weight.detach().numpy(), base.bias.detach().numpy()
    xn = x.numpy()
    ref = xn @ W.T + b + (6.0 / 3) * np.einsum("or,r,ri,bti->bto", B, g, A, xn)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=0, atol=1e-12)


def test_proximal_step_exact_values():
    model = sora_model()
    xi = 2.0**-12  # dyadic: every expected value below is exact in float32
    crafted = torch.tensor([0.5, -0.25, xi, -xi, 2.0**-13, 0.0, 3 * xi, -5 * xi])
    expected = torch.tensor([0.5 - xi, -0.25 + xi, 0.0, 0.0, 0.0, 0.0, 2 * xi, -4 * xi])
    gates = sora_gates(model)
    with torch.no_grad():
        for g in gates:
            g.copy_(crafted)
    active = proximal_step(model, xi)
    for g in gates:
        assert torch.equal(g.detach(), expected)
        assert torch.equal(torch.signbit(g.detach()[2:6]), torch.zeros(4, dtype=torch.bool))  # +0.0, not -0.0
    assert active == 4 * len(gates)


def test_proximal_step_reference_xi_and_lr_variant():
    model = sora_model()
    g = sora_gates(model)[0]
    f32 = np.float32
    values = [3e-4, -3e-4, 2.9e-4, 1e-3, -0.5, 1.0]
    with torch.no_grad():
        g.copy_(torch.tensor(values + [0.0, 0.0]))
    proximal_step(model, 3e-4)
    exp = [0.0, 0.0, 0.0, f32(1e-3) - f32(3e-4), f32(-0.5) + f32(3e-4), f32(1.0) - f32(3e-4), 0.0, 0.0]
    np.testing.assert_array_equal(g.detach().numpy(), np.array(exp, dtype=np.float32))
    # paper form: threshold xi * lr = 0.25 * 2 = 0.5
    with torch.no_grad():
        g.copy_(torch.tensor([0.75, -0.5, 0.25, 1.0, 0, 0, 0, 0]))
    proximal_step(model, 0.25, lr=2.0)
    assert torch.equal(g.detach(), torch.tensor([0.25, 0.0, 0.0, 0.5, 0, 0, 0, 0]))
    with pytest.raises(ValueError):
        proximal_step(model, -1.0)
    with pytest.raises(ValueError):
        proximal_step(model, 1e-3, lr=0.0)
    with pytest.raises(ValueError, match="no SoRALinear"):
        proximal_step(tiny_llama(), 1e-3)


def test_sora_train_step_only_adapter_changes():
    cfg = SoRAConfig()
    model = attach_sora(tiny_llama(), cfg)
    before = snapshot(model)
    groups = sora_param_groups(model, weight_decay=0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert {id(p) for p in groups[1]["params"]} == {id(g) for g in sora_gates(model)}
    one_step(model, params=groups)
    active = proximal_step(model, cfg.xi)
    moved = changed(before, model)
    assert moved and all(n.rsplit(".", 1)[-1] in ("sora_A", "sora_B", "sora_gate") for n in moved)
    assert any(n.endswith("sora_B") for n in moved)
    # B was 0, so the first step gives the gates no gradient: only the proximal shrink moves them
    for g in sora_gates(model):
        assert torch.equal(g.detach(), torch.full((8,), np.float32(1.0) - np.float32(3e-4)))
    assert active == 4 * 8


def test_l1_penalty_is_mean_abs_gate():
    model = sora_model(lambda_l1=10.0)
    gates = sora_gates(model)
    with torch.no_grad():
        for i, g in enumerate(gates):
            g.copy_(torch.arange(8, dtype=torch.float32) * (-1) ** i)
    pen = l1_penalty(model)
    assert pen.item() == pytest.approx(sum(range(8)) * len(gates) / (8 * len(gates)))
    pen.backward()
    assert torch.equal(gates[1].grad, torch.sign(gates[1].detach()) / (8 * len(gates)))


def randomise_sora(model, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SoRALinear):
                m.sora_B.copy_(torch.randn(m.sora_B.shape, generator=gen) * 0.3)
                m.sora_gate.copy_(torch.randn(m.sora_gate.shape, generator=gen))


def test_prune_matches_gated_outputs():
    model = sora_model()
    randomise_sora(model)
    proximal_step(model, 0.6)  # zeroes the gates with |g| <= 0.6
    q0 = model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        q0.sora_gate.zero_()  # one layer loses every rank
    ranks = {n: int(torch.count_nonzero(m.sora_gate)) for n, m in model.named_modules() if isinstance(m, SoRALinear)}
    assert 0 < sum(ranks.values()) < 4 * 8
    assert sora_rank_summary(model) == {n: {"rank": r, "r_max": 8} for n, r in ranks.items()}
    gated = logits(model)
    assert not torch.equal(gated, logits(tiny_llama()))

    prune_sora(model)
    assert not any(isinstance(m, SoRALinear) for m in model.modules())
    summary = sora_rank_summary(model)
    assert summary == {n: {"rank": r, "r_max": 8} for n, r in ranks.items()}
    for name, r in ranks.items():
        m = model.get_submodule(name)
        assert isinstance(m, LowRankLinear)
        assert m.lora_A.shape == (r, HIDDEN) and m.lora_B.shape == (m.out_features, r)
    torch.testing.assert_close(logits(model), gated, rtol=0, atol=1e-6)
    expected_trainable = sum(r * (HIDDEN + model.get_submodule(n).out_features) for n, r in ranks.items())
    assert trainable_parameter_summary(model)[0] == expected_trainable


def test_sora_save_load_gated_and_pruned(tmp_path):
    model = sora_model()
    randomise_sora(model, seed=3)
    proximal_step(model, 0.5)
    one_step(model)
    save_sora(model, tmp_path / "gated")
    loaded = load_sora(tiny_llama(), tmp_path / "gated")
    assert torch.equal(logits(model), logits(loaded))
    assert sora_rank_summary(loaded) == sora_rank_summary(model)
    assert trainable_parameter_summary(loaded)[0] == 0  # evaluation load
    assert trainable_parameter_summary(load_sora(tiny_llama(), tmp_path / "gated", is_trainable=True))[0] > 0

    prune_sora(model)
    save_sora(model, tmp_path / "pruned")
    assert sorted(os.listdir(tmp_path / "pruned")) == ["adapter_config.json", "adapter_model.safetensors"]
    loaded = load_sora(tiny_llama(), tmp_path / "pruned")
    assert torch.equal(logits(model), logits(loaded))
    assert sora_rank_summary(loaded) == sora_rank_summary(model)
    assert loaded.sora_config == model.sora_config

    with pytest.raises(ValueError, match="already carries"):
        load_sora(sora_model(), tmp_path / "gated")
    with pytest.raises(ValueError, match="adapter was saved for"):
        load_sora(tiny_llama(hidden=72, heads=9, kv_heads=3), tmp_path / "gated")
    with pytest.raises(ValueError, match="does not exist"):
        load_sora(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path / "gated")
    with pytest.raises(FileNotFoundError):
        load_sora(tiny_llama(), tmp_path / "missing")


def test_sora_bad_targets_and_config():
    with pytest.raises(ValueError, match="Candidate linear layer names") as err:
        attach_sora(tiny_llama(), SoRAConfig(target_modules=["attn.query"]))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "lm_head"):
        assert name in str(err.value)
    with pytest.raises(TypeError, match="nn.Linear"):
        attach_sora(tiny_llama(), SoRAConfig(target_modules=["self_attn"]))
    with pytest.raises(ValueError, match="already carries"):
        attach_sora(sora_model(), SoRAConfig())
    for bad in ({"r_max": 0}, {"alpha": 0}, {"xi": -1.0}, {"dropout": 1.0}, {"lambda_l1": -1.0},
                {"gate_init": "zeros"}, {"target_modules": []}):
        with pytest.raises(ValueError):
            SoRAConfig(**bad)
    assert SoRAConfig.from_dict(SoRAConfig(r_max=4).to_dict()) == SoRAConfig(r_max=4)


# ---------------------------------------------------------------------------------------------------------
# full fine-tuning


def test_full_finetune_train_save_load(tmp_path):
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    prepare_full_finetune(model)
    trainable, total, pct = trainable_parameter_summary(model)
    assert trainable == total == base_param_count() and pct == 100.0
    before = snapshot(model)
    one_step(model)
    assert changed(before, model) == set(before)  # every tensor received a nonzero Adam step
    save_full(model, tmp_path)
    loaded = load_full(tmp_path)
    loaded.eval()
    assert torch.equal(logits(model), logits(loaded))
    with pytest.raises(ValueError):
        prepare_full_finetune(torch.nn.Module())
