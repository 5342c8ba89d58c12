"""Worker of the DeepSpeed tests (run under torchrun with DS_ACCELERATOR=cpu): a tiny model with a QAA adapter,
ZeRO stage argv[1], precision argv[3] ("fp32" or "bf16"), two training steps, then
``qaa.save_adapter(engine, argv[2])``; rank 0 writes the whole trained adapter tensors (gathered by DeepSpeed
itself; under bf16 the optimizer's float32 master copies, ``deepspeed.utils.safe_get_full_fp32_param``) to
argv[2]/expected.pt for the test to compare."""
import os
import sys

import deepspeed
import torch
from torch import nn

import qaa

stage, out = int(sys.argv[1]), sys.argv[2]
bf16 = len(sys.argv) > 3 and sys.argv[3] == "bf16"
deepspeed.init_distributed(dist_backend="gloo")
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
qaa.attach(model, qaa.QAAConfig(target_modules=["0", "2"], n_layers=1, seed=0))
config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
          "optimizer": {"type": "Adam", "params": {"lr": 0.05, "torch_adam": True}},
          "zero_optimization": {"stage": stage}, "bf16": {"enabled": bf16}}
engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                  config=config)
g = torch.Generator().manual_seed(1 + int(os.environ["RANK"]))
for _ in range(2):
    x = torch.randn(2, 8, generator=g)
    loss = engine(x.bfloat16() if bf16 else x).float().pow(2).sum()
    engine.backward(loss)
    engine.step()
qaa.save_adapter(engine, out)
params = [p for p in model.parameters() if p.requires_grad]
if bf16:
    from deepspeed.utils import safe_get_full_fp32_param

    assert all(p.dtype == torch.bfloat16 for p in params)  # DeepSpeed keeps the model's copy in bf16
    expected = {f"{n}.{k}": safe_get_full_fp32_param(t).detach().clone().float().cpu()
                for n, layer in qaa.qaa_layers(model)
                for k, t in (("theta", layer.qaa_theta["default"]), ("out_proj.weight", layer.qaa_out["default"].weight))}
else:
    with deepspeed.zero.GatheredParameters(params, enabled=stage == 3):
        expected = {f"{n}.{k}": t.detach().clone().float() for n, layer in qaa.qaa_layers(model)
                    for k, t in (("theta", layer.qaa_theta["default"]),
                                 ("out_proj.weight", layer.qaa_out["default"].weight))}
if int(os.environ["RANK"]) == 0:
    torch.save(expected, os.path.join(out, "expected.pt"))
print("done", stage)
# Shut the gloo group down before exit: left to interpreter teardown, its threads could abort rank 0
# ("terminate called without an active exception") after the work was done.
torch.distributed.barrier()
torch.distributed.destroy_process_group()
