"""The comparison's methods, one registered entry each.

An entry says everything the comparison needs to run a method: how to attach it to a fresh base model, the
training hooks it adds (SoRA's proximal step), what it does after training (SoRA's pruning), how to save it and
load it back, its default peak learning rate (with the source of the value) and its plot colour. Adding a method
is one :func:`register` call; :mod:`.compare` and :mod:`.report` read nothing else.

The built-in entries adapt the same layers (:data:`TARGET_MODULES`) where the method has target modules.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from torch import nn

from ..tuners.qaa.config import DEFAULT_N_LAYERS

__all__ = ["Method", "TrainHooks", "register", "unregister", "get", "names", "default_names", "colour", "label", "linestyle",
           "RunContext",
           "BASE", "BASE_COLOUR", "TARGET_MODULES", "QAA_N_LAYERS", "LORA_R", "LORA_ALPHA", "PREFIX_TOKENS",
           "SORA_XI", "SORA_XI_FACTORS", "ATTENTION_MODULES", "ALL_LINEAR_MODULES", "SIZE_SWEEP", "REFERENCE",
           "CONTROLS", "is_configuration_of", "MEMORY_REFERENCE", "SECONDARY_COMPARISONS"]

#: Name of the untuned base model's reference row (not a method: nothing is attached or trained).
BASE = "base"
BASE_COLOUR = "#7f7f7f"

#: Fixed method settings (the same for every preset): adapted layers and sizes.
TARGET_MODULES: Tuple[str, ...] = ("q_proj", "v_proj")
#: The larger target sets of the size sweep: every attention projection, and every linear layer of attention
#: and MLP (Llama / SmolLM2 names).
ATTENTION_MODULES: Tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEAR_MODULES: Tuple[str, ...] = ATTENTION_MODULES + ("gate_proj", "up_proj", "down_proj")
QAA_N_LAYERS = DEFAULT_N_LAYERS  # QAAConfig's default
LORA_R, LORA_ALPHA = 8, 16  # LoRA paper sec. 7 / SoRA reference settings (r_max=8, alpha=16)
PREFIX_TOKENS = 16          # attach_prefix default
SORA_XI = 3e-4              # SoRA release (sparse_lambda_2)
#: Factors on SORA_XI swept on validation at SoRA's chosen rate. The gates start Normal(0, 1) (median |g| 0.67),
#: so the release's per-step threshold prunes nothing in a short budget (32 steps move a gate by at most 0.01);
#: a factor of ~100 (0.03 per step) can zero a median gate within 32 steps, 300 zeroes most of them.
SORA_XI_FACTORS = (10.0, 30.0, 100.0, 300.0)


@dataclasses.dataclass
class RunContext:
    """What a method's ``attach`` may use besides the fresh base model: the settings, the run's training seed
    (initialisation), the tokenizer, the encoded training pairs and the pad id (e.g. to calibrate an input
    transform on the first training batches)."""

    settings: Any
    seed: int
    tokenizer: Any = None
    train_pairs: Any = ()
    pad_id: int = 0
    batch_size: int = 4
    ratio: float = 1.0  # the run's second swept value: the angle-rate ratio, or SoRA's threshold factor

    def first_batches(self, n: int = 4) -> list:
        """The first ``n`` training batches in the run's data order (as :func:`.train.train` draws them)."""
        import random

        from .train import collate

        order = list(range(len(self.train_pairs)))
        random.Random(self.seed).shuffle(order)
        picks = list(reversed(order))[: n * self.batch_size]  # train() pops from the end of the shuffled order
        return [collate([self.train_pairs[i] for i in picks[k: k + self.batch_size]], self.pad_id)
                for k in range(0, len(picks), self.batch_size)]


@dataclasses.dataclass
class TrainHooks:
    """Per-run additions to the training loop: ``after_step(step)`` runs after every optimizer step,
    ``extra_loss()`` returns a term added to the loss."""

    after_step: Optional[Callable[[int], None]] = None
    extra_loss: Optional[Callable[[], Any]] = None


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the comparison.

    Attributes:
        name: the method's key (``--methods``, ``--lr NAME=...``, results). label: its name in reports.
        attach: ``(fresh_base_model, ctx: RunContext) -> model to train`` (may wrap, e.g. a peft model).
        save: ``(trained_model, folder) -> None``: writes what is needed to rebuild the trained model.
        reload: ``(fresh_base_model, folder) -> model``: the saved method loaded back (frozen).
        lr: default peak AdamW learning rate (used without a sweep). lr_source: where that value comes from.
        lr_grid: the rates a validation sweep tries. theta: the method has trainable circuit angles (their
            rate ratio is swept too).
        colour: matplotlib colour in every plot. linestyle: loss-curve line style.
        default: run when neither ``--methods`` nor a preset names others.
        hooks: ``(model, ctx) -> TrainHooks`` for methods that change the training loop.
        finish: ``(model, ctx) -> dict`` after training, before saving (e.g. pruning); the dict is merged
            into the run's record.
        ratio_grid: for methods without angles, the values of a second hyperparameter swept at the chosen rate
            the way the angle-rate ratio is (runs record it as ``theta_lr_ratio``; 1 is always tried with the
            rate sweep). SoRA: factors on its proximal threshold ``xi``. ratio_label: its name in reports.
    """

    name: str
    attach: Callable[[nn.Module, Any], nn.Module]
    save: Callable[[nn.Module, Path], None]
    reload: Callable[[nn.Module, Path], nn.Module]
    lr: float
    lr_source: str
    colour: str
    label: str = ""
    lr_grid: Tuple[float, ...] = ()
    theta: bool = False
    linestyle: Any = "-"
    default: bool = True
    hooks: Optional[Callable[[nn.Module, Any], TrainHooks]] = None
    finish: Optional[Callable[[nn.Module, Any], dict]] = None
    ratio_grid: Tuple[float, ...] = ()
    ratio_label: str = "angle-rate ratio"


_REGISTRY: Dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` (table order is registration order). Raises ValueError if the name is taken or reserved."""
    if not isinstance(method, Method):
        raise TypeError(f"expected a Method, got {type(method).__name__}")
    if method.name == BASE or method.name in _REGISTRY:
        raise ValueError(f"method name {method.name!r} is already registered or reserved")
    if not method.name or "," in method.name or "=" in method.name or "/" in method.name:
        raise ValueError(f"method name must be non-empty without ',', '=' or '/', got {method.name!r}")
    if not method.label:
        method = dataclasses.replace(method, label=method.name)
    if not method.lr_grid:
        method = dataclasses.replace(method, lr_grid=(method.lr / 3, method.lr, method.lr * 3))
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a registered method (KeyError if unknown)."""
    del _REGISTRY[name]


def get(name: str) -> Method:
    """The registered method ``name``. Raises ValueError naming the known methods."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(_REGISTRY)}") from None


def names() -> Tuple[str, ...]:
    """Every registered method, in table order."""
    return tuple(_REGISTRY)


def default_names() -> Tuple[str, ...]:
    """The methods run by default."""
    return tuple(n for n, m in _REGISTRY.items() if m.default)


def colour(name: str) -> Optional[str]:
    """Plot colour of a method (or of the base row); None for an unknown name."""
    if name == BASE:
        return BASE_COLOUR
    m = _REGISTRY.get(name)
    return m.colour if m else None


def label(name: str) -> str:
    """Report name of a method (the name itself for the base row or an unknown name)."""
    m = _REGISTRY.get(name)
    return m.label if m else ("untuned base model" if name == BASE else name)


def linestyle(name: str) -> Any:
    m = _REGISTRY.get(name)
    return m.linestyle if m else "-"


# ------------------------------------------------------------------------------------- built-in methods
def _qaa(model, ctx, targets=TARGET_MODULES, **config):
    from ..tuners import qaa

    config.setdefault("n_layers", QAA_N_LAYERS)
    return qaa.attach(model, qaa.QAAConfig(target_modules=list(targets), seed=ctx.seed, **config))


def _attach_qaa_variant(**config):
    def attach(model, ctx):
        return _qaa(model, ctx, **config)

    return attach


def _attach_qaa(model, ctx):
    return _qaa(model, ctx)


def _attach_qaa_std(model, ctx, **config):
    from ..tuners import qaa

    model = _qaa(model, ctx, input_transform="standardize", **config)
    qaa.calibrate_input_transform(model, ctx.first_batches(4))
    return model


def _attach_qaa_std_l1(model, ctx):
    return _attach_qaa_std(model, ctx, n_layers=1)


def _freeze_angles(model):
    from ..tuners import qaa

    for _, layer in qaa.qaa_layers(model):
        for theta in layer.qaa_theta.values():
            theta.requires_grad_(False)
    return model


def _attach_qaa_frozen_theta(model, ctx):
    return _freeze_angles(_qaa(model, ctx))


def _attach_qaa_std_frozen_theta(model, ctx):
    return _freeze_angles(_attach_qaa_std(model, ctx))


def _attach_qaa_no_entangler(model, ctx):
    return _qaa(model, ctx, ansatz="ry_layers")


def _save_qaa(model, folder):
    from ..tuners import qaa

    qaa.save_adapter(model, str(folder))


def _reload_qaa(base, folder):
    from ..tuners import qaa

    return qaa.load_adapter(base, str(folder))


def _attach_control(kind):
    def attach(model, ctx):
        from ..tuners.baselines import attach_control

        return attach_control(model, kind, target_modules=TARGET_MODULES, seed=ctx.seed)

    return attach


def _save_control(model, folder):
    from ..tuners.baselines import save_control

    save_control(model, folder)


def _reload_control(base, folder):
    from ..tuners.baselines import load_control

    return load_control(base, folder)


def _attach_lora_r(r):
    def attach(model, ctx):
        from ..tuners.baselines import attach_lora

        return attach_lora(model, TARGET_MODULES, r=r, alpha=2 * r)

    return attach


def _attach_prefix_tokens(n_tokens):
    def attach(model, ctx):
        from ..tuners.baselines import attach_prefix

        # Real-token initialisation (Li & Liang 2021): the model's own keys and values of the first training
        # prompt's tokens, so the prefixed model starts close to the base model instead of from N(0, 1) noise.
        # A prompt shorter than the prefix falls back to peft's random initialisation.
        prompt = list(ctx.train_pairs[0][0]) if len(ctx.train_pairs) else []
        tokens = prompt[:n_tokens] if len(prompt) >= n_tokens else None
        return attach_prefix(model, num_virtual_tokens=n_tokens, init_token_ids=tokens)

    return attach


_attach_prefix = _attach_prefix_tokens(PREFIX_TOKENS)


def _save_peft(model, folder):
    from ..tuners.baselines import save_peft_adapter

    save_peft_adapter(model, folder)


def _reload_peft(base, folder):
    from ..tuners.baselines import load_peft_adapter

    return load_peft_adapter(base, folder)


def _sora_xi(ctx) -> float:
    """The run's proximal threshold: ``--sora-xi`` (the release's 3e-4 per step by default) times the swept
    factor (``ctx.ratio``)."""
    return ctx.settings.sora_xi * ctx.ratio


def _attach_sora(model, ctx):
    from ..tuners.sora import SoRAConfig, attach_sora

    return attach_sora(model, SoRAConfig(target_modules=TARGET_MODULES, r_max=LORA_R, alpha=LORA_ALPHA,
                                         xi=_sora_xi(ctx), gate_init="randn"))


def _sora_hooks(model, ctx) -> TrainHooks:
    from ..tuners.sora import l1_penalty, proximal_step

    xi, lam = _sora_xi(ctx), model.sora_config.lambda_l1
    return TrainHooks(after_step=lambda step: proximal_step(model, xi),
                      extra_loss=(lambda: lam * l1_penalty(model)) if lam else None)


def _sora_finish(model, ctx) -> dict:
    from ..tuners.sora import prune_sora, sora_rank_summary
    from ..tuners.utils import trainable_parameter_summary

    before = sora_rank_summary(model)
    prune_sora(model)
    after = sora_rank_summary(model)
    kept, _, kept_pct = trainable_parameter_summary(model)
    return {"sora": {"xi": _sora_xi(ctx), "xi_factor": ctx.ratio, "r_max": LORA_R, "lambda_l1": model.sora_config.lambda_l1,
                     "ranks_before_prune": {k: v["rank"] for k, v in before.items()},
                     "ranks": {k: v["rank"] for k, v in after.items()},
                     "total_rank": sum(v["rank"] for v in after.values()),
                     "total_rank_max": sum(v["r_max"] for v in after.values()),
                     "pruned_trainable_params": kept, "pruned_trainable_pct": kept_pct}}


def _save_sora(model, folder):
    from ..tuners.sora import save_sora

    save_sora(model, folder)


def _reload_sora(base, folder):
    from ..tuners.sora import load_sora

    return load_sora(base, folder)


def _attach_full(model, ctx):
    from ..tuners.baselines import prepare_full_finetune

    return prepare_full_finetune(model)


def _save_full(model, folder):
    from ..tuners.baselines import save_full

    save_full(model, folder)


def _reload_full(base, folder):
    from ..tuners.baselines import load_full

    return load_full(folder, dtype=next(base.parameters()).dtype)


_QAA_GRID = (1e-3, 3e-3, 1e-2)
_QAA_SOURCE = "the project's SmolLM2 runs: QAA trains stably at 3e-3 (qaa finetune default)"
register(Method("qaa", _attach_qaa, _save_qaa, _reload_qaa, lr=3e-3, colour="#d62728", label="QAA",
                lr_grid=_QAA_GRID, theta=True, lr_source=_QAA_SOURCE))
register(Method("qaa_std", _attach_qaa_std, _save_qaa, _reload_qaa, lr=3e-3, colour="#ff7f0e", default=False,
                label="QAA with standardised input", lr_grid=_QAA_GRID, theta=True, lr_source=_QAA_SOURCE))
register(Method("qaa_std_frozen_theta", _attach_qaa_std_frozen_theta, _save_qaa, _reload_qaa, lr=3e-3,
                colour="#ffbb78", default=False, label="QAA with standardised input and frozen angles (control)",
                lr_grid=_QAA_GRID, lr_source=_QAA_SOURCE, linestyle=(0, (1, 1))))
register(Method("qaa_frozen_theta", _attach_qaa_frozen_theta, _save_qaa, _reload_qaa, lr=3e-3, colour="#e377c2",
                default=False, label="QAA with frozen angles (control)", lr_grid=_QAA_GRID, lr_source=_QAA_SOURCE))
register(Method("qaa_no_entangler", _attach_qaa_no_entangler, _save_qaa, _reload_qaa, lr=3e-3, colour="#bcbd22",
                default=False, label="QAA without entangler (control)", lr_grid=_QAA_GRID, theta=True,
                lr_source=_QAA_SOURCE, linestyle=(0, (4, 2))))
register(Method("random_features", _attach_control("random_features"), _save_control, _reload_control, lr=3e-3,
                colour="#17becf", default=False, label="fixed random features (control)", lr_grid=_QAA_GRID,
                lr_source="as QAA: the same output map P on fixed features of the same width"))
register(Method("bias", _attach_control("bias"), _save_control, _reload_control, lr=1e-2, colour="#8c6d31",
                default=False, label="bias only (control)", lr_grid=(3e-3, 1e-2, 3e-2), linestyle=(0, (1, 1)),
                lr_source="a bias alone has no scale to protect: the top of the adapter range"))
register(Method("lora", _attach_lora_r(LORA_R), _save_peft, _reload_peft, lr=1e-3, colour="#1f77b4",
                label="LoRA r=8", lr_grid=(3e-4, 1e-3, 3e-3),
                lr_source="LoRA (Hu et al. 2021, Table 11) trains GPT-2 on E2E at 2e-4 for 5 epochs; 2e-4..1e-3 is "
                          "the usual range for peft LoRA on small decoders; short budgets take the high end"))
register(Method("lora_r4", _attach_lora_r(4), _save_peft, _reload_peft, lr=1e-3, colour="#aec7e8", default=False,
                label="LoRA r=4 (QAA's parameter count)", lr_grid=(3e-4, 1e-3, 3e-3),
                lr_source="as LoRA r=8"))
register(Method("prefix", _attach_prefix, _save_peft, _reload_peft, lr=1e-2, colour="#2ca02c",
                label="prefix tuning (16 tokens)", lr_grid=(3e-3, 1e-2, 3e-2),
                lr_source="prefix tuning without the reparameterisation MLP: peft's prefix-tuning examples use "
                          "1e-2..3e-2"))
register(Method("sora", _attach_sora, _save_sora, _reload_sora, lr=1e-3, colour="#9467bd", linestyle=(0, (4, 2)),
                hooks=_sora_hooks, finish=_sora_finish, label="SoRA r_max=8", lr_grid=(3e-4, 1e-3, 3e-3),
                lr_source="SoRA starts as a rank-8 LoRA with a gate; the SoRA release uses 8e-4..1.2e-3 on GLUE",
                ratio_grid=SORA_XI_FACTORS, ratio_label="threshold factor (xi / 3e-4)"))
register(Method("full", _attach_full, _save_full, _reload_full, lr=5e-5, colour="#8c564b", default=False,
                label="full fine-tuning", lr_grid=(2e-5, 5e-5, 2e-4),
                lr_source="full fine-tuning of a small causal LM: 5e-5 (transformers' Trainer / run_clm default)"))


# ------------------------------------------------------------------------------------- the size sweep
# Sizes of each family for the quality-per-parameter chart (not run by default; the presets' method lists do
# not name them). Rates: each variant's grid is its family's, centred where the family's default sits.
_QAA_RED = ("#67000d", "#a50f15", "#cb181d", "#ef3b2c", "#fb6a4a", "#fc9272", "#fcbba1")
for _i, (_name, _label, _config) in enumerate((
        ("qaa_l1", "QAA at L=1", {"n_layers": 1}),
        ("qaa_qkvo", "QAA on q/k/v/o", {"targets": ATTENTION_MODULES}),
        ("qaa_qkvo_l1", "QAA on q/k/v/o at L=1", {"targets": ATTENTION_MODULES, "n_layers": 1}),
        ("qaa_all", "QAA on every linear layer", {"targets": ALL_LINEAR_MODULES}),
        ("qaa_all_l1", "QAA on every linear layer at L=1", {"targets": ALL_LINEAR_MODULES, "n_layers": 1}),
        ("qaa_probs", "QAA with probs readout", {"readout": "probs"}),
        ("qaa_rescale", "QAA with branch rescaled by the input norm", {"rescale_by_norm": True}))):
    register(Method(_name, _attach_qaa_variant(**_config), _save_qaa, _reload_qaa, lr=3e-3, colour=_QAA_RED[_i],
                    default=False, label=_label, lr_grid=_QAA_GRID, theta=True, lr_source=_QAA_SOURCE,
                    linestyle=(0, (2, 1))))
register(Method("qaa_std_l1", _attach_qaa_std_l1, _save_qaa, _reload_qaa, lr=3e-3, colour="#fdae6b",
                default=False, label="QAA with standardised input at L=1", lr_grid=_QAA_GRID, theta=True,
                lr_source=_QAA_SOURCE, linestyle=(0, (2, 1))))
for _r, _colour in ((1, "#deebf7"), (2, "#c6dbef"), (16, "#08519c")):
    register(Method(f"lora_r{_r}", _attach_lora_r(_r), _save_peft, _reload_peft, lr=1e-3, colour=_colour,
                    default=False, label=f"LoRA r={_r}", lr_grid=(3e-4, 1e-3, 3e-3), lr_source="as LoRA r=8"))
for _t, _colour in ((4, "#c7e9c0"), (8, "#74c476"), (32, "#00441b")):
    register(Method(f"prefix_t{_t}", _attach_prefix_tokens(_t), _save_peft, _reload_peft, lr=1e-2,
                    colour=_colour, default=False, label=f"prefix tuning ({_t} tokens)", lr_grid=(3e-3, 1e-2, 3e-2),
                    lr_source="as prefix tuning (16 tokens)"))

#: The size sweep's methods, family by family (the family's registered default sizes included): the methods of
#: ``qaa compare --preset cpu --tasks e2e --methods ...`` for the quality-per-parameter chart.
SIZE_SWEEP: Tuple[str, ...] = (
    "qaa", "qaa_l1", "qaa_qkvo", "qaa_qkvo_l1", "qaa_all", "qaa_all_l1", "qaa_probs", "qaa_rescale", "qaa_std",
    "qaa_std_l1", "lora_r1", "lora_r2", "lora_r4", "lora", "lora_r16", "prefix_t4", "prefix_t8", "prefix",
    "prefix_t32", "bias")


# ------------------------------------------------------------------------------------- the study design
# What the report compares, declared beside the methods so a new study changes this block, not the report.
#: The method every other is compared with (the main table's differences, convergence, claims).
REFERENCE = "qaa"
#: The controls: methods that remove or replace a part of QAA (its trained angles, its entangler, its circuit) or
#: train a minimal baseline, to show which part does the work. A control whose name starts with ``qaa`` is not a
#: configuration of QAA: it never counts as one on a quality-per-parameter front.
CONTROLS: Tuple[str, ...] = ("qaa_frozen_theta", "qaa_std_frozen_theta", "qaa_no_entangler", "random_features",
                             "bias")


def is_configuration_of(method: str, reference: str = REFERENCE) -> bool:
    """Whether ``method`` is a configuration of ``reference``'s family (its name starts with the reference's,
    e.g. ``qaa_l1`` or ``qaa_std`` for ``qaa``) and not one of :data:`CONTROLS`."""
    return method.startswith(reference) and method not in CONTROLS


#: The method the reference's peak training memory is stated against in each task's report.
MEMORY_REFERENCE = "full"
#: Secondary comparisons (variant, other, the question it answers), outside the main table and in their own Holm
#: family: whether the circuit angles matter under the standardised input (its own frozen-angle control,
#: declared before its runs), and, post hoc (added after both had been scored), the standardised variant
#: against LoRA at both ranks. The main table compares plain QAA only.
SECONDARY_COMPARISONS: Tuple[Tuple[str, str, str], ...] = (
    ("qaa_std", "qaa_std_frozen_theta", "Do the angles matter for {a}? (declared before its control ran)"),
    ("qaa_std", "lora", "{a} against {b} (post hoc):"),
    ("qaa_std", "lora_r4", "{a} against {b} (post hoc):"),
)
