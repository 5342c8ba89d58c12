"""LoRA and prefix tuning from peft, set up the same way for every run of the comparison.

Both methods come from ``peft`` (tested with peft 0.21.2 and transformers 5.24). Prefix tuning on models
with grouped-query attention (GQA, ``num_key_value_heads < num_attention_heads``, e.g. SmolLM2-135M: 9
heads, 3 KV heads, head_dim 64) needs two things:

1. The trainable prefix holds one key and one value per layer, per *KV head*: its width is
   ``num_key_value_heads * head_dim`` (192 for SmolLM2-135M), not ``hidden_size`` (576).
   :func:`attach_prefix` computes ``token_dim = num_key_value_heads * head_dim`` and
   ``num_attention_heads = num_key_value_heads`` from the model config, passes them to
   ``PrefixTuningConfig`` and checks that peft kept them (the installed peft applies the same rule itself,
   peft PR #1901).
2. Generation. transformers 5 renamed the generation cache argument from ``past_key_values`` to ``cache``;
   peft 0.21's ``PeftModelForCausalLM.prepare_inputs_for_generation`` still injects the prefix under
   ``past_key_values``, which ``generate`` then ignores in favour of its own empty ``cache`` (the prefix is
   silently dropped while the attention mask still counts it). :func:`attach_prefix` and
   :func:`load_peft_adapter` therefore install :func:`_prefix_prepare_inputs_for_generation` on the model,
   which puts the prefix into ``cache`` at the first step, prepends the prefix to a 2-D attention mask, and
   offsets ``position_ids`` by ``num_virtual_tokens``. The offset reproduces the training forward, where the
   model numbers the real tokens after the ``num_virtual_tokens`` cached prefix positions.
"""

from __future__ import annotations

import inspect
import os
import types
import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from peft import LoraConfig, PeftModel, PeftType, PrefixTuningConfig, TaskType, get_peft_model
from transformers import Cache, DynamicCache

from ..utils import find_targets, normalise_targets

__all__ = ["attach_lora", "attach_prefix", "prefix_kv_layout", "prefix_kv_from_tokens", "save_peft_adapter",
           "load_peft_adapter"]


@contextlib.contextmanager
def _peft_wraps():
    """Around peft's ``PeftModel`` construction only: peft 0.21.2's ``PeftModel.__init__`` reads
    ``model.is_gradient_checkpointing``, which transformers 5.25.0 deprecated with a FutureWarning ("use
    ``is_activation_checkpointing``") on every read; that one warning is silenced here, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def attach_lora(model: nn.Module, target_modules: str | Sequence[str] = ("q_proj", "v_proj"), r: int = 8,
                alpha: float = 16, dropout: float = 0.0) -> PeftModel:
    """Wrap ``model`` with peft LoRA (``TaskType.CAUSAL_LM``, ``bias="none"``); the base is frozen.

    Defaults: ``q_proj``/``v_proj``, ``r=8``, ``alpha=16`` (LoRA paper, Hu et al. 2021, sec. 7; SoRA's
    reference settings use the same r and alpha, so LoRA and SoRA start from the same branch). peft
    initialises ``A`` Kaiming-uniform and ``B = 0`` (adapted model equals the base at step 0) and scales the
    branch by ``alpha / r``.

    Args:
        model: a causal LM (modified in place by peft, which injects the LoRA layers).
        target_modules: peft's rule: names matched against the end of qualified module names, or one regex.
        r: LoRA rank (>= 1).
        alpha: LoRA alpha (> 0).
        dropout: dropout on the LoRA branch input, in ``[0, 1)``.

    Returns:
        the ``PeftModel``.

    Raises:
        ValueError: bad ``r``/``alpha``/``dropout``, or ``target_modules`` matches nothing (the message lists
            the candidate linear layer names).
    """
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r must be a positive int, got {r!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    targets = normalise_targets(target_modules)
    find_targets(model, targets)  # clear error with candidates before peft's own
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=targets if isinstance(targets, str) else list(targets), bias="none")
    with _peft_wraps():
        return get_peft_model(model, config)


def prefix_kv_layout(model_config: Any) -> dict[str, int]:
    """The shape of a prefix for ``model_config`` (a transformers ``PretrainedConfig``).

    Returns:
        ``{"num_layers", "num_kv_heads", "head_dim", "token_dim"}`` with ``token_dim = num_kv_heads *
        head_dim``: the per-layer width of the prefix keys and values. ``head_dim`` is ``config.head_dim``
        when set, else ``hidden_size // num_attention_heads``; ``num_kv_heads`` is
        ``num_key_value_heads`` when set, else ``num_attention_heads`` (no GQA).

    Raises:
        ValueError: the config lacks the layer count, hidden size or head count.
    """
    cfg = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config

    def first(*names: str) -> int | None:
        for n in names:
            v = getattr(cfg, n, None)
            if v is not None:
                return int(v)
        return None

    num_layers = first("num_hidden_layers", "n_layer", "num_layers")
    hidden = first("hidden_size", "n_embd", "d_model")
    heads = first("num_attention_heads", "n_head", "num_heads")
    if num_layers is None or hidden is None or heads is None:
        raise ValueError(f"cannot read layers / hidden size / heads from {type(cfg).__name__}")
    kv_heads = first("num_key_value_heads") or heads
    head_dim = first("head_dim") or hidden // heads
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    return {"num_layers": num_layers, "num_kv_heads": kv_heads, "head_dim": head_dim, "token_dim": kv_heads * head_dim}


def prefix_kv_from_tokens(model: nn.Module, token_ids: Sequence[int]) -> torch.Tensor:
    """The base model's own keys and values for ``token_ids``, in the layout of peft's prefix embedding.

    Runs ``model`` (a decoder-only causal LM without a prefix) once on ``token_ids`` (one sequence, positions
    ``0 .. len-1``) under ``torch.no_grad`` in eval mode (training flags restored) and reads its KV cache: per
    layer ``l`` keys and values of shape ``(1, num_kv_heads, len, head_dim)`` (keys after the rotary position
    embedding, as cached). peft's prefix embedding (``prompt_encoder[adapter].embedding.weight``, shape
    ``(num_virtual_tokens, num_layers * 2 * token_dim)``) is read by ``PeftModel.get_prompt`` as
    ``view(batch, n_virtual, num_layers * 2, num_kv_heads, head_dim).permute(2, 0, 3, 1, 4).split(2)``: row
    ``t`` viewed as ``(num_layers, 2, num_kv_heads, head_dim)`` holds at ``[l, 0]`` the key and at ``[l, 1]``
    the value of virtual token ``t`` in layer ``l``. This function returns exactly those rows.

    Returns:
        a float tensor of shape ``(len(token_ids), num_layers * 2 * token_dim)`` in the model's dtype.

    Raises:
        ValueError: an empty ``token_ids``, an id outside ``[0, vocab_size)``, or a cache of an unexpected shape.
    """
    ids = [int(t) for t in token_ids]
    if not ids:
        raise ValueError("token_ids must not be empty")
    vocab = getattr(model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config,
                    "vocab_size", None)
    bad = [t for t in ids if t < 0 or (vocab is not None and t >= vocab)]
    if bad:
        raise ValueError(f"token ids outside [0, {vocab}): {bad[:5]}")
    layout = prefix_kv_layout(model.config)
    device = next(model.parameters()).device
    training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
    finally:
        for m, flag in training.items():
            m.train(flag)
    cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
    if cache is None or not hasattr(cache, "layers") or len(cache.layers) != layout["num_layers"]:
        raise ValueError("the model returned no per-layer KV cache of the expected depth")
    expect = (1, layout["num_kv_heads"], len(ids), layout["head_dim"])
    rows = []
    for layer in cache.layers:
        k, v = layer.keys, layer.values
        if tuple(k.shape) != expect or tuple(v.shape) != expect:
            raise ValueError(f"cached keys/values of shape {tuple(k.shape)}/{tuple(v.shape)}, expected {expect}")
        # (1, heads, n, head_dim) -> (n, 2, heads, head_dim): key and value per token
        rows.append(torch.stack([k[0], v[0]], dim=0).permute(2, 0, 1, 3))
    # (n, layers, 2, heads, head_dim) flattened per token, the order get_prompt's view expects
    return torch.stack(rows, dim=1).reshape(len(ids), -1)


def attach_prefix(model: nn.Module, num_virtual_tokens: int = 16,
                  init_token_ids: Sequence[int] | None = None) -> PeftModel:
    """Wrap ``model`` with peft prefix tuning (``TaskType.CAUSAL_LM``, no reparameterisation MLP).

    The prefix is sized for the model's KV heads (see the module docstring): ``token_dim =
    num_key_value_heads * head_dim`` and ``num_attention_heads = num_key_value_heads``, so each layer's
    cached prefix keys and values have shape ``(batch, num_kv_heads, num_virtual_tokens, head_dim)``. The
    returned model supports both the training forward and ``generate`` (greedy or sampled, with the dynamic
    KV cache). Trainable parameters: ``num_virtual_tokens * num_layers * 2 * token_dim``. Default 16 virtual
    tokens (the project's default; the prefix length is a knob of the comparison config).

    The prefix starts as peft's ``N(0, 1)`` draw, or, with ``init_token_ids``, as the base model's own keys
    and values for those tokens (Li & Liang 2021, initialisation with the activations of real words; see
    :func:`prefix_kv_from_tokens`): then at step 0 the prefixed model on a text equals the base model on
    ``init_token_ids[:num_virtual_tokens]`` followed by that text (the real tokens are numbered after the
    prefix positions in training and in generation alike).

    Args:
        model: a decoder-only causal LM.
        num_virtual_tokens: prefix length (>= 1).
        init_token_ids: optional token ids, at least ``num_virtual_tokens`` of them (the first
            ``num_virtual_tokens`` are used), e.g. a tokenised task instruction.

    Returns:
        the ``PeftModel``.

    Raises:
        ValueError: ``num_virtual_tokens < 1``, fewer than ``num_virtual_tokens`` init tokens or an id outside
            the vocabulary, an unreadable config, or peft built a prefix of another shape.
    """
    if isinstance(num_virtual_tokens, bool) or not isinstance(num_virtual_tokens, int) or num_virtual_tokens < 1:
        raise ValueError(f"num_virtual_tokens must be a positive int, got {num_virtual_tokens!r}")
    init_rows = None
    if init_token_ids is not None:
        ids = list(init_token_ids)
        if len(ids) < num_virtual_tokens:
            raise ValueError(f"init_token_ids holds {len(ids)} ids, fewer than num_virtual_tokens="
                             f"{num_virtual_tokens}")
        init_rows = prefix_kv_from_tokens(model, ids[:num_virtual_tokens])  # before peft wraps the model
    layout = prefix_kv_layout(model.config)
    config = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=num_virtual_tokens,
                                num_layers=layout["num_layers"], token_dim=layout["token_dim"],
                                num_attention_heads=layout["num_kv_heads"], prefix_projection=False)
    with _peft_wraps():
        peft_model = get_peft_model(model, config)
    got = peft_model.active_peft_config
    if (got.token_dim, got.num_attention_heads, got.num_layers) != (
            layout["token_dim"], layout["num_kv_heads"], layout["num_layers"]):
        raise ValueError(f"peft built a prefix with token_dim={got.token_dim}, heads={got.num_attention_heads}, "
                         f"layers={got.num_layers}; the model needs {layout}")
    if init_rows is not None:
        weight = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
        if tuple(weight.shape) != tuple(init_rows.shape):
            raise ValueError(f"peft's prefix embedding has shape {tuple(weight.shape)}, the init activations "
                             f"{tuple(init_rows.shape)}")
        with torch.no_grad():
            weight.copy_(init_rows.to(device=weight.device, dtype=weight.dtype))
    _install_prefix_generation(peft_model)
    return peft_model


def _forward_takes_cache(model: nn.Module) -> bool:
    try:
        return "cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signature
        return False


def _install_prefix_generation(peft_model: PeftModel) -> None:
    """Install :func:`_prefix_prepare_inputs_for_generation` on a prefix-tuning ``peft_model`` whose base
    model takes the cache as ``cache`` (transformers 5). peft's ``generate`` calls
    ``self.prepare_inputs_for_generation``, so an instance attribute takes precedence over peft's method."""
    if not _forward_takes_cache(peft_model.get_base_model()):
        return  # older transformers: peft's own path uses `past_key_values` and works
    peft_model.prepare_inputs_for_generation = types.MethodType(_prefix_prepare_inputs_for_generation, peft_model)


def _prefix_prepare_inputs_for_generation(self: PeftModel, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Generation inputs for a prefix-tuned causal LM on transformers 5 (see the module docstring).

    Starts from the base model's own ``prepare_inputs_for_generation`` and then:
    - at the first step (no cache or an empty cache), and at every step when ``use_cache=False`` (the full
      sequence is re-run), sets ``cache`` to a fresh ``DynamicCache`` holding the prefix;
    - prepends ``num_virtual_tokens`` ones to a 2-D attention mask;
    - adds ``num_virtual_tokens`` to ``position_ids``.

    Raises:
        ValueError: a cache other than ``DynamicCache`` (e.g. a static cache) or a non-2-D attention mask.
    """
    peft_config = self.active_peft_config
    n_virtual = peft_config.num_virtual_tokens
    inputs = self.base_model_prepare_inputs_for_generation(*args, **kwargs)
    ref = inputs.get("input_ids")
    if ref is None:
        ref = inputs["inputs_embeds"]
    batch_size = ref.shape[0]

    cache = inputs.get("cache")
    if cache is not None and not isinstance(cache, DynamicCache):
        raise ValueError(f"prefix tuning generation supports the dynamic KV cache only, got {type(cache).__name__}")
    if cache is None or cache.get_seq_length() == 0 or not inputs.get("use_cache", True):
        prompt = self.get_prompt(batch_size=batch_size)
        if not isinstance(prompt, Cache):  # pragma: no cover - peft returns a DynamicCache for decoder LMs
            raise ValueError(f"peft returned a {type(prompt).__name__} prefix, expected a transformers Cache")
        inputs["cache"] = prompt
    inputs.pop("past_key_values", None)

    mask = inputs.get("attention_mask")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            raise ValueError("prefix tuning generation needs a 2-D attention mask (or none)")
        inputs["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], n_virtual), mask], dim=1)
    if inputs.get("position_ids") is not None:
        inputs["position_ids"] = inputs["position_ids"] + n_virtual
    return inputs


def save_peft_adapter(model: PeftModel, out_dir: str | os.PathLike) -> Path:
    """Save a peft adapter (LoRA or prefix) with ``save_pretrained`` as ``adapter_config.json`` +
    ``adapter_model.safetensors``.

    Raises:
        TypeError: ``model`` is not a ``PeftModel``.
    """
    if not isinstance(model, PeftModel):
        raise TypeError(f"expected a peft PeftModel, got {type(model).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def load_peft_adapter(base_model: nn.Module, adapter_dir: str | os.PathLike, is_trainable: bool = False) -> PeftModel:
    """Load a peft adapter saved by :func:`save_peft_adapter` onto ``base_model``.

    Prefix-tuning adapters get the same generation support as :func:`attach_prefix`.

    Raises:
        FileNotFoundError: ``adapter_dir`` has no ``adapter_config.json``.
    """
    d = Path(adapter_dir)
    if not (d / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no peft adapter_config.json in {d}")
    with _peft_wraps():
        model = PeftModel.from_pretrained(base_model, str(d), is_trainable=is_trainable)
    if model.active_peft_config.peft_type == PeftType.PREFIX_TUNING:
        _install_prefix_generation(model)
    return model
