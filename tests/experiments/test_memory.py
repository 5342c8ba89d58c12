"""memory_account against hand-counted cases: saved tensors, gradients and optimizer state of known size."""
import pytest
import torch
from torch import nn

from qaa.experiments.memory import ACCOUNT_COMPONENTS, memory_account

F32 = 4  # bytes per float32 element


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _sum_loss(model, x):
    return model(x).sum()


X = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))


def test_all_trainable_mlp_hand_count():
    acc = memory_account(_mlp(), X, loss_fn=_sum_loss)
    n_params = 4 * 3 + 3 + 3 * 2 + 2  # 23 floats
    assert acc["trainable_param_bytes"] == n_params * F32 == 92
    assert acc["gradient_bytes"] == 92
    # AdamW: exp_avg and exp_avg_sq of every parameter, plus one float32 scalar 'step' per parameter tensor (4)
    assert acc["optimizer_state_bytes"] == 2 * 92 + 4 * F32 == 200
    # saved for backward: the input x (5x4, for Linear 1's weight gradient) and ReLU's output (5x3, saved by
    # ReLU and by Linear 2 for its weight gradient: one storage, counted once); weights are excluded
    assert acc["activation_bytes"] == (5 * 4 + 5 * 3) * F32 == 140
    assert acc["frozen_param_bytes"] == 0 and acc["buffer_bytes"] == 0
    assert acc["total_bytes"] == 92 + 92 + 200 + 140 == 524
    assert acc["trainable_params"] == 23 and acc["frozen_params"] == 0
    assert acc["optimizer"] == "AdamW" and acc["device"] == "cpu"
    assert acc["cuda_max_allocated_bytes"] is None  # no exact peak on CPU


def test_frozen_first_layer_saves_less():
    model = _mlp()
    model[0].requires_grad_(False)
    acc = memory_account(model, X, loss_fn=_sum_loss)
    assert acc["trainable_param_bytes"] == (3 * 2 + 2) * F32 == 32
    assert acc["frozen_param_bytes"] == (4 * 3 + 3) * F32 == 60
    assert acc["gradient_bytes"] == 32
    assert acc["optimizer_state_bytes"] == 2 * 32 + 2 * F32 == 72
    # nothing before Linear 2 needs a gradient: only ReLU's output (5x3), for Linear 2's weight gradient
    assert acc["activation_bytes"] == 5 * 3 * F32 == 60
    assert acc["total_bytes"] == 32 + 32 + 72 + 60 + 60 == 256


def test_optimizer_state_of_a_single_parameter():
    p = nn.Parameter(torch.zeros(1000))
    model = nn.Module()
    model.p = p
    acc = memory_account(model, None, loss_fn=lambda m, _: (m.p * 2.0).sum())
    assert acc["optimizer_state_bytes"] == 2 * 1000 * F32 + F32
    assert acc["gradient_bytes"] == 1000 * F32
    assert acc["activation_bytes"] == 0  # multiplying by a Python scalar saves no tensor
    sgd = memory_account(model, None, optimizer="sgd", loss_fn=lambda m, _: (m.p * 2.0).sum())
    assert sgd["optimizer_state_bytes"] == 0 and sgd["optimizer"] == "SGD"
    none = memory_account(model, None, optimizer=None, loss_fn=lambda m, _: (m.p * 2.0).sum())
    assert none["optimizer_state_bytes"] is None and none["optimizer"] is None
    assert none["total_bytes"] == 2 * 1000 * F32


def test_half_precision_state_follows_the_parameter_dtype():
    model = nn.Module()
    model.p = nn.Parameter(torch.zeros(10, dtype=torch.bfloat16))
    acc = memory_account(model, None, loss_fn=lambda m, _: (m.p.float() * 3.0).sum())
    assert acc["trainable_param_bytes"] == 20 and acc["gradient_bytes"] == 20
    assert acc["optimizer_state_bytes"] == 2 * 20 + F32  # bf16 moments, float32 step


def test_model_left_as_it_was():
    model = _mlp()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    memory_account(model, X, loss_fn=_sum_loss)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_lora_on_tiny_llama():
    from support import tiny_llama

    from qaa.tuners.baselines import attach_lora

    base, _ = tiny_llama(seed=0)  # hidden 64, 2 layers, 4 heads, 2 kv heads: v_proj 64 -> 32
    n_base = sum(p.numel() for p in base.parameters())
    model = attach_lora(base, ("q_proj", "v_proj"), r=4, alpha=8)
    ids = torch.randint(3, base.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    acc = memory_account(model, batch)
    lora = 2 * (4 * (64 + 64) + 4 * (64 + 32))  # per layer: A (r x in) and B (out x r) of q_proj and v_proj
    assert acc["trainable_params"] == lora == 1792
    assert acc["trainable_param_bytes"] == lora * F32 == acc["gradient_bytes"]
    assert acc["optimizer_state_bytes"] == 2 * lora * F32 + 8 * F32  # 8 LoRA matrices, one step each
    assert acc["frozen_params"] == n_base and acc["frozen_param_bytes"] == n_base * F32
    assert acc["activation_bytes"] > 0
    assert acc["total_bytes"] == sum(acc[k] for k in ACCOUNT_COMPONENTS)
    # deterministic: the same step gives the same bytes
    assert memory_account(model, batch) == acc


def test_errors():
    frozen = _mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        memory_account(frozen, X, loss_fn=_sum_loss)
    with pytest.raises(ValueError, match="optimizer"):
        memory_account(_mlp(), X, optimizer="adam", loss_fn=_sum_loss)
    with pytest.raises(TypeError, match="dict"):
        memory_account(_mlp(), X)
