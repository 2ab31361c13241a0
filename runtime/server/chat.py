"""Chat templates: Hugging Face's Jinja dialect, rendered in a sandbox with a time and size budget.

The sandbox stops attribute access; the budget stops work: a template that runs longer than
`time_limit` seconds, repeats a string or list past `max_chars`, or writes more than `max_chars`
characters is refused with a ChatTemplateError (HTTP 400). Render from a worker thread: the
deadline is checked on every line the template executes (a trace function local to that thread).
"""

import json
import sys
import time
from datetime import datetime

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmc.errors import UserError

DEFAULT_TIME_LIMIT = 2.0  # seconds
DEFAULT_MAX_CHARS = 4 << 20


class ChatTemplateError(UserError):
    """The messages do not fit the template (it called raise_exception, failed, or ran over its budget)."""


class _OverBudget(Exception):
    pass


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, max_chars: int, **kwargs):
        super().__init__(**kwargs)
        self.max_chars = max_chars

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > self.max_chars:
                    raise SecurityError(f"the template repeats a sequence to over {self.max_chars} items")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise SecurityError("the template raises a number to a power over 64")
        return super().call_binop(context, operator, left, right)


class ChatTemplate:
    def __init__(self, source: str, bos_token: str | None = None, eos_token: str | None = None,
                 time_limit: float = DEFAULT_TIME_LIMIT, max_chars: int = DEFAULT_MAX_CHARS):
        env = _Environment(max_chars, trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise UserError(f"chat template line {e.lineno}: {e.message}") from None
        self._special_tokens = {"bos_token": bos_token or "", "eos_token": eos_token or ""}
        self.time_limit, self.max_chars = time_limit, max_chars

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
        """`tools` (OpenAI's function tools) reach the template as `tools`, None when there are none, as in
        transformers."""
        deadline = time.monotonic() + self.time_limit
        pieces, size = [], 0
        previous = sys.gettrace()
        sys.settrace(_tracer(deadline))
        try:
            for piece in self._template.generate(messages=messages, add_generation_prompt=add_generation_prompt,
                                                 tools=tools or None, **self._special_tokens):
                size += len(piece)
                if size > self.max_chars:
                    raise ChatTemplateError(f"chat template wrote over {self.max_chars} characters; shorten the messages")
                pieces.append(piece)
        except ChatTemplateError:
            raise
        except _OverBudget:
            raise ChatTemplateError(f"chat template ran over its {self.time_limit:g} s budget; "
                                    "shorten the messages") from None
        except (jinja2.TemplateError, SecurityError) as e:
            raise ChatTemplateError(f"chat template failed: {e}") from None
        except (TypeError, ValueError, LookupError, ArithmeticError, AttributeError, RecursionError,
                MemoryError) as e:  # a template error that the messages triggered
            raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from None
        finally:
            sys.settrace(previous)
        return "".join(pieces)


def _tracer(deadline: float):
    def line(frame, event, arg):
        if time.monotonic() > deadline:
            raise _OverBudget
        return line

    def call(frame, event, arg):  # trace lines of the template's own code only
        return line if frame.f_code.co_filename == "<template>" else None

    return call


def _raise_exception(message: str):
    raise ChatTemplateError(message)


def _tojson(value, indent=None, ensure_ascii=False, sort_keys=False):
    # As transformers: plain JSON, not Jinja's HTML-escaped variant.
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)
