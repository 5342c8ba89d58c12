"""The qaa cache folder (converted base models, the optional BIG-bench task files)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]

_ENV_CACHE = "QAA_CACHE_DIR"


def cache_dir() -> Path:
    """Root folder of the qaa cache: ``$QAA_CACHE_DIR`` if set and non-empty, else ``~/.cache/qaa``.

    The folder is not created here; the functions that write into it create what they need.
    """
    env = os.environ.get(_ENV_CACHE, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qaa"
