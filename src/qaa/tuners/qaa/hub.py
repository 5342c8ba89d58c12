"""QAA adapters on the Hugging Face Hub: resolve a Hub id to a local folder (cache first, offline mode honoured)
and push an adapter folder.

:func:`resolve_adapter_location` is what :func:`qaa.load_adapter` calls on its ``load_directory``: an existing
local path is used as it is; anything else that has the form of a Hub repository id (``owner/name``, optionally
``owner/name@revision``) is fetched with ``huggingface_hub.snapshot_download``, restricted to adapter files
(``adapter_config.json``, ``adapter_model.safetensors``, ``README.md`` and the same under ``qaa_adapters/``).
``snapshot_download`` reads its cache first and honours ``HF_HUB_OFFLINE=1`` (then only the cache is used, and
a repository that is not cached raises). huggingface_hub comes with transformers; it is imported only here.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Optional

__all__ = ["resolve_adapter_location", "push_adapter_to_hub", "ADAPTER_PATTERNS"]

#: The files of an adapter folder (and of the adapters of a save_pretrained folder) fetched from the Hub.
ADAPTER_PATTERNS = ["adapter_config.json", "adapter_model.safetensors", "README.md",
                    "qaa_adapters/*/adapter_config.json", "qaa_adapters/*/adapter_model.safetensors",
                    "qaa_adapters/active.json"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(@[A-Za-z0-9_./-]{1,200})?$")


def resolve_adapter_location(location) -> str:
    """A local folder for ``location``: the path itself when it exists (or does not look like a Hub id), else
    the Hub repository ``owner/name[@revision]`` downloaded (adapter files only) into, or read from, the
    Hugging Face cache.

    Raises:
        FileNotFoundError: a Hub id that cannot be fetched (not cached in offline mode, no network, no such
            repository), with huggingface_hub's reason.
    """
    path = os.fspath(location)
    if os.path.exists(path) or not _HUB_ID.match(path) or path.startswith((".", "/")):
        return path
    repo_id, _, revision = path.partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
        raise FileNotFoundError(f"{path!r} is not a local folder, and loading Hub ids needs huggingface_hub "
                                "(pip install huggingface_hub)") from e
    try:
        return snapshot_download(repo_id, revision=revision or None, allow_patterns=ADAPTER_PATTERNS)
    except Exception as e:  # huggingface_hub raises several types (offline, not found, HTTP)
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        raise FileNotFoundError(
            f"{path!r} is neither a local folder nor a Hub adapter that could be fetched"
            + (" (HF_HUB_OFFLINE is set and it is not in the cache)" if offline else "")
            + f": {type(e).__name__}: {e}") from e


def push_adapter_to_hub(model, repo_id: str, adapter_name: str = "default", token: Optional[str] = None,
                        private: Optional[bool] = None, commit_message: Optional[str] = None,
                        revision: Optional[str] = None) -> str:
    """Save adapter ``adapter_name`` of ``model`` (:func:`qaa.save_adapter`: weights, config, model card) into a
    temporary folder and upload exactly that folder to the Hub repository ``repo_id`` (created if missing).
    Nothing of the base model is uploaded. Returns the commit URL.

    Raises: KeyError (no such adapter), ValueError (what :func:`qaa.save_adapter` raises, a malformed
    ``repo_id``), and huggingface_hub's errors (authentication, network).
    """
    from huggingface_hub import HfApi

    from .persistence import save_adapter

    if not isinstance(repo_id, str) or not _HUB_ID.match(repo_id) or "@" in repo_id:
        raise ValueError(f"repo_id must be 'owner/name', got {repo_id!r}")
    with tempfile.TemporaryDirectory(prefix="qaa-push-") as tmp:
        folder = os.path.join(tmp, "adapter")
        save_adapter(model, folder, adapter_name)
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                 commit_message=commit_message or f"QAA adapter {adapter_name!r}")
    return str(getattr(info, "commit_url", info))
