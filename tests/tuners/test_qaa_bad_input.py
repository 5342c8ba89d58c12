"""Bad input at the QAA tuner's entry points (QAALayer, attach, save/load): the right result or a clear
exception naming the problem, and a model left as it was; never a crash or a silent NaN."""
import json
import math
import os

import pytest
import torch
from torch import nn

import qaa
from support import tiny_llama


# ------------------------------------------------------------------------------------------ QAALayer
def make_layer(d_in=8, d_out=5, dtype=torch.float32, **cfg):
    torch.manual_seed(0)
    lin = nn.Linear(d_in, d_out).to(dtype)
    layer = qaa.QAALayer(lin, "default", qaa.QAAConfig(n_layers=2, seed=0, **cfg))
    with torch.no_grad():
        layer.qaa_out["default"].weight.normal_()  # a trained-looking branch (P = 0 would hide errors)
    return layer


def adapter_grads_finite(layer):
    grads = [layer.qaa_theta["default"].grad, layer.qaa_out["default"].weight.grad]
    return all(g is not None and torch.isfinite(g).all() for g in grads)


class TestLayer:
    def test_nan_inf_zero_tokens(self):
        layer = make_layer()
        x = torch.randn(2, 3, 8)
        x[0, 0, 3] = float("nan")
        x[0, 1, 2] = float("-inf")
        x[1, 2] = 0
        b = layer.branch(x, "default")
        assert torch.isfinite(b).all()
        assert (b[0, 0] == 0).all() and (b[1, 2] == 0).all()  # no state: branch 0
        clean = layer.branch(x[1, :2], "default")  # the engine is row-wise; torch's GEMM for P may block rows
        torch.testing.assert_close(b[1, :2], clean, rtol=1e-6, atol=1e-7)
        xg = x.clone().requires_grad_()
        y = layer(xg)
        # the frozen path carries the NaN / inf of the bad tokens (as the base model does); nothing else does
        assert torch.isfinite(y[1]).all() and torch.isfinite(y[0, 2]).all()
        y[torch.isfinite(y)].sum().backward()
        assert adapter_grads_finite(layer)

    @pytest.mark.parametrize("rescale", [False, True])
    def test_huge_tokens(self, rescale):
        layer = make_layer(rescale_by_norm=rescale)
        x = torch.randn(2, 3, 8)
        big = layer.branch(x * 1e30, "default")
        ref = layer.branch(x, "default") * (1e30 if rescale else 1)
        torch.testing.assert_close(big, ref, rtol=1e-4, atol=1e-5)
        xg = (x * 1e30).requires_grad_()
        layer.branch(xg, "default").sum().backward()
        assert adapter_grads_finite(layer) if not rescale else torch.isfinite(layer.qaa_theta["default"].grad).all()

    def test_float32_limit_with_rescale_by_norm_never_nan(self):
        # ||x|| of a 3e38 row overflows float32; 0 * inf must not turn the zero-initialised branch into NaN.
        layer = qaa.QAALayer(nn.Linear(8, 5), "default", qaa.QAAConfig(n_layers=2, seed=0, rescale_by_norm=True))
        x = torch.full((1, 2, 8), 3e38)
        x[0, 1] = torch.tensor([3e38, 0, 0, 0, 0, 0, 0, 1.0])
        assert (layer.branch(x, "default") == 0).all()
        with torch.no_grad():
            layer.qaa_out["default"].weight.normal_()
        b = layer.branch(x, "default")
        assert not torch.isnan(b).any()
        # NaN tokens still give a zero branch under rescale_by_norm
        xn = torch.randn(1, 2, 8)
        xn[0, 0, 0] = float("nan")
        assert (layer.branch(xn, "default")[0, 0] == 0).all()

    @pytest.mark.parametrize("shape", [(2, 0, 8), (0, 3, 8), (0, 8)])
    def test_empty_batch_or_sequence(self, shape):
        layer = make_layer()
        x = torch.randn(*shape, requires_grad=True)
        y = layer(x)
        assert y.shape == (*shape[:-1], 5)
        y.sum().backward()
        assert x.grad.shape == x.shape
        torch.testing.assert_close(layer.qaa_theta["default"].grad, torch.zeros(layer.qaa_theta["default"].shape))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_low_and_high_precision_base(self, dtype):
        layer = make_layer(dtype=dtype)
        x = torch.randn(2, 3, 8).to(dtype).requires_grad_()
        y = layer(x)
        assert y.dtype == dtype  # follows the base output
        assert layer.qaa_theta["default"].dtype == torch.float32  # adapter stays float32
        assert layer.qaa_out["default"].weight.dtype == torch.float32
        expected = layer.base_layer(x) + layer.branch(x, "default").to(dtype)
        torch.testing.assert_close(y, expected, rtol=0, atol=0)
        y.float().sum().backward()
        assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
        assert adapter_grads_finite(layer)
        assert layer.qaa_theta["default"].grad.dtype == torch.float32

    def test_input_dtype_other_than_the_base_is_the_base_layers_error(self):
        layer = make_layer()
        with pytest.raises(RuntimeError, match="dtype"):
            layer(torch.randn(2, 8, dtype=torch.float16))

    def test_autocast_bfloat16(self):
        layer = make_layer()
        x = torch.randn(2, 3, 8, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        assert y.dtype == torch.bfloat16
        assert layer.qaa_theta["default"].dtype == torch.float32
        y.float().sum().backward()
        assert adapter_grads_finite(layer) and torch.isfinite(x.grad).all()
        assert layer.qaa_theta["default"].grad.dtype == torch.float32
        with torch.no_grad():
            ref = layer(x)
        torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)

    @pytest.mark.parametrize("layout", ["transposed", "expanded", "strided"])
    def test_non_contiguous_tokens(self, layout):
        layer = make_layer()
        base = torch.randn(2, 3, 8)
        x = {"transposed": base.transpose(0, 1).contiguous().transpose(0, 1),
             "expanded": base[:1, :1].expand(2, 3, 8),
             "strided": torch.stack([base, base], -1)[..., 1]}[layout]
        assert not x.is_contiguous()
        xg = x.detach().requires_grad_() if layout != "expanded" else base[:1, :1].clone().requires_grad_()
        xin = xg if layout != "expanded" else xg.expand(2, 3, 8)
        y = layer(xin)
        torch.testing.assert_close(y, layer(x.contiguous()), rtol=0, atol=0)
        y.sum().backward()
        assert torch.isfinite(xg.grad).all()

    def test_meta_device(self):
        layer = qaa.QAALayer(nn.Linear(8, 5, device="meta"), "default", qaa.QAAConfig(n_layers=2))
        assert layer.qaa_theta["default"].device.type == "meta"
        # On meta the layer propagates shapes, as torch modules do (the custom operator's fake kernel) ...
        y = layer(torch.randn(2, 3, 8, device="meta"))
        assert y.device.type == "meta" and tuple(y.shape) == (2, 3, 5)
        # ... while the engine itself refuses meta tensors (there is nothing to compute on)
        with pytest.raises(ValueError, match="meta"):
            qaa.qaa_features(torch.randn(2, 8, device="meta"), layer.qaa_theta["default"], layer.circuit("default"))

    def test_too_many_qubits(self):
        lin = nn.Linear(2**21, 4)
        with pytest.raises(ValueError, match="needs 21 qubits; the engine supports at most 20"):
            qaa.QAALayer(lin, "default", qaa.QAAConfig())

    def test_wrong_width(self):
        layer = make_layer()
        with pytest.raises(ValueError, match="expected input width 8, got 7"):
            layer.branch(torch.randn(2, 7), "default")
        with pytest.raises(RuntimeError):
            layer(torch.randn(2, 7))  # the base nn.Linear's own error


# ------------------------------------------------------------------------------------------ attach
def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m)) for n, m in model.named_modules()],
            [(n, p.requires_grad) for n, p in model.named_parameters()],
            {k: v for k, v in model.__dict__.items() if k.startswith("qaa") or k in (
                "print_trainable_parameters", "merge_and_unload")},
            [(n, m.active_adapter, sorted(m.qaa_configs)) for n, m in qaa.qaa_layers(model)])


def assert_unchanged(model, snap):
    sd, types_, grads, attrs, active = snap
    sd2, types2, grads2, attrs2, active2 = snapshot(model)
    assert types2 == types_
    assert sd2.keys() == sd.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    assert grads2 == grads
    assert attrs2.keys() == attrs.keys()
    assert active2 == active


class Big(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(8, 8)
        self.v_proj = nn.Linear(2**21, 2)


class TestAttach:
    def test_bad_arguments(self):
        model = Big()
        snap = snapshot(model)
        with pytest.raises(TypeError, match="QAAConfig"):
            qaa.attach(model, {"n_layers": 2})
        with pytest.raises(TypeError, match="nn.Module"):
            qaa.attach("model", qaa.QAAConfig())
        with pytest.raises(ValueError, match="Candidate names: q_proj, v_proj"):
            qaa.attach(model, qaa.QAAConfig(target_modules=["k_proj"]))
        with pytest.raises(ValueError, match="v_proj: input width 2097152 needs 21 qubits"):
            qaa.attach(model, qaa.QAAConfig())  # q_proj fits, v_proj does not: nothing is wrapped
        with pytest.raises(ValueError, match="n_qubits=2 cannot embed"):
            qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj"], n_qubits=2))
        assert_unchanged(model, snap)
        for bad in ({"n_layers": 0}, {"n_layers": 1.5}, {"ansatz": "x"}, {"readout": "y"}, {"scaling": math.nan},
                    {"dropout": 1.0}, {"n_qubits": 21}, {"dtype": "float16"}, {"target_modules": []},
                    {"init_std": math.inf}):
            with pytest.raises(ValueError):
                qaa.QAAConfig(**bad)

    def test_target_modules_mistakes_are_explained(self):
        model = Big()
        snap = snapshot(model)
        with pytest.raises(ValueError, match="not a valid regular expression"):
            qaa.attach(model, qaa.QAAConfig(target_modules="q_proj("))
        with pytest.raises(ValueError, match="regular expression matched against full names"):
            qaa.attach(model, qaa.QAAConfig(target_modules="proj"))  # a regex, not a suffix
        seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        with pytest.raises(ValueError, match=r"not nn.Linear/Conv1D: 1 \(ReLU\)"):
            qaa.attach(seq, qaa.QAAConfig(target_modules=["0", "1"]))
        assert_unchanged(model, snap)

    def test_overflowing_init_std_is_refused(self):
        with pytest.raises(ValueError, match="init_std"):
            qaa.QAAConfig(init_std=1e39)

    def test_adapter_name_already_attached(self):
        model = Big()
        qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj"]))
        snap = snapshot(model)
        with pytest.raises(ValueError, match="already attached"):
            qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj"]))
        with pytest.raises(ValueError, match="adapter name"):
            qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj"]), adapter_name="a.b")
        assert_unchanged(model, snap)


# ------------------------------------------------------------------------------------------ save / load
def small_model(seed=0):
    model, _ = tiny_llama(seed=seed, hidden=32, layers=1, heads=2, kv_heads=1, vocab=300)
    return model


def trained_adapter(tmp_path, seed=1, name="default", **cfg):
    model = small_model()
    qaa.attach(model, qaa.QAAConfig(n_layers=2, seed=seed, **cfg), adapter_name=name)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            layer.qaa_out[name].weight.normal_(generator=torch.Generator().manual_seed(seed))
    folder = tmp_path / f"adapter-{seed}"
    qaa.save_adapter(model, str(folder), adapter_name=name)
    return model, folder


def adapter_values(model, name="default"):
    return {n: (l.qaa_theta[name].detach().clone(), l.qaa_out[name].weight.detach().clone())
            for n, l in qaa.qaa_layers(model) if name in l.qaa_configs}


def assert_same_values(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1], b[k][1])


def corrupt(folder, how):
    w = folder / "adapter_model.safetensors"
    c = folder / "adapter_config.json"
    data = w.read_bytes()
    if how == "truncate":
        w.write_bytes(data[: len(data) // 2])
    elif how == "truncate-header":
        w.write_bytes(data[:20])
    elif how == "empty":
        w.write_bytes(b"")
    elif how == "flip-header":
        b = bytearray(data)
        for i in range(10, 40):
            b[i] ^= 0xFF
        w.write_bytes(bytes(b))
    elif how == "flip-header-length":
        b = bytearray(data)
        b[0] ^= 0x5A
        b[3] ^= 0x01
        w.write_bytes(bytes(b))
    elif how == "flip-data":
        b = bytearray(data)
        b[-3] ^= 0x10  # a byte inside the last tensor: still a valid file, wrong values
        w.write_bytes(bytes(b))
    elif how == "garbage-json":
        c.write_text("{ this is not json")
    elif how == "binary-json":
        c.write_bytes(b"\xff\xfe\x00garbage")
    elif how == "json-list":
        c.write_text("[1, 2, 3]")
    elif how == "not-qaa":
        meta = json.loads(c.read_text())
        meta["peft_type"] = "LORA"
        c.write_text(json.dumps(meta))
    elif how == "config-edited":
        meta = json.loads(c.read_text())
        meta["n_layers"] = 3
        c.write_text(json.dumps(meta))
    elif how == "module-entry":
        meta = json.loads(c.read_text())
        first = next(iter(meta["modules"]))
        del meta["modules"][first]["n_params"]
        c.write_text(json.dumps(meta))
    elif how == "missing-weights":
        w.unlink()
    else:
        raise AssertionError(how)


CORRUPTIONS = ["truncate", "truncate-header", "empty", "flip-header", "flip-header-length", "flip-data",
               "garbage-json", "binary-json", "json-list", "not-qaa", "config-edited", "module-entry",
               "missing-weights"]


def rewrite(folder, edit_meta=None, edit_tensors=None):
    """Re-save an adapter with a consistent config, embedded config and checksum, after editing them: the
    loader's checks of the content (not of the file integrity) must catch the edit."""
    from safetensors.torch import load_file, save_file

    from qaa.tuners.save_load import tensors_digest as _tensors_digest

    meta = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    text = json.dumps(meta, indent=2, sort_keys=True)
    (folder / "adapter_config.json").write_text(text + "\n")
    save_file(tensors, str(folder / "adapter_model.safetensors"),
              metadata={"qaa_config": text, "qaa_sha256": _tensors_digest(tensors)})


def _first(d):
    return next(iter(d))


CONTENT_ERRORS = {
    "n_params": (lambda m: m["modules"][_first(m["modules"])].update(n_params=99), None, "n_params=99"),
    "missing-key": (lambda m: m["modules"][_first(m["modules"])].pop("d_in"), None, "lacks d_in"),
    "entry-not-object": (lambda m: m["modules"].update({_first(m["modules"]): [1]}), None, "not an object"),
    "no-modules": (lambda m: m.update(modules={}), None, "lists no modules"),
    "unknown-key": (lambda m: m.update(bogus=1), None, "unknown QAA config keys"),
    "bad-value": (lambda m: m.update(n_layers=0), None, "n_layers must be a positive integer"),
    "bad-type": (lambda m: m.update(n_layers="two"), None, "n_layers must be a positive integer"),
    "wrong-F": (None, lambda t: t.update({k: torch.zeros(v.shape[0], v.shape[1] + 1) for k, v in t.items()
                                          if k.endswith("out_proj.weight")}), "expected"),
    "wrong-theta": (None, lambda t: t.update({k: v[:-1].clone() for k, v in t.items() if k.endswith("theta")}),
                    "expected"),
    "extra-tensor": (None, lambda t: t.update(extra=torch.zeros(2)), "unexpected or missing"),
    "int-tensor": (None, lambda t: t.update({k: v.to(torch.int32) for k, v in t.items() if k.endswith("theta")}),
                   "float dtype"),
    "inf-tensor": (None, lambda t: t.update({k: v.fill_(math.inf) for k, v in t.items() if k.endswith("theta")}),
                   "non-finite"),
}


class TestSaveLoad:
    @pytest.mark.parametrize("case", sorted(CONTENT_ERRORS))
    def test_inconsistent_content_raises_and_changes_nothing(self, tmp_path, case):
        _, folder = trained_adapter(tmp_path)
        edit_meta, edit_tensors, message = CONTENT_ERRORS[case]
        rewrite(folder, edit_meta, edit_tensors)
        model = qaa.attach(small_model(), qaa.QAAConfig(n_layers=1), adapter_name="other")
        snap = snapshot(model)
        with pytest.raises(ValueError, match=message):
            qaa.load_adapter(model, str(folder))
        assert_unchanged(model, snap)

    @pytest.mark.parametrize("how", CORRUPTIONS)
    def test_corrupted_files_raise_and_change_nothing(self, tmp_path, how):
        _, folder = trained_adapter(tmp_path)
        corrupt(folder, how)
        # into a base model and into one that already holds another (trainable) adapter
        for model in (small_model(), qaa.attach(small_model(), qaa.QAAConfig(n_layers=1), adapter_name="other")):
            snap = snapshot(model)
            err = FileNotFoundError if how == "missing-weights" else ValueError
            with pytest.raises(err, match=r"adapter|tensor|corrupt|truncated|QAA|module|n_params|missing"):
                qaa.load_adapter(model, str(folder))
            assert_unchanged(model, snap)

    def test_config_and_weights_from_different_saves(self, tmp_path):
        # What a save killed between its two renames leaves (new weights, old config) looks the same: the weights
        # file carries its own config and checksum, so its adapter loads, with a warning.
        _, a = trained_adapter(tmp_path, seed=1)
        model_b, b = trained_adapter(tmp_path, seed=2)  # same shapes, other values and seed
        (a / "adapter_model.safetensors").write_bytes((b / "adapter_model.safetensors").read_bytes())
        with pytest.warns(RuntimeWarning, match="from another save"):
            loaded = qaa.load_adapter(small_model(), str(a))
        assert loaded.qaa_configs["default"].seed == 2
        assert_same_values(adapter_values(loaded), adapter_values(model_b))

    def test_wrong_model_shape(self, tmp_path):
        _, folder = trained_adapter(tmp_path)
        other, _ = tiny_llama(seed=0, hidden=64, layers=1, heads=2, kv_heads=1, vocab=300)
        snap = snapshot(other)
        with pytest.raises(ValueError, match=r"expects \(d_in, d_out\)=\(32, 32\)"):
            qaa.load_adapter(other, str(folder))
        assert_unchanged(other, snap)
        gpt = nn.Sequential(nn.Linear(4, 4))
        snap = snapshot(gpt)
        with pytest.raises(ValueError, match="does not exist in this model"):
            qaa.load_adapter(gpt, str(folder))
        assert_unchanged(gpt, snap)

    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_non_finite_weights_are_refused_before_the_folder_is_touched(self, tmp_path, bad):
        model, folder = trained_adapter(tmp_path)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        with torch.no_grad():
            next(qaa.qaa_layers(model))[1].qaa_out["default"].weight[0, 0] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            qaa.save_adapter(model, str(folder))
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
        with pytest.raises(ValueError, match="NaN or inf"):
            qaa.save_adapter(model, str(tmp_path / "new"))
        assert not (tmp_path / "new").exists()

    def test_name_clash_changes_nothing(self, tmp_path):
        _, folder = trained_adapter(tmp_path)
        model = qaa.attach(small_model(), qaa.QAAConfig(n_layers=1))
        snap = snapshot(model)
        with pytest.raises(ValueError, match="already attached"):
            qaa.load_adapter(model, str(folder))
        assert_unchanged(model, snap)

    def test_failure_while_attaching_is_rolled_back(self, tmp_path, monkeypatch):
        _, folder = trained_adapter(tmp_path)
        model = qaa.attach(small_model(), qaa.QAAConfig(n_layers=1, target_modules=["q_proj"]),
                           adapter_name="other")
        snap = snapshot(model)
        calls = {"n": 0}
        original = qaa.QAALayer.add_adapter

        def flaky(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("simulated failure while attaching")
            return original(self, *a, **k)

        monkeypatch.setattr(qaa.QAALayer, "add_adapter", flaky)
        with pytest.raises(RuntimeError, match="simulated"):
            qaa.load_adapter(model, str(folder), adapter_name="second", is_trainable=True)
        monkeypatch.undo()
        assert_unchanged(model, snap)
        qaa.load_adapter(model, str(folder), adapter_name="second")  # and it still loads afterwards

    @pytest.mark.parametrize("fail_at", ["weights", "config"])
    def test_failed_save_keeps_the_previous_adapter(self, tmp_path, monkeypatch, fail_at):
        model, folder = trained_adapter(tmp_path)
        before = adapter_values(model)
        with torch.no_grad():
            for _, layer in qaa.qaa_layers(model):
                layer.qaa_theta["default"].add_(1.0)
        # The weights file is written whole in memory and then to a temporary file; a failure while it is made
        # durable (its fsync, the first) or while the config follows (the second fsync) must leave the previous
        # adapter in place.
        real_fsync = os.fsync
        calls = {"n": 0}
        fail_call = 1 if fail_at == "weights" else 2

        def fsync(fd):
            calls["n"] += 1
            if calls["n"] == fail_call:
                raise OSError("I/O error (simulated)")
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(OSError, match="simulated"):
            qaa.save_adapter(model, str(folder))
        monkeypatch.undo()
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", "adapter_config.json",
                                                              "adapter_model.safetensors"]
        loaded = qaa.load_adapter(small_model(), str(folder))
        assert_same_values(adapter_values(loaded), before)

    def test_roundtrip_still_exact(self, tmp_path):
        model, folder = trained_adapter(tmp_path, readout="probs", ansatz="ry_rz_ring_ry")
        loaded = qaa.load_adapter(small_model(), str(folder))
        assert_same_values(adapter_values(loaded), adapter_values(model))
        ids = torch.tensor([[1, 5, 9, 11]])
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
