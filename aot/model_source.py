"""Where `llmc build MODEL` finds its checkpoint: a local directory, or a Hugging Face id.

An id (`Qwen/Qwen3-0.6B`) goes through huggingface_hub: its local cache first (`HF_HOME`,
`HF_HUB_CACHE`), a download only when the machine is online and `HF_HUB_OFFLINE` is not set.
Only the files a build reads are fetched (configs, safetensors, tokenizer), never pickles or code.
"""

from __future__ import annotations

import re
from pathlib import Path

from llmc.errors import UserError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
BUILD_FILES = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def resolve_model_dir(model: str | Path, revision: str | None = None) -> Path:
    path = Path(model)
    if path.exists():
        if revision is not None:
            raise UserError(f"--revision {revision}: applies to a Hugging Face id, and {model} is a local path")
        return path
    name = str(model)
    if not REPO_ID.match(name):
        raise UserError(f"{name}: no such directory; give a Hugging Face model directory or an id such as Qwen/Qwen3-0.6B")
    return _snapshot(name, revision)


def _snapshot(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise UserError(f"{repo_id}: resolving a Hugging Face id needs huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=BUILD_FILES, local_files_only=True))
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise UserError(
                f"{repo_id}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; "
                f"download it where the network is reachable (hf download {repo_id}) or give a local directory"
            ) from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=BUILD_FILES))
    except RepositoryNotFoundError:
        raise UserError(f"{repo_id}: no such model on the Hugging Face Hub (or it is private: log in with hf auth login)") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{repo_id}: not cached and could not be downloaded ({first}); check the network or give a local directory") from None
