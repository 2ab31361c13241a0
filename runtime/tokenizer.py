"""The bundle's tokenizer: `tokenizers` for text <-> ids, plus the chat template and special tokens."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from llmc.errors import UserError

MAX_TOKENIZER_BYTES = 512 << 20  # the largest tokenizer.json in use is a few tens of MB


def check_tokenizer_json(path: Path, label: str | None = None):
    """Load `path` (tokenizer.json) as a `tokenizers.Tokenizer`, or refuse it in one line; None if absent.

    Refused: a path that is not a regular file (a symlink to a device, a folder), one over
    MAX_TOKENIZER_BYTES, and anything `tokenizers` cannot read as a tokenizer.
    """
    label = label or path.name
    if not os.path.lexists(path):
        return None
    try:
        st = path.stat()
    except OSError as e:
        raise UserError(f"{label}: cannot be read ({e.strerror}); fix the file or remove it") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{label}: is not a regular file; it must be a Hugging Face tokenizer.json")
    if st.st_size > MAX_TOKENIZER_BYTES:
        raise UserError(f"{label}: is {st.st_size} bytes, over {MAX_TOKENIZER_BYTES}; it is not a tokenizer.json")
    from tokenizers import Tokenizer as HfTokenizer

    try:
        return HfTokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exception for a file it cannot read
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(f"{label}: is not a tokenizer `tokenizers` can read ({detail}); fix or re-download it") from None


def _read_config(path: Path, label: str) -> dict:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{label}: is not valid JSON ({e}); fix or re-download it") from None
    if not isinstance(config, dict):
        raise UserError(f"{label}: must hold a JSON object")
    return config


class Tokenizer:
    def __init__(self, directory: Path):
        self._tok = check_tokenizer_json(directory / "tokenizer.json", "tokenizer/tokenizer.json")
        self.config: dict = {}
        if self._tok is not None:
            self.config = _read_config(directory / "tokenizer_config.json", "tokenizer/tokenizer_config.json")

    @property
    def available(self) -> bool:
        return self._tok is not None

    def encode(self, text: str) -> list[int]:
        if self._tok is None:
            raise UserError("this bundle has no tokenizer.json: pass prompts as lists of token ids")
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        if self._tok is None:
            return " ".join(map(str, ids))
        return self._tok.decode(ids, skip_special_tokens=True)

    def _special(self, key: str) -> str | None:
        value = self.config.get(key)
        if isinstance(value, dict):  # {"content": "<s>", ...}
            value = value.get("content")
        return value if isinstance(value, str) else None

    @property
    def chat_template(self) -> str | None:
        template = self.config.get("chat_template")
        return template if isinstance(template, str) else None

    @property
    def bos_token(self) -> str | None:
        return self._special("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self._special("eos_token")
