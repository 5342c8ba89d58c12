"""QAA under DDP, FSDP2 and FSDP1 (2 processes, gloo, CPU): training matches one process, bf16 mixed precision
keeps the adapter float32, and adapters saved from the wrapped / sharded model load with identical logits.

One ``torch.distributed.run`` launch (tests/tuners/dist_worker.py) runs every scenario; the references (one process
on the concatenated batch) are computed here, on the plain model.
"""
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

import qaa
from support import tiny_llama, torchrun

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dist_worker as W  # noqa: E402

SCENARIOS = ["ddp-fp32", "ddp-bf16", "fsdp2-fp32", "fsdp2-bf16", "fsdp1-fp32", "fsdp1-bf16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = torchrun([os.path.join(os.path.dirname(__file__), "dist_worker.py"), out, *SCENARIOS])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def reference():
    """One process, plain model, the whole batch of every step, float32."""
    model = W.fresh_model()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=W.LR)
    train, probe = W.batches()
    model.train()
    for ids in train:
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return model


def _saved(folder):
    return load_file(os.path.join(folder, "adapter_model.safetensors"))


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp2", "fsdp1"])
def test_fp32_training_matches_one_process_on_the_whole_batch(runs, reference, wrapper):
    saved = _saved(runs / f"{wrapper}-fp32" / "adapter")
    ref = {}
    for name, layer in qaa.qaa_layers(reference):
        ref[f"{name}.theta"] = layer.qaa_theta["default"].detach()
        ref[f"{name}.out_proj.weight"] = layer.qaa_out["default"].weight.detach()
    assert set(saved) == set(ref)
    for key, value in ref.items():
        assert saved[key].dtype == torch.float32
        assert (saved[key] - value).abs().max().item() <= 1e-6, key
    assert any(v.abs().max() > 0 for k, v in saved.items() if k.endswith("out_proj.weight"))  # it trained


def _relative_distance(a: dict, b: dict) -> float:
    """||a - b|| / ||b|| over every adapter tensor together (float64)."""
    def flat(d):
        return torch.cat([d[key].double().flatten() for key in sorted(d)])
    reference = flat(b)
    return ((flat(a) - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp2", "fsdp1"])
def test_bf16_mixed_precision_matches_world_size_1_and_keeps_the_adapter_float32(runs, wrapper):
    """Under bf16 the two-rank run cannot equal the world-size-1 run bit for bit (FSDP computes each rank's bf16
    matmuls on its own batch shape, so roundings differ; after 3 AdamW steps from the zero-initialised output
    maps, single matrices differ by a few percent), so the yardstick is bf16's own error, measured in the same
    launch: over the whole adapter, the two-rank run must be closer to the world-size-1 bf16 run than half the
    distance between that run and the float32 one. A rank that trains without the gradient all-reduce (its
    half of each batch alone) must fail that bound, so the bound detects missing synchronisation."""
    folder = runs / f"{wrapper}-bf16"
    two, one, fp32 = _saved(folder / "adapter"), _saved(folder / "ref1"), _saved(runs / f"{wrapper}-fp32" / "adapter")
    half = _saved(folder / "half")
    result = torch.load(folder / "result.pt")
    assert result["adapter_dtypes"] == ["torch.float32"]  # theta and P stayed float32 in the wrapped model
    assert set(two) == set(one) == set(half)
    for key in one:
        assert two[key].dtype == torch.float32
    # The policy was in effect: bf16 training does not reproduce the float32 run.
    bf16_error = _relative_distance(one, fp32)
    assert bf16_error > 1e-3
    distributed, unsynchronised = _relative_distance(two, one), _relative_distance(half, one)
    assert distributed <= 0.5 * bf16_error, (distributed, bf16_error)
    assert unsynchronised > 0.5 * bf16_error, (unsynchronised, bf16_error)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_adapter_saved_from_the_wrapped_model_loads_with_identical_logits(runs, scenario):
    result = torch.load(runs / scenario / "result.pt")
    # A fresh model holding the saved adapter, wrapped the same way, gives the trained model's logits.
    assert torch.equal(result["loaded_logits"], result["logits"])
    if scenario.endswith("fp32"):
        # ... and so does a fresh plain base model (float32 logits equal to what the wrapped model computed).
        base, _ = tiny_llama()
        qaa.load_adapter(base, str(runs / scenario / "adapter"))
        _, probe = W.batches()
        with torch.no_grad():
            logits = base(input_ids=probe).logits
        torch.testing.assert_close(logits, result["logits"], rtol=0, atol=1e-6)


def test_save_of_a_wrong_shape_raises_and_keeps_the_previous_adapter(tmp_path):
    model = W.fresh_model()
    qaa.save_adapter(model, str(tmp_path))
    before = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)}
    layer = dict(qaa.qaa_layers(model))["model.layers.0.self_attn.q_proj"]
    layer.qaa_theta["default"] = torch.nn.Parameter(torch.zeros(0))  # what an ungathered shard looks like
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.q_proj\.theta .*shape \(0,\)"):
        qaa.save_adapter(model, str(tmp_path))
    assert {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)} == before
    base, _ = tiny_llama()
    qaa.load_adapter(base, str(tmp_path))  # still the first adapter, loadable


def test_peft_wrapped_model_saves_the_plain_names(tmp_path):
    peft = pytest.importorskip("peft")
    model = W.fresh_model()
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            layer.qaa_out["default"].weight.normal_()
    qaa.save_adapter(model, str(tmp_path / "plain"))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(target_modules=["k_proj"], r=2))
    qaa.save_adapter(wrapped, str(tmp_path / "peft"))
    assert _saved(tmp_path / "peft").keys() == _saved(tmp_path / "plain").keys()
    for key, value in _saved(tmp_path / "plain").items():
        assert torch.equal(_saved(tmp_path / "peft")[key], value)


@pytest.mark.parametrize("stage, precision", [(2, "fp32"), (3, "fp32"), (2, "bf16"), (3, "bf16")])
def test_deepspeed_zero_trains_and_saves_the_gathered_adapter(tmp_path, stage, precision):
    """Under bf16, DeepSpeed rounds the model's copy of the adapter to bf16 and keeps float32 masters in the
    optimizer: the saved adapter holds the masters (float32 values that bf16 cannot represent)."""
    # DeepSpeed installs from its source archive with DS_BUILD_OPS=0 (pyproject's [test] extra); ZeRO runs on the
    # CPU with DS_ACCELERATOR=cpu and gloo.
    pytest.importorskip("deepspeed")
    from safetensors.torch import load_file

    from support import torchrun

    out = tmp_path / "adapter"
    run = torchrun([os.path.join(os.path.dirname(__file__), "ds_worker.py"), stage, out, precision], nproc=2,
                   timeout=300,
                   env={"DS_ACCELERATOR": "cpu"})
    assert run.returncode == 0, run.stderr[-3000:]
    expected = torch.load(out / "expected.pt")
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert saved.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(saved[key], value), key
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in saved.items() if k.endswith("out_proj.weight"))
    assert all(v.dtype == torch.float32 for v in saved.values())
    if precision == "bf16":  # not bf16-rounded values
        assert any(not torch.equal(v, v.bfloat16().float()) for v in saved.values())
    base = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    loaded = qaa.load_adapter(base, str(out))
    for name, layer in qaa.qaa_layers(loaded):
        assert torch.equal(layer.qaa_theta["default"], expected[f"{name}.theta"])


@pytest.mark.parametrize("scenario", ["fsdp2-fp32", "fsdp2-bf16"])
def test_fsdp2_distributed_checkpoint_state_dict_round_trips(runs, scenario):
    """``torch.distributed.checkpoint.state_dict``'s get/set_model_state_dict on a sharded model holding QAA
    layers, full (gathered on every rank) and sharded, restore the trained model into a fresh sharded model of
    another initialisation: identical logits."""
    result = torch.load(os.path.join(runs, scenario, "result.pt"))
    assert set(result["state_dict_logits"]) == {"full", "sharded"}
    for kind, logits in result["state_dict_logits"].items():
        torch.testing.assert_close(logits, result["logits"], rtol=0, atol=0, msg=f"{kind} state dict")

