"""``qaa adapter``: look into and convert saved QAA adapters from the command line.

* ``qaa adapter info DIR``: the adapter's config, its modules and trainable-parameter count, with the folder's
  checksums verified (:func:`qaa.tuners.save_load.read_adapter_files`: the tensors against the digest in the
  weights file, the config file against its own digest).
* ``qaa adapter extract CHECKPOINT OUT [--adapter-name NAME]``: write one adapter of a checkpoint folder (a
  ``save_pretrained`` / ``QAATrainer`` checkpoint or an adapter folder) as a plain adapter folder
  (:func:`qaa.tuners.qaa.trainer.extract_adapter`).

Errors (a missing or corrupted folder, a name the checkpoint lacks, an output folder that is not empty) are
reported as ``qaa adapter: error: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os

__all__ = ["add_parser", "adapter_info", "run_adapter"]


def add_parser(sub) -> None:
    """Add the ``adapter`` sub-command (with ``info`` and ``extract``) to ``sub``."""
    p = sub.add_parser("adapter", help="inspect or extract saved QAA adapters",
                       description="Inspect a saved QAA adapter (checksums verified) or extract one adapter of a "
                                   "checkpoint as a plain adapter folder.")
    verbs = p.add_subparsers(dest="verb", required=True)
    info = verbs.add_parser("info", help="config, modules, trainable parameters; checksums verified")
    info.add_argument("directory", help="an adapter folder (adapter_config.json + adapter_model.safetensors)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    ext = verbs.add_parser("extract", help="write one adapter of a checkpoint as an adapter folder")
    ext.add_argument("checkpoint", help="a save_pretrained / QAATrainer checkpoint folder, or an adapter folder")
    ext.add_argument("out", help="the adapter folder to write (must not exist or be empty)")
    ext.add_argument("--adapter-name", default="default", help="which adapter (default: default)")


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
    from ..tuners.qaa.trainer import extract_adapter

    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
        raise ValueError(f"{args.out} exists and is not an empty folder; choose a new output folder")
    written = extract_adapter(args.checkpoint, args.out, adapter_name=args.adapter_name)
    print(f"adapter {args.adapter_name!r} of {args.checkpoint} written to {args.out} ({len(written)} modules)")
    return {"out": args.out, "modules": sorted(written)}
