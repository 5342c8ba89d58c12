"""Adapter-only checkpoints with transformers' Trainer (qaa.QAATrainer) and extraction of an adapter from a full
checkpoint folder."""
import os

import pytest
import torch

import qaa
from support import tiny_llama

transformers = pytest.importorskip("transformers")

STEPS, SAVE_EVERY = 4, 2


def _model(seed=0):
    model, _ = tiny_llama()
    qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=2, seed=seed))
    return model


def _dataset():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 200, (16, 10), generator=g)
    return [{"input_ids": row, "labels": row} for row in ids]


def _trainer(cls, model, out, **kw):
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=STEPS, save_steps=SAVE_EVERY, save_strategy="steps",
        per_device_train_batch_size=2, learning_rate=1e-2, seed=0, report_to=[], use_cpu=True,
        logging_steps=1, dataloader_num_workers=0, disable_tqdm=True, **kw)
    return cls(model=model, args=args, train_dataset=_dataset())


def _adapter(model):
    return {f"{n}.{k}": t.detach().clone() for n, layer in qaa.qaa_layers(model)
            for k, t in (("theta", layer.qaa_theta["default"]), ("P", layer.qaa_out["default"].weight))}


def test_adapter_only_checkpoints_resume_bit_identically(tmp_path):
    full = _model()
    _trainer(qaa.QAATrainer, full, tmp_path / "a").train()
    expected = _adapter(full)

    ckpt = tmp_path / "a" / f"checkpoint-{SAVE_EVERY}"
    files = set(os.listdir(ckpt))
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "trainer_state.json"} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin", "config.json"}
    model_bytes = sum(p.numel() * p.element_size() for p in full.parameters())
    adapter_bytes = sum(t.numel() * t.element_size() for t in expected.values())
    weights = os.path.getsize(ckpt / "adapter_model.safetensors")
    assert adapter_bytes <= weights <= adapter_bytes + 16384  # the tensors plus header and metadata
    folder_bytes = sum(os.path.getsize(ckpt / f) for f in files if os.path.isfile(ckpt / f))
    assert folder_bytes < model_bytes / 4, (folder_bytes, model_bytes)

    resumed = _model(seed=5)  # another initialisation: everything must come from the checkpoint
    _trainer(qaa.QAATrainer, resumed, tmp_path / "b").train(resume_from_checkpoint=str(ckpt))
    got = _adapter(resumed)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_extract_adapter_from_a_full_trainer_checkpoint(tmp_path):
    model = _model()
    _trainer(transformers.Trainer, model, tmp_path / "run").train()
    ckpt = tmp_path / "run" / f"checkpoint-{STEPS}"
    assert (ckpt / "model.safetensors").is_file()  # the plain Trainer writes the whole model
    probe = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(3))
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=probe).logits

    qaa.extract_adapter(str(ckpt), str(tmp_path / "from_folder"))
    # Only the whole model's state dict: the adapter's settings must be given.
    import shutil

    shutil.rmtree(ckpt / "qaa_adapters")
    with pytest.raises(ValueError, match="config=QAAConfig"):
        qaa.extract_adapter(str(ckpt), str(tmp_path / "from_weights"))
    qaa.extract_adapter(str(ckpt), str(tmp_path / "from_weights"),
                        config=qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=2))
    for folder in ("from_folder", "from_weights"):
        base, _ = tiny_llama()
        qaa.load_adapter(base, str(tmp_path / folder))
        with torch.no_grad():
            assert torch.equal(base(input_ids=probe).logits, expected), folder
