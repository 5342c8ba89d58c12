"""``qaa adapter``: look into and convert saved QAA adapters from the command line.

* ``qaa adapter info DIR``: the adapter's config, its modules and trainable-parameter count, with the folder's
  checksums verified (:func:`qaa.tuners.save_load.read_adapter_files`: the tensors against the digest in the
  weights file, the config file against its own digest).
* ``qaa adapter extract CHECKPOINT OUT [--adapter-name NAME]``: write one adapter of a checkpoint folder (a
  ``save_pretrained`` / ``QAATrainer`` checkpoint or an adapter folder) as a plain adapter folder
  (:func:`qaa.tuners.qaa.trainer.extract_adapter`).
* ``qaa adapter evaluate DIR --task T``: load the adapter onto its base model and score the task's test inputs
  as the comparison does (:func:`qaa.experiments.pipeline.evaluate_test`: per-input NLL and greedy generation,
  BLEU, ROUGE, chrF++, ..., SER or entity coverage), optionally under finite shots (``--shots``); writes a JSON
  file with every generation.
* ``qaa adapter export DIR OUT``: the adapter's trained circuits as OpenQASM 3 programs with a manifest
  (:func:`qaa.export_openqasm`), without the base model: the circuits need only the adapter's angles and
  settings, so the adapter is loaded onto a stand-in holding one ``nn.Linear`` of the recorded size per adapted
  module (its weights are never read).

Errors (a missing or corrupted folder, a name the checkpoint lacks, an output folder that is not empty) are
reported as ``qaa adapter: error: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os

__all__ = ["add_parser", "adapter_info", "run_adapter"]


def add_parser(sub) -> None:
    """Add the ``adapter`` sub-command (``info``, ``extract``, ``export``) to ``sub``."""
    p = sub.add_parser("adapter", help="inspect, extract or export saved QAA adapters",
                       description="Inspect a saved QAA adapter (checksums verified), extract one adapter of a "
                                   "checkpoint as a plain adapter folder, or export its circuits as OpenQASM 3.")
    verbs = p.add_subparsers(dest="verb", required=True)
    info = verbs.add_parser("info", help="config, modules, trainable parameters; checksums verified")
    info.add_argument("directory", help="an adapter folder (adapter_config.json + adapter_model.safetensors)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    ext = verbs.add_parser("extract", help="write one adapter of a checkpoint as an adapter folder")
    ext.add_argument("checkpoint", help="a save_pretrained / QAATrainer checkpoint folder, or an adapter folder")
    ext.add_argument("out", help="the adapter folder to write (must not exist or be empty)")
    ext.add_argument("--adapter-name", default="default", help="which adapter (default: default)")
    ev = verbs.add_parser("evaluate", help="score a saved adapter on a task's test inputs (per-input outputs kept)",
                          description="Load the adapter onto its base model and score the task's test inputs "
                                      "with the comparison's metrics; writes every generation to --out.")
    ev.add_argument("directory", help="an adapter folder")
    ev.add_argument("--task", required=True, help="a task of the registry (e2e, webnlg, webnlg_unseen, dart, ...)")
    ev.add_argument("--model", default=None, help="base model (default: the adapter's recorded base, else "
                                                  "smollm2-135m-instruct); a local folder or the default name")
    ev.add_argument("--split-seed", type=int, default=1,
                    help="split seed of tasks that split one pool (default 1: the cpu and gpu presets')")
    ev.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default 0.1, the presets')")
    ev.add_argument("--test-fraction", type=float, default=0.2, help="test share (default 0.2, the presets')")
    ev.add_argument("--eval-size", type=int, default=None, help="test inputs scored (default: all)")
    ev.add_argument("--shots", type=int, default=None,
                    help="estimate every QAA readout from this many shots (qaa.shots; default: exact)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the shot sampling (default 0)")
    ev.add_argument("--no-bertscore", action="store_true", help="skip BERTScore")
    ev.add_argument("--threads", type=int, default=0, help="torch and engine threads (0: library default)")
    ev.add_argument("--out", required=True, help="JSON file to write (must not exist)")
    exp = verbs.add_parser("export", help="the trained circuits as OpenQASM 3 programs with a manifest",
                           description="Write each adapted layer's trained circuit U(theta) and measurement as an "
                                       "OpenQASM 3 program, with manifest.json (wire order, embedding, readout). "
                                       "The base model is not needed. For programs that also prepare given token "
                                       "vectors, call qaa.export_openqasm(model, folder, inputs=...) in Python.")
    exp.add_argument("directory", help="an adapter folder (adapter_config.json + adapter_model.safetensors)")
    exp.add_argument("out", help="the export folder to write (must not exist or be empty)")


def adapter_info(directory: str) -> dict:
    """Summary of the QAA adapter folder ``directory``: ``{"config", "adapter_name", "modules", "tensors",
    "trainable_params", "tensors_sha256", "verified"}``.

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        ValueError: not a QAA adapter, or a corrupted / edited file (from the checksum checks).
    """
    from ..tuners.qaa.config import PEFT_TYPE
    from ..tuners.save_load import TENSORS_DIGEST_KEY, read_adapter_files

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such adapter folder")
    meta, tensors = read_adapter_files(directory, PEFT_TYPE)
    config = {k: v for k, v in meta.items() if k not in ("modules", TENSORS_DIGEST_KEY)}
    return {"config": config, "adapter_name": meta.get("adapter_name"), "modules": sorted(meta.get("modules", {})),
            "tensors": len(tensors), "trainable_params": int(sum(t.numel() for t in tensors.values())),
            "tensors_sha256": meta.get(TENSORS_DIGEST_KEY), "verified": True}


def adapter_skeleton(directory: str):
    """A stand-in model with adapter ``directory`` loaded: one ``nn.Linear(d_in, d_out)`` per recorded module,
    under its recorded name (weights left uninitialised: only the adapter's own tensors are meaningful).
    Returns ``(model, adapter_name)``. Raises what :func:`qaa.tuners.qaa.adapter_folder.read_qaa_adapter` raises."""
    import torch
    from torch import nn

    from ..tuners.qaa.adapter_folder import read_qaa_adapter
    from ..tuners.qaa.persistence import load_adapter

    _, modules, _, meta = read_qaa_adapter(directory, with_meta=True)
    root = nn.Module()
    for name, info in modules.items():
        parent = root
        parts = name.split(".")
        for part in parts[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        layer = nn.Linear(int(info["d_in"]), int(info["d_out"]), bias=False, device="cpu")
        with torch.no_grad():
            layer.weight.zero_()
        parent.add_module(parts[-1], layer)
    name = meta.get("adapter_name") if isinstance(meta.get("adapter_name"), str) else "default"
    return load_adapter(root, directory, adapter_name=name), name


def evaluate_adapter(directory: str, task: str, out: str, model_name=None, split_seed: int = 1,
                     val_fraction: float = 0.1, test_fraction: float = 0.2, eval_size=None, shots=None,
                     seed: int = 0, bertscore: bool = True, threads: int = 0, progress: bool = False) -> dict:
    """Score the adapter in ``directory`` on ``task``'s test inputs and write the record to ``out`` (JSON).

    The data and lengths are prepared as ``qaa compare`` prepares them (lengths fitted to the training split), so
    a comparison's adapter scored with its split settings reproduces its test record. Returns the record:
    ``{"adapter", "task", "base_model", "shots", "data", "metrics", "nll", "hypotheses", "scores", ...}``.

    Raises:
        FileExistsError: ``out`` exists (a result is never overwritten).
        ValueError / FileNotFoundError: a bad adapter folder, task or base model; a ``shots`` below 1.
    """
    from ..hardware import shots as shots_setting
    from ..tuners.qaa.adapter_folder import read_qaa_adapter
    from ..tuners.qaa.persistence import load_adapter
    from ..tuners.save_load import atomic_write_text
    from .base_model import DEFAULT_MODEL, load_base_model
    from .pipeline import evaluate_test, load_splits, prepare_task, set_threads

    if os.path.exists(out):
        raise FileExistsError(f"{out} exists; choose a new --out (results are never overwritten)")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise ValueError(f"--shots must be a positive integer, got {shots!r}")
    _, modules, _, meta = read_qaa_adapter(directory, with_meta=True)  # checked before anything heavy
    splits = load_splits(task, split_seed, val_fraction, test_fraction, eval_size=eval_size)
    set_threads(threads)
    recorded = meta.get("base_model_name_or_path")
    name = model_name or (recorded if recorded == DEFAULT_MODEL or (recorded and os.path.isdir(recorded))
                          else DEFAULT_MODEL)
    model, tokenizer = load_base_model(name, progress=progress)
    data = prepare_task(task, tokenizer, splits)
    load_adapter(model, directory, adapter_name=meta.get("adapter_name") or "default")
    pad = tokenizer.pad_token_id
    if shots is None:
        rec = evaluate_test(model, data, tokenizer, pad, progress=progress, bertscore=bertscore,
                            desc=f"eval {task}")
    else:
        with shots_setting(shots, seed=seed):
            rec = evaluate_test(model, data, tokenizer, pad, progress=progress, bertscore=bertscore,
                                desc=f"eval {task} ({shots} shots)")
    rec = {"adapter": os.path.abspath(directory), "tensors_sha256": meta.get("tensors_sha256"), "task": task,
           "base_model": str(name), "shots": shots, "shot_seed": seed if shots is not None else None,
           "data": {k: v for k, v in data.info.items() if k != "test_input_texts"},
           "inputs": [e.input for e in data.test_ex], "references": [list(e.references) for e in data.test_ex],
           **rec}
    atomic_write_text(out, json.dumps(rec, indent=1, default=str) + "\n")
    return rec


def run_adapter(args: argparse.Namespace) -> dict:
    """Run ``qaa adapter <verb>`` with the parsed ``args``; prints the result and returns it."""
    if args.verb == "info":
        info = adapter_info(args.directory)
        if getattr(args, "json", False):
            print(json.dumps(info, indent=2, sort_keys=True))
        else:
            cfg = info["config"]
            print(f"QAA adapter {args.directory} (checksums verified: tensors sha256 {info['tensors_sha256']})")
            print(f"  adapter name: {info['adapter_name']}; {len(info['modules'])} adapted modules; "
                  f"{info['trainable_params']:,} trainable parameters in {info['tensors']} tensors")
            for key in ("target_modules", "n_layers", "ansatz", "readout", "scaling", "rescale_by_norm",
                        "input_transform", "dtype", "format_version"):
                if key in cfg:
                    print(f"  {key}: {cfg[key]}")
            for name in info["modules"]:
                print(f"  module: {name}")
        return info
    if args.verb == "evaluate":
        rec = evaluate_adapter(args.directory, args.task, args.out, model_name=args.model,
                               split_seed=args.split_seed, val_fraction=args.val_fraction,
                               test_fraction=args.test_fraction, eval_size=args.eval_size, shots=args.shots,
                               seed=args.seed, bertscore=not args.no_bertscore, threads=args.threads)
        m = rec["metrics"]
        print(f"{args.task}: {len(rec['hypotheses'])} test inputs; test NLL {m['nll']:.4f} (mean over inputs), "
              f"BLEU {m['bleu']:.2f}, ROUGE-L {m['rougeL']:.2f}" + (f"; {args.shots} shots" if args.shots else "")
              + f"; written to {args.out}")
        return rec
    if args.verb == "export":
        from ..hardware.export import MANIFEST, export_openqasm

        model, name = adapter_skeleton(args.directory)
        folder = export_openqasm(model, args.out, adapter=name)
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            layers = json.load(f).get("layers", [])
        print(f"adapter {name!r} of {args.directory}: {len(layers)} OpenQASM 3 programs and {MANIFEST} written to "
              f"{folder}")
        return {"out": str(folder), "layers": len(layers)}
    from ..tuners.qaa.trainer import extract_adapter

    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
        raise ValueError(f"{args.out} exists and is not an empty folder; choose a new output folder")
    written = extract_adapter(args.checkpoint, args.out, adapter_name=args.adapter_name)
    print(f"adapter {args.adapter_name!r} of {args.checkpoint} written to {args.out} ({len(written)} modules)")
    return {"out": args.out, "modules": sorted(written)}
