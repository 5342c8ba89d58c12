"""The "standardize" input transform of QAA (calibration, save/load) and the angle learning-rate groups."""
import json
import os

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import qaa
from qaa.tuners.optim import param_groups
from qaa.tuners.qaa import SCALE_EPS, InputStandardizer
from qaa.tuners.save_load import read_adapter_files, save_adapter_files


def tiny_llama(seed=0, tie=False):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).eval()


def make_batches(n=3, seed=5):
    """Left-padded batches: the first positions of some rows are masked out."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(3, 97, (2, 8), generator=g)
        mask = torch.ones(2, 8, dtype=torch.long)
        mask[0, : 2 + i] = 0
        ids[0, : 2 + i] = 0  # pad id
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


IDS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def randomise_out(model, seed=1, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            for lin in layer.qaa_out.values():
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=lin.weight.dtype) * std)


def reference_stats(batches, dtype=torch.float64):
    """Per target layer: mean and population std of its input over unmasked positions, from hooks on the base
    model (two-pass, float64), independent of the calibration code."""
    base = tiny_llama()
    rows = {}
    hooks = []
    mask_now = [None]
    for name, mod in base.named_modules():
        if name.endswith(("q_proj", "v_proj")):
            def hook(_m, args, name=name):
                x = args[0].to(dtype)
                keep = mask_now[0].reshape(-1) != 0
                rows.setdefault(name, []).append(x.reshape(-1, x.shape[-1])[keep])
            hooks.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        for b in batches:
            mask_now[0] = b["attention_mask"]
            base(**b)
    for h in hooks:
        h.remove()
    out = {}
    for name, chunks in rows.items():
        x = torch.cat(chunks)
        out[name] = (x.mean(0), x.std(0, unbiased=False), x.shape[0])
    return out


# ------------------------------------------------------------------ config and identity
def test_config_accepts_only_known_transforms():
    assert qaa.QAAConfig(input_transform="standardize").input_transform == "standardize"
    assert qaa.QAAConfig().input_transform is None
    with pytest.raises(ValueError, match="input_transform"):
        qaa.QAAConfig(input_transform="whiten")


def test_identity_transform_is_bit_identical_to_no_transform():
    plain = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0, n_layers=2))
    std = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0, n_layers=2, input_transform="standardize"))
    randomise_out(plain)
    randomise_out(std)
    for _, layer in qaa.qaa_layers(std):
        t = layer.qaa_input["default"]
        assert not t.calibrated and torch.equal(t.mean, torch.zeros(layer.d_in))
        assert torch.equal(t.scale, torch.ones(layer.d_in))
    assert not torch.equal(logits(plain), logits(tiny_llama()))  # the branch is on
    torch.testing.assert_close(logits(std), logits(plain), atol=0, rtol=0)
    # the buffers are buffers (state_dict), never parameters
    assert not any("qaa_input" in n for n, _ in std.named_parameters())
    assert any(n.endswith("qaa_input.default.mean") for n in std.state_dict())


def test_standardizer_forward_and_errors():
    t = InputStandardizer(3, torch.float64)
    t.set_statistics(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 0.5]))
    x = torch.tensor([[3.0, 2.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(t(x), torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64))
    assert t.calibrated
    with pytest.raises(ValueError, match="shape"):
        t.set_statistics(torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        t.set_statistics(torch.tensor([0.0, float("nan"), 0.0]), torch.ones(3))
    with pytest.raises(ValueError, match="> 0"):
        t.set_statistics(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]))


# ------------------------------------------------------------------ calibration
def test_calibrated_statistics_equal_a_hand_computation_over_unmasked_positions():
    batches = make_batches()
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0, input_transform="standardize", dtype="float64"))
    summary = qaa.calibrate_input_transform(model, batches)
    ref = reference_stats(batches)
    n_unmasked = int(sum(b["attention_mask"].sum() for b in batches))
    assert set(summary) == set(ref) and len(ref) == 4
    for name, layer in qaa.qaa_layers(model):
        mean, std, count = ref[name]
        assert count == n_unmasked == summary[name]["count"]
        t = layer.qaa_input["default"]
        assert t.calibrated and t.mean.dtype == torch.float64
        torch.testing.assert_close(t.mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(t.scale, std, rtol=1e-8, atol=1e-12)
        assert summary[name]["std_max"] == pytest.approx(float(std.max()), rel=1e-8)
        assert summary[name]["mean_norm"] == pytest.approx(float(mean.norm()), rel=1e-8)


def test_masked_positions_do_not_count():
    batches = make_batches()
    other = [{"input_ids": b["input_ids"].masked_fill(b["attention_mask"] == 0, 42),
              "attention_mask": b["attention_mask"]} for b in batches]
    no_mask = [{"input_ids": b["input_ids"]} for b in batches]
    stats = []
    for bs in (batches, other, no_mask):
        model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0, input_transform="standardize", dtype="float64"))
        summary = qaa.calibrate_input_transform(model, bs)
        stats.append(({n: (l.qaa_input["default"].mean.clone(), l.qaa_input["default"].scale.clone())
                       for n, l in qaa.qaa_layers(model)}, summary))
    (a, sa), (b, sb), (c, sc) = stats
    for name in a:  # the padded tokens' ids do not matter...
        torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=1e-12)
        # ...and without the mask they are counted
        assert sc[name]["count"] == 3 * 16 > sa[name]["count"]
        assert not torch.allclose(a[name][0], c[name][0])


def test_calibration_keeps_step_zero_exact_and_training_flags():
    base = logits(tiny_llama())
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0, input_transform="standardize"))
    model.train()
    qaa.calibrate_input_transform(model, make_batches(), max_batches=2)
    assert all(m.training for m in model.modules())
    model.eval()
    torch.testing.assert_close(logits(model), base, atol=0, rtol=0)  # P = 0: still the base model
    # the calibrated transform changes the branch once P != 0
    plain = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0))
    randomise_out(model)
    randomise_out(plain)
    assert not torch.allclose(logits(model), logits(plain))


def test_max_batches_limits_the_data():
    batches = make_batches()
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0, input_transform="standardize"))
    summary = qaa.calibrate_input_transform(model, iter(batches), max_batches=1)
    assert next(iter(summary.values()))["count"] == int(batches[0]["attention_mask"].sum())


class Toy(nn.Module):
    """One linear layer; ``forward(x)`` so a batch is ``{"x": ...}``."""

    def __init__(self, d=8):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(d, 4, dtype=torch.float64)

    def forward(self, x):
        return self.lin(x)


def test_constant_coordinates_get_the_scale_floor():
    model = qaa.attach(Toy(), qaa.QAAConfig(target_modules=["lin"], seed=0, input_transform="standardize",
                                            dtype="float64"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64) * torch.arange(1, 9, dtype=torch.float64)
    x[:, 2] = 7.0  # constant coordinate
    qaa.calibrate_input_transform(model, [{"x": x[:20]}, {"x": x[20:]}])
    t = model.lin.qaa_input["default"]
    std = x.std(0, unbiased=False)
    assert float(t.mean[2]) == pytest.approx(7.0)
    assert float(t.scale[2]) == pytest.approx(SCALE_EPS * float(std.max()), rel=1e-6)
    torch.testing.assert_close(t.scale[[0, 1, 3]], std[[0, 1, 3]], rtol=1e-10, atol=0)
    out = model(x)
    assert torch.isfinite(out).all()
    # every coordinate constant: scale 1
    model2 = qaa.attach(Toy(), qaa.QAAConfig(target_modules=["lin"], input_transform="standardize"))
    qaa.calibrate_input_transform(model2, [{"x": torch.ones(5, 8, dtype=torch.float64)}])
    assert torch.equal(model2.lin.qaa_input["default"].scale, torch.ones(8))


def test_calibration_errors():
    with pytest.raises(ValueError, match="input_transform"):
        qaa.calibrate_input_transform(qaa.attach(Toy(), qaa.QAAConfig(target_modules=["lin"])), [{"x": torch.ones(2, 8, dtype=torch.float64)}])
    model = qaa.attach(Toy(), qaa.QAAConfig(target_modules=["lin"], input_transform="standardize"))
    with pytest.raises(KeyError):
        qaa.calibrate_input_transform(model, [], adapter_name="other")
    with pytest.raises(ValueError, match="no token"):
        qaa.calibrate_input_transform(model, [])
    with pytest.raises(ValueError, match="max_batches"):
        qaa.calibrate_input_transform(model, [{"x": torch.ones(2, 8, dtype=torch.float64)}], max_batches=0)
    with pytest.raises(TypeError):
        qaa.calibrate_input_transform(model, [[1, 2]])
    with pytest.raises(ValueError, match="does not match"):
        qaa.calibrate_input_transform(tiny_llama_std(), [{"input_ids": IDS, "attention_mask": torch.ones(2, 3)}])


def tiny_llama_std():
    return qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0, input_transform="standardize"))


def _distributed_worker(rank, world, init_file, result_file):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = qaa.attach(Toy(), qaa.QAAConfig(target_modules=["lin"], input_transform="standardize",
                                                dtype="float64"))
        x = torch.randn(40, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3 + 1
        qaa.calibrate_input_transform(model, [{"x": x[rank * 25: (rank + 1) * 25]}])  # 25 and 15 rows
        t = model.lin.qaa_input["default"]
        torch.save({"mean": t.mean, "scale": t.scale}, f"{result_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_distributed_statistics_are_all_reduced(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "res")), nprocs=2, join=True)
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3 + 1
    r0, r1 = (torch.load(tmp_path / f"res.{r}") for r in range(2))
    torch.testing.assert_close(r0["mean"], r1["mean"], atol=0, rtol=0)
    torch.testing.assert_close(r0["scale"], r1["scale"], atol=0, rtol=0)
    torch.testing.assert_close(r0["mean"], x.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r0["scale"], x.std(0, unbiased=False), rtol=1e-10, atol=0)


# ------------------------------------------------------------------ save / load
def test_save_load_roundtrip_keeps_the_transform(tmp_path):
    model = tiny_llama_std()
    qaa.calibrate_input_transform(model, make_batches())
    randomise_out(model)
    before = logits(model)
    qaa.save_adapter(model, tmp_path)
    meta, tensors = read_adapter_files(tmp_path, "QAA")
    assert meta["input_transform"] == "standardize"
    name = "model.layers.0.self_attn.q_proj"
    assert meta["modules"][name]["input_calibrated"] is True
    torch.testing.assert_close(tensors[f"{name}.input_mean"], model.get_submodule(name).qaa_input["default"].mean)
    assert tensors[f"{name}.input_scale"].shape == (64,)
    loaded = qaa.load_adapter(tiny_llama(), tmp_path)
    torch.testing.assert_close(logits(loaded), before, atol=0, rtol=0)
    assert all(layer.qaa_input["default"].calibrated for _, layer in qaa.qaa_layers(loaded))


def test_adapter_without_transform_saves_and_loads_as_before(tmp_path):
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0))
    randomise_out(model)
    qaa.save_adapter(model, tmp_path)
    meta, tensors = read_adapter_files(tmp_path, "QAA")
    assert meta["input_transform"] is None and not any("input_" in k for k in tensors)
    # a folder written before the field existed: no input_transform key at all
    del meta["input_transform"]
    save_adapter_files(tmp_path, {k: v for k, v in meta.items() if k != "format_version"}, tensors)
    assert "input_transform" not in json.load(open(os.path.join(tmp_path, "adapter_config.json")))
    loaded = qaa.load_adapter(tiny_llama(), tmp_path)
    torch.testing.assert_close(logits(loaded), logits(model), atol=0, rtol=0)
    assert all(not layer.qaa_input for _, layer in qaa.qaa_layers(loaded))


@pytest.mark.parametrize("damage", ["shape", "nan", "zero_scale", "missing"])
def test_loader_rejects_bad_transform_tensors(tmp_path, damage):
    model = tiny_llama_std()
    qaa.save_adapter(model, tmp_path)
    meta, tensors = read_adapter_files(tmp_path, "QAA")
    key = "model.layers.1.self_attn.v_proj.input_scale"
    if damage == "shape":
        tensors[key] = torch.ones(63)
    elif damage == "nan":
        tensors[key] = tensors[key].clone()
        tensors[key][5] = float("nan")
    elif damage == "zero_scale":
        tensors[key] = torch.zeros(64)
    else:
        del tensors[key]
    save_adapter_files(tmp_path, {k: v for k, v in meta.items() if k != "format_version"}, tensors)
    fresh = tiny_llama()
    with pytest.raises(ValueError):
        qaa.load_adapter(fresh, tmp_path)
    assert not list(qaa.qaa_layers(fresh))


# ------------------------------------------------------------------ angle learning rate
def test_param_groups_split_theta_from_the_rest_exactly_once():
    model = qaa.attach(tiny_llama(tie=True), qaa.QAAConfig(seed=0))
    model.model.embed_tokens.weight.requires_grad_(True)  # tied with lm_head: must appear once
    groups = param_groups(model, lr=1e-3, theta_lr_ratio=10.0, weight_decay=0.01)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"other", "qaa_theta"}
    thetas = {id(layer.qaa_theta["default"]) for _, layer in qaa.qaa_layers(model)}
    assert {id(p) for p in by_name["qaa_theta"]["params"]} == thetas and len(thetas) == 4
    expected_other = {id(layer.qaa_out["default"].weight) for _, layer in qaa.qaa_layers(model)}
    expected_other.add(id(model.model.embed_tokens.weight))
    assert [id(p) for p in by_name["other"]["params"]] and \
        {id(p) for p in by_name["other"]["params"]} == expected_other
    assert len(by_name["other"]["params"]) == len(expected_other)
    assert by_name["qaa_theta"]["lr"] == pytest.approx(1e-2) and by_name["other"]["lr"] == 1e-3
    assert all(g["weight_decay"] == 0.01 for g in groups)
    n_grouped = sum(p.numel() for g in groups for p in g["params"])
    assert n_grouped == model.get_nb_trainable_parameters()[0]


def test_param_groups_drive_adamw_per_group():
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0))
    randomise_out(model)  # theta gets a gradient only once P != 0
    thetas = [layer.qaa_theta["default"] for _, layer in qaa.qaa_layers(model)]
    outs = [layer.qaa_out["default"].weight for _, layer in qaa.qaa_layers(model)]
    for ratio in (0.0, 5.0):
        th0 = [t.detach().clone() for t in thetas]
        o0 = [o.detach().clone() for o in outs]
        opt = torch.optim.AdamW(param_groups(model, lr=1e-3, theta_lr_ratio=ratio), lr=123.0)
        loss = model(IDS, labels=IDS).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        # Adam's first step moves each coordinate by lr * g / (|g| + eps): at most the group's lr
        d_theta = max(float((t.detach() - t0).abs().max()) for t, t0 in zip(thetas, th0))
        d_out = max(float((o.detach() - o0).abs().max()) for o, o0 in zip(outs, o0))
        assert d_out == pytest.approx(1e-3, rel=1e-3)
        if ratio == 0:
            assert d_theta == 0.0
        else:
            assert d_theta == pytest.approx(5e-3, rel=1e-3)


def test_param_groups_errors():
    model = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0))
    for kwargs in ({"lr": 0.0}, {"lr": float("nan")}, {"lr": 1e-3, "theta_lr_ratio": -1.0},
                   {"lr": 1e-3, "weight_decay": -0.1}, {"lr": True}):
        with pytest.raises(ValueError):
            param_groups(model, **kwargs)
    with pytest.raises(ValueError, match="no trainable"):
        param_groups(tiny_llama().requires_grad_(False), lr=1e-3)
    # frozen adapter (loaded for inference): nothing trainable
    frozen = qaa.attach(tiny_llama(), qaa.QAAConfig(seed=0), is_trainable=False)
    with pytest.raises(ValueError, match="no trainable"):
        param_groups(frozen, lr=1e-3)
