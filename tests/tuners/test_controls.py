"""The control tuners of QAA: a trainable bias and random features, on a tiny Llama (no download)."""
import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from qaa.tuners.baselines import (BiasControlLinear, RandomFeatureLinear, attach_control, control_modules,
                                  load_control, save_control)
from qaa.tuners.save_load import read_adapter_files, save_adapter_files


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


IDS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def train_step(model, lr=1e-2):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = model(IDS, labels=IDS).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def randomise(model, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# q_proj: 64 -> 64, v_proj: 64 -> 32 (GQA), two layers
D_OUTS = [64, 32, 64, 32]


@pytest.mark.parametrize("kind", ["bias", "random_features"])
def test_trainable_counts_and_step_zero(kind):
    base = logits(tiny_llama())
    model = attach_control(tiny_llama(), kind)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if kind == "bias":
        assert trainable == sum(D_OUTS) == 192
    else:
        k = math.ceil(math.log2(64))  # 6, QAA's feature count for width 64
        assert trainable == k * sum(D_OUTS)
        assert all(m.control_R.shape == (6, 64) and not m.control_R.requires_grad for _, m in control_modules(model))
    assert len(control_modules(model)) == 4
    torch.testing.assert_close(logits(model), base, atol=0, rtol=0)


def test_random_features_values_and_zero_rows():
    lin = nn.Linear(5, 3)
    R = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    layer = RandomFeatureLinear(lin, R)
    with torch.no_grad():
        layer.control_out.weight.copy_(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(2))
    x[0, 1] = 0.0
    x.requires_grad_(True)
    y = layer(x)
    xd = x.detach().double()
    norms = xd.norm(dim=-1, keepdim=True)
    feats = torch.where(norms > 0, (xd @ R.double().T) / norms.clamp_min(1e-300), torch.zeros(()))
    expected = lin(x.detach()).double() + feats @ layer.control_out.weight.detach().double().T
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(layer.features(x)[0, 1], torch.zeros(4))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_random_features_options_and_seed():
    a = attach_control(tiny_llama(), "random_features", n_features=3, seed=5)
    b = attach_control(tiny_llama(), "random_features", n_features=3, seed=5)
    c = attach_control(tiny_llama(), "random_features", n_features=3, seed=6)
    ra = [m.control_R for _, m in control_modules(a)]
    assert all(r.shape == (3, 64) for r in ra)
    assert all(torch.equal(x, m.control_R) for x, (_, m) in zip(ra, control_modules(b)))
    assert not torch.equal(ra[0], control_modules(c)[0][1].control_R)
    assert not torch.equal(ra[0], ra[1])  # each layer its own draw
    # R ~ N(0, 1) / sqrt(d_in)
    allr = torch.cat([r.reshape(-1) for r in ra])
    assert abs(float(allr.std()) * 8.0 - 1.0) < 0.15


@pytest.mark.parametrize("kind", ["bias", "random_features"])
def test_training_changes_only_control_parameters(kind):
    model = attach_control(tiny_llama(), kind)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    train_step(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    own = {"bias": "control_bias", "random_features": "control_out.weight"}[kind]
    assert changed and all(n.endswith(own) for n in changed) and len(changed) == 4
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())  # R is fixed


@pytest.mark.parametrize("kind", ["bias", "random_features"])
def test_save_load_roundtrip_identical_logits(tmp_path, kind):
    model = attach_control(tiny_llama(), kind, seed=3)
    randomise(model)
    before = logits(model)
    assert not torch.equal(before, logits(tiny_llama()))
    save_control(model, tmp_path)
    meta, tensors = read_adapter_files(tmp_path, {"bias": "CONTROL_BIAS",
                                                  "random_features": "CONTROL_RANDOM_FEATURES"}[kind])
    assert meta["kind"] == kind and len(meta["modules"]) == 4
    if kind == "random_features":
        assert "model.layers.0.self_attn.q_proj.control_R" in tensors
    loaded = load_control(tiny_llama(), tmp_path)
    torch.testing.assert_close(logits(loaded), before, atol=0, rtol=0)
    assert not any(p.requires_grad for p in loaded.parameters())
    trainable = load_control(tiny_llama(), tmp_path, is_trainable=True)
    n_train = sum(p.numel() for p in trainable.parameters() if p.requires_grad)
    assert n_train == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_load_rejects_bad_folders(tmp_path):
    model = attach_control(tiny_llama(), "random_features")
    save_control(model, tmp_path)
    meta, tensors = read_adapter_files(tmp_path, "CONTROL_RANDOM_FEATURES")
    tensors["model.layers.0.self_attn.q_proj.control_R"] = torch.full((6, 64), float("inf"))
    save_adapter_files(tmp_path, {k: v for k, v in meta.items() if k != "format_version"}, tensors)
    fresh = tiny_llama()
    with pytest.raises(ValueError, match="finite"):
        load_control(fresh, tmp_path)
    assert not control_modules(fresh)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    save_control(model, tmp_path)
    with pytest.raises(ValueError, match="expects"):
        load_control(other, tmp_path)
    with pytest.raises(FileNotFoundError):
        load_control(tiny_llama(), tmp_path / "nothing")


def test_attach_errors():
    with pytest.raises(ValueError, match="unknown control"):
        attach_control(tiny_llama(), "lora")
    with pytest.raises(ValueError, match="matched no module"):
        attach_control(tiny_llama(), "bias", target_modules=["nope"])
    with pytest.raises(ValueError, match="n_features"):
        attach_control(tiny_llama(), "random_features", n_features=0)
    model = attach_control(tiny_llama(), "bias")
    with pytest.raises(ValueError, match="already"):
        attach_control(model, "bias")
    with pytest.raises(ValueError, match="no control"):
        save_control(tiny_llama(), "/tmp/unused")
    assert isinstance(model.model.layers[0].self_attn.q_proj, BiasControlLinear)
