"""QAA adapter folders as Hugging Face tools see them: the base-model record and model card, peft's and
transformers' loaders refusing with a message that says how to load the folder, and trl's SFTTrainer with
adapter-only checkpoints (qaa.QAASFTTrainer)."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

import qaa
from support import tiny_llama

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM  # noqa: E402

from qaa.tuners.qaa.hf_compat import CARD_MARKER, QAAAdapterNotForPeft  # noqa: E402


def _saved_base(tmp_path, hidden=32):
    """A tiny Llama saved with save_pretrained and loaded back with from_pretrained (so transformers records its
    path), with a QAA adapter attached."""
    model, _ = tiny_llama(hidden=hidden, layers=2)
    base_dir = tmp_path / f"base{hidden}"
    model.save_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=0))
    return model, base_dir


def _expected_fingerprint(model, modules):
    """sha256 of {module: [out_features, in_features]}, written here from the model's nn.Linear sizes."""
    named = dict(model.named_modules())
    shapes = {}
    for m in sorted(modules):
        lin = named[m].base_layer
        shapes[m] = [lin.out_features, lin.in_features]
    return "sha256:" + hashlib.sha256(json.dumps(shapes, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_adapter_records_its_base_model_and_writes_a_model_card(tmp_path):
    model, base_dir = _saved_base(tmp_path)
    out = tmp_path / "adapter"
    qaa.save_adapter(model, str(out))
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["base_model_name_or_path"] == str(base_dir)
    assert meta["base_model_class"] == "LlamaForCausalLM"
    assert meta["base_model_fingerprint"] == _expected_fingerprint(model, meta["modules"])
    assert len(meta["modules"]) == 4  # q_proj and v_proj of 2 layers

    card = (out / "README.md").read_text()
    assert card.startswith("---\n")  # the Hub reads front matter only at the very start
    assert CARD_MARKER in card and "library_name: qaa" in card
    n_params = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    assert f"| trainable parameters | {n_params:,} |" in card
    assert "qaa.load_adapter(base" in card and str(base_dir) in card
    assert "base_model:" not in card  # a local path is not a Hub id

    # The folder still loads, and reproduces the model's outputs.
    fresh = AutoModelForCausalLM.from_pretrained(base_dir)
    qaa.load_adapter(fresh, str(out))
    ids = torch.tensor([[5, 9, 11, 3]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, model(input_ids=ids).logits)


def test_fingerprint_ignores_dtype_and_changes_with_the_architecture(tmp_path):
    model, _ = _saved_base(tmp_path)
    qaa.save_adapter(model, str(tmp_path / "a"))
    bf16 = model.to(torch.bfloat16)
    qaa.save_adapter(bf16, str(tmp_path / "b"))
    wider, _ = _saved_base(tmp_path, hidden=48)
    qaa.save_adapter(wider, str(tmp_path / "c"))
    fp = {k: json.loads((tmp_path / k / "adapter_config.json").read_text())["base_model_fingerprint"]
          for k in "abc"}
    assert fp["a"] == fp["b"] != fp["c"]


def test_a_users_readme_is_never_overwritten(tmp_path):
    model, _ = _saved_base(tmp_path)
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    qaa.save_adapter(model, str(out))
    assert (out / "README.md").read_text() == "my notes\n"
    assert (out / "adapter_model.safetensors").is_file()
    # A card qaa wrote is refreshed by the next save.
    other = tmp_path / "other"
    qaa.save_adapter(model, str(other))
    (other / "README.md").write_text((other / "README.md").read_text().replace("# QAA adapter", "# edited"))
    qaa.save_adapter(model, str(other))
    assert "# QAA adapter `default`" in (other / "README.md").read_text()


def test_loading_into_a_model_of_another_size_names_the_saved_base(tmp_path):
    model, base_dir = _saved_base(tmp_path)
    qaa.save_adapter(model, str(tmp_path / "adapter"))
    wider, _ = tiny_llama(hidden=48, layers=2)
    with pytest.raises(ValueError, match=r"expects \(d_in, d_out\).*saved from base model '" + str(base_dir)):
        qaa.load_adapter(wider, str(tmp_path / "adapter"))


def test_peft_and_transformers_loaders_refuse_with_how_to_load(tmp_path):
    from peft import PeftModel

    model, base_dir = _saved_base(tmp_path)
    out = str(tmp_path / "adapter")
    qaa.save_adapter(model, out)
    for load in (lambda: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), out),
                 lambda: AutoModelForCausalLM.from_pretrained(base_dir).load_adapter(out),
                 lambda: AutoModelForCausalLM.from_pretrained(out)):
        with pytest.raises(QAAAdapterNotForPeft, match=r"qaa\.load_adapter\(base_model"):
            load()
    assert issubclass(QAAAdapterNotForPeft, ValueError)


@pytest.mark.parametrize("order", ["peft_first", "qaa_first"])
def test_registration_in_a_fresh_process(tmp_path, order):
    """Whichever is imported first, a process that imported qaa (and made no other qaa call) gets the clear
    refusal from peft; one that never imported qaa gets peft's KeyError (nothing qaa can change)."""
    model, base_dir = _saved_base(tmp_path)
    out = tmp_path / "adapter"
    qaa.save_adapter(model, str(out))
    imports = "import peft, qaa" if order == "peft_first" else "import qaa, peft"
    code = (f"{imports}\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n"
            f"base = AutoModelForCausalLM.from_pretrained({str(base_dir)!r})\n")
    code += (f"try:\n    PeftModel.from_pretrained(base, {str(out)!r})\n"
             "except ValueError as e:\n    print('REFUSED', type(e).__name__)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "REFUSED QAAAdapterNotForPeft" in res.stdout, res.stderr[-2000:]
    if order == "peft_first":
        bare = code.replace("import peft, qaa", "import peft").replace("except ValueError", "except KeyError")
        res = subprocess.run([sys.executable, "-c", bare], capture_output=True, text=True, env=env, timeout=300)
        assert "REFUSED KeyError" in res.stdout, res.stderr[-2000:]


# ------------------------------------------------------------------------------------------ trl
def _sft_data():
    from datasets import Dataset

    return Dataset.from_dict({"text": ["The Eagle is a cheap coffee shop near the river.",
                                       "Blue Spice is a restaurant in the city centre."] * 6})


def _sft(cls, model, tok, out, trl):
    args = trl.SFTConfig(output_dir=str(out), max_steps=4, save_steps=2, save_strategy="steps",
                         per_device_train_batch_size=2, learning_rate=0.05, logging_steps=1, report_to=[],
                         use_cpu=True, max_length=32, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    return cls(model=model, args=args, train_dataset=_sft_data(), processing_class=tok)


def _adapter_values(model):
    return {f"{n}.{k}": t.detach().clone() for n, layer in qaa.qaa_layers(model)
            for k, t in (("theta", layer.qaa_theta["default"]), ("P", layer.qaa_out["default"].weight))}


def test_qaa_sft_trainer_checkpoints_hold_the_adapter_only_and_resume_bit_identically(tmp_path):
    trl = pytest.importorskip("trl", reason="trl is in the test extra; install with pip install -e '.[test]'")

    def build(seed):
        model, tok = tiny_llama(hidden=32, layers=1)
        qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=seed))
        return model, tok

    # The plain SFTTrainer writes the whole model into each checkpoint (what QAASFTTrainer avoids).
    model, tok = build(0)
    _sft(trl.SFTTrainer, model, tok, tmp_path / "plain", trl).train()
    assert (tmp_path / "plain" / "checkpoint-2" / "model.safetensors").is_file()

    model, tok = build(0)
    _sft(qaa.QAASFTTrainer, model, tok, tmp_path / "a", trl).train()
    expected = _adapter_values(model)
    ckpt = tmp_path / "a" / "checkpoint-2"
    files = set(os.listdir(ckpt))
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "trainer_state.json"} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin", "config.json"}

    resumed, tok = build(5)  # another initialisation: the checkpoint must supply everything
    _sft(qaa.QAASFTTrainer, resumed, tok, tmp_path / "b", trl).train(resume_from_checkpoint=str(ckpt))
    got = _adapter_values(resumed)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_qaa_sft_trainer_refuses_a_peft_config(tmp_path):
    trl = pytest.importorskip("trl", reason="trl is in the test extra; install with pip install -e '.[test]'")
    from peft import LoraConfig

    model, tok = tiny_llama(hidden=32, layers=1)
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=0))
    with pytest.raises(ValueError, match="no peft_config"):
        qaa.QAASFTTrainer(model=model, args=trl.SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True),
                          train_dataset=_sft_data(), processing_class=tok, peft_config=LoraConfig(r=2))


# ------------------------------------------------------------------------------------------ the Hub
def test_load_adapter_from_a_hub_id_in_the_offline_cache(tmp_path):
    """A Hub id resolves through a pre-populated Hugging Face cache with HF_HUB_OFFLINE=1 (no network used);
    an id that is not cached fails with FileNotFoundError naming offline mode."""
    import shutil

    model, base_dir = _saved_base(tmp_path)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            layer.qaa_out["default"].weight.normal_(0, 0.1)
    qaa.save_adapter(model, str(tmp_path / "adapter"))
    ids = torch.tensor([[5, 9, 11, 3]])
    model.eval()
    with torch.no_grad():
        torch.save(model(input_ids=ids).logits, tmp_path / "expected.pt")
    repo = tmp_path / "hub" / "models--someone--qaa-adapter"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tmp_path / "adapter", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "import torch, qaa\nfrom transformers import AutoModelForCausalLM\n"
        f"base = AutoModelForCausalLM.from_pretrained({str(base_dir)!r})\n"
        "qaa.load_adapter(base, 'someone/qaa-adapter')\nbase.eval()\n"
        "with torch.no_grad():\n    got = base(input_ids=torch.tensor([[5, 9, 11, 3]])).logits\n"
        f"assert torch.equal(got, torch.load({str(tmp_path / 'expected.pt')!r}))\nprint('LOADED')\n"
        "try:\n    qaa.load_adapter(AutoModelForCausalLM.from_pretrained("
        f"{str(base_dir)!r}), 'someone/not-cached')\n"
        "except FileNotFoundError as e:\n    print('MISSING', 'HF_HUB_OFFLINE' in str(e))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "hf_home")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "LOADED" in res.stdout and "MISSING True" in res.stdout, res.stderr[-3000:]


def test_push_adapter_to_hub_uploads_the_adapter_folder_only(tmp_path, monkeypatch):
    """Pushing needs the Hub, which this machine cannot reach: huggingface_hub's HfApi is replaced by a recorder,
    and the test checks what would be uploaded (the adapter files, loadable; nothing of the base model)."""
    import huggingface_hub

    model, base_dir = _saved_base(tmp_path)
    seen = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kw):
        seen["repo"] = (repo_id, private, exist_ok)

    def upload_folder(self, *, repo_id, folder_path, revision=None, commit_message=None, **kw):
        import shutil

        shutil.copytree(folder_path, tmp_path / "uploaded")
        seen["upload"] = (repo_id, commit_message)
        return type("Info", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = qaa.push_adapter_to_hub(model, "someone/qaa-adapter", private=True)
    assert url == "https://hub.example/someone/qaa-adapter/commit/1"
    assert seen["repo"] == ("someone/qaa-adapter", True, True)
    assert sorted(p.name for p in (tmp_path / "uploaded").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors"]
    qaa.load_adapter(AutoModelForCausalLM.from_pretrained(base_dir), str(tmp_path / "uploaded"))
    with pytest.raises(ValueError, match="owner/name"):
        qaa.push_adapter_to_hub(model, "not a repo id")
