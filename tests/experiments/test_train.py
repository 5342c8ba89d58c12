"""The training loop's pieces (qaa.experiments.train): right-padded batches with masked labels, the warm-up and
linear-decay schedule against a hand computation, and the optimizer sentence reports print."""
import pytest
import torch

from qaa.experiments.train import FINAL_LR_SHARE, TrainConfig, _lr_factor, collate, describe_optimizer


def test_collate_right_pads_and_masks_labels():
    batch = collate([([5, 6, 7], [-100, 6, 7]), ([8, 9], [-100, 9])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert batch["input_ids"].dtype == torch.long


def test_schedule_warms_up_then_decays_linearly_to_a_tenth():
    cfg = TrainConfig(steps=10, warmup_steps=2)
    # warm-up: (step + 1) / 2; then from 1 at step 2 down by 0.9 / 8 per step: step 9 is 1 - 0.9 * 7 / 8
    expected = [0.5, 1.0] + [1.0 - 0.9 * k / 8 for k in range(8)]
    assert [_lr_factor(s, cfg) for s in range(10)] == pytest.approx(expected)
    assert _lr_factor(10, cfg) == pytest.approx(FINAL_LR_SHARE)   # the end of the span: a tenth of the peak
    assert FINAL_LR_SHARE == 0.1


def test_optimizer_sentence():
    assert describe_optimizer(0.1) == "AdamW, 10% warm-up, linear decay to 10%, clipping 1.0"
    assert describe_optimizer(0.05, grad_clip=0.0) == "AdamW, 5% warm-up, linear decay to 10%, no clipping"
