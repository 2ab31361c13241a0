"""The bundle's tokenizer: `tokenizers` for text <-> ids, plus the chat template and special tokens."""

from __future__ import annotations

import json
from pathlib import Path

from llmc.errors import UserError


class Tokenizer:
    def __init__(self, directory: Path):
        self._tok = None
        self.config: dict = {}
        if (directory / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as HfTokenizer

            self._tok = HfTokenizer.from_file(str(directory / "tokenizer.json"))
            config = directory / "tokenizer_config.json"
            if config.is_file():
                self.config = json.loads(config.read_text(encoding="utf-8"))

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
