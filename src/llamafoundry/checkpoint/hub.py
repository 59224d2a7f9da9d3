"""Hugging Face hub ids (`org/name`) as model sources: the local cache first, then the hub.

A name that is no local path but has a hub id's shape resolves to the snapshot folder that
`huggingface_hub` keeps in its cache (`HF_HOME` / `HF_HUB_CACHE`), downloaded there first when it is not
cached yet and the hub can be reached. Only what a model folder needs is fetched: configs, tokenizer
files and one kind of weights (safetensors when the repo has them, never both them and the .bin copies).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llamafoundry.errors import UserError

# Hub repo ids: a namespace and a name of letters, digits, "-", "_" and "." (not starting with "." or "-").
_REPO_ID = re.compile(r"[A-Za-z0-9_][\w.-]{0,95}/[A-Za-z0-9_][\w.-]{0,95}")
_SMALL_FILES = ("*.json", "*.jinja", "tokenizer.model")
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "consolidated.*.pth")


def is_hub_id(name: str | os.PathLike) -> bool:
    """Whether `name` could only mean a hub repo: `org/name` in the hub's spelling, and no local path."""
    name = str(name)
    return _REPO_ID.fullmatch(name) is not None and ".." not in name and not Path(name).exists()


def resolve(name: str | os.PathLike) -> Path:
    """The local folder of `name`: the path itself, or for a hub id (`org/name`) its cached snapshot,
    downloaded first if it is not in the cache. A hub id that is neither cached nor reachable is a
    UserError naming it."""
    if not is_hub_id(name):
        return Path(name)
    return _snapshot(str(name))


def _snapshot(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise UserError(
            f"{repo_id} is not a local path, and hub ids need huggingface_hub: pip install huggingface_hub"
        ) from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        pass  # not cached: ask the hub
    except ValueError:  # huggingface_hub's own check of the id's spelling
        raise UserError(f"{repo_id} is neither a local path nor a valid hub id") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_wanted_files(repo_id)))
    except RepositoryNotFoundError:
        raise UserError(
            f"{repo_id} is neither a local path nor a hub model we can access (a gated model needs "
            "`hf auth login`)"
        ) from None
    except UserError:
        raise
    except Exception as exc:  # no network: huggingface_hub's, httpx's and the OS's errors alike
        raise UserError(
            f"{repo_id} is not a local path, not in the Hugging Face cache, and the hub could not be reached "
            f"({type(exc).__name__}); download it where the hub is reachable (`hf download {repo_id}`) "
            "or give a local folder"
        ) from None


def _wanted_files(repo_id: str) -> list[str]:
    """The repo's top-level files a model folder needs: small files, and the first kind of weights found."""
    from fnmatch import fnmatch

    from huggingface_hub import HfApi

    # model_info, not list_repo_files: one request, where the file listing retries for half a minute offline.
    siblings = HfApi().model_info(repo_id).siblings or []
    files = [s.rfilename for s in siblings if "/" not in s.rfilename]
    wanted = [f for f in files if any(fnmatch(f, p) for p in _SMALL_FILES)]
    for pattern in _WEIGHTS:
        weights = [f for f in files if fnmatch(f, pattern)]
        if weights:
            return wanted + weights
    raise UserError(f"{repo_id} holds no weights we can read (safetensors, pytorch_model.bin or Meta's .pth)")
