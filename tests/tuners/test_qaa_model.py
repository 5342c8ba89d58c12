"""The peft-like API on small models built locally (no download)."""
import json
import os

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import qaa


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=48, n_layer=2, n_head=4, n_positions=64)).eval()


IDS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def train_step(model, lr=1e-2, ids=IDS):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    out = model(ids, labels=ids)
    out.loss.backward()
    opt.step()
    opt.zero_grad()
    return out.loss.item()


def test_attach_is_exact_at_step_zero_and_counts_parameters():
    model = tiny_llama()
    base = logits(model)
    qaa.attach(model, qaa.QAAConfig(n_layers=3, seed=1))
    torch.testing.assert_close(logits(model), base, atol=0, rtol=0)
    # q_proj: 64 -> 64, v_proj: 64 -> 32 (GQA); n = 6 qubits, z readout: 6 features
    per_layer = (3 * 6 + 6 * 64) + (3 * 6 + 6 * 32)
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 2 * per_layer
    assert len(list(qaa.qaa_layers(model))) == 4


def test_print_trainable_parameters_uses_peft_format(capsys):
    model = qaa.attach(tiny_llama(), qaa.QAAConfig())
    model.print_trainable_parameters()
    line = capsys.readouterr().out.strip()
    trainable, total = qaa.get_nb_trainable_parameters(model)
    assert line == (f"trainable params: {trainable:,d} || all params: {total:,d} || "
                    f"trainable%: {100 * trainable / total:.4f}")


def test_one_step_changes_only_adapter_parameters():
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_step(model)
    train_step(model)  # theta gets a gradient only once P != 0
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".qaa_" in n for n in changed)
    assert any("qaa_theta" in n for n in changed) and any("qaa_out" in n for n in changed)


def test_training_lowers_loss():
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0))
    losses = [train_step(model, lr=3e-2) for _ in range(15)]
    assert losses[-1] < losses[0] - 0.1


def test_save_load_roundtrip_identical_logits(tmp_path):
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0, ansatz="ry_rz_ring_ry", n_layers=2))
    for _ in range(3):
        train_step(model)
    tuned = logits(model)
    qaa.save_adapter(model, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    cfg = json.load(open(tmp_path / "adapter_config.json"))
    assert cfg["peft_type"] == "QAA" and cfg["ansatz"] == "ry_rz_ring_ry" and cfg["n_layers"] == 2
    fresh = qaa.load_adapter(tiny_llama(), str(tmp_path))
    torch.testing.assert_close(logits(fresh), tuned, atol=0, rtol=0)
    assert qaa.get_nb_trainable_parameters(fresh)[0] == 0
    trainable = qaa.load_adapter(tiny_llama(), str(tmp_path), is_trainable=True)
    assert qaa.get_nb_trainable_parameters(trainable)[0] > 0


def test_disable_adapter_and_detach_restore_base():
    model = tiny_llama()
    base = logits(model)
    qaa.attach(model, qaa.QAAConfig(seed=0))
    for _ in range(3):
        train_step(model)
    assert not torch.allclose(logits(model), base)
    with qaa.disable_adapter(model):
        torch.testing.assert_close(logits(model), base, atol=0, rtol=0)
    assert not torch.allclose(logits(model), base)
    qaa.detach(model)
    assert not list(qaa.qaa_layers(model))
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.Linear)
    torch.testing.assert_close(logits(model), base, atol=0, rtol=0)


def test_unmatched_targets_list_candidates():
    with pytest.raises(ValueError, match=r"Candidate names: .*q_proj.*v_proj"):
        qaa.attach(tiny_llama(), qaa.QAAConfig(target_modules=["query"]))


def test_merge_raises_clear_error():
    model = qaa.attach(tiny_llama(), qaa.QAAConfig())
    with pytest.raises(qaa.MergeError, match="non-linear"):
        model.merge_and_unload()
    with pytest.raises(qaa.MergeError):
        qaa.merge(model)


def test_gpt2_conv1d():
    model = tiny_gpt2()
    base = logits(model)
    qaa.attach(model, qaa.QAAConfig(target_modules=["c_attn"], seed=0))
    layer = model.transformer.h[0].attn.c_attn
    assert isinstance(layer, qaa.QAALayer) and (layer.d_in, layer.d_out) == (48, 144)
    torch.testing.assert_close(logits(model), base, atol=0, rtol=0)
    losses = [train_step(model, lr=3e-2) for _ in range(10)]
    assert losses[-1] < losses[0]


def test_two_adapters_switched_by_name(tmp_path):
    model = tiny_llama()
    base = logits(model)
    qaa.attach(model, qaa.QAAConfig(seed=0), adapter_name="a")
    train_step(model); train_step(model)
    out_a = logits(model)
    qaa.attach(model, qaa.QAAConfig(seed=1, n_layers=2), adapter_name="b")
    torch.testing.assert_close(logits(model), base, atol=0, rtol=0)  # b is fresh (P = 0) and active
    train_step(model); train_step(model)
    out_b = logits(model)
    qaa.set_adapter(model, "a")
    torch.testing.assert_close(logits(model), out_a, atol=0, rtol=0)
    qaa.set_adapter(model, "b")
    torch.testing.assert_close(logits(model), out_b, atol=0, rtol=0)
    with pytest.raises(KeyError):
        qaa.set_adapter(model, "c")
    with pytest.raises(ValueError, match="already attached"):
        qaa.attach(model, qaa.QAAConfig(), adapter_name="a")


def test_config_validation():
    for bad in [dict(n_layers=0), dict(ansatz="x"), dict(readout="y"), dict(scaling=float("nan")),
                dict(dropout=1.5), dict(n_qubits=40), dict(target_modules=[]), dict(dtype="float16")]:
        with pytest.raises(ValueError):
            qaa.QAAConfig(**bad)
    cfg = qaa.QAAConfig(n_layers=2, readout="probs")
    assert qaa.QAAConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_product_circuit_ansatz_trains_saves_and_loads(tmp_path):
    """ry_layers (RY layers, no entangler): the "QAA without the CNOT ring" control, through the tuner API."""
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0, ansatz="ry_layers", n_layers=3))
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.qaa_theta["default"].numel() == 3 * 6 and all(g[0] == "RY" for g in layer.circuit("default").gates)
    train_step(model)
    train_step(model)
    before = logits(model)
    qaa.save_adapter(model, tmp_path)
    with open(os.path.join(tmp_path, "adapter_config.json")) as f:
        assert json.load(f)["ansatz"] == "ry_layers"
    loaded = qaa.load_adapter(tiny_llama(), str(tmp_path))
    torch.testing.assert_close(logits(loaded), before, atol=0, rtol=0)
