"""A request's structured output and logit_bias, from OpenAI's and vLLM's fields, or a 400 naming the field.

OpenAI: `response_format` {"type": "text" | "json_object" | "json_schema", "json_schema": {"schema": ...}}.
vLLM: `guided_json` (a schema, or its JSON text), `guided_regex`, `guided_choice`, `guided_grammar` (Lark).
At most one of them; chat's `tool_choice` "required" or a named function is a constraint of its own.
"""

from __future__ import annotations

import json

from llmc.errors import UserError

from ..structured_output import Constraint
from .protocol import invalid

GUIDED = {"guided_json": "json_schema", "guided_regex": "regex", "guided_choice": "choice", "guided_grammar": "grammar"}


def structured_output(request, tool_constraint: Constraint | None = None) -> Constraint | None:
    asked = [(field, constraint) for field, constraint in _asked(request) if constraint is not None]
    if tool_constraint is not None:
        asked.append(("tool_choice", tool_constraint))
    if len(asked) > 1:
        raise invalid(asked[1][0], f"{asked[1][0]} and {asked[0][0]} both constrain the output; give one of them")
    if not asked:
        return None
    field, constraint = asked[0]
    try:
        from llguidance import LLMatcher

        error = LLMatcher.validate_grammar(constraint.grammar())  # without a tokenizer: the engine's comes at admission
    except ImportError:
        raise invalid(field, "structured output needs llguidance on the server: pip install llguidance") from None
    except (ValueError, UserError) as e:
        error = str(e) or type(e).__name__
    if error:
        raise invalid(field, f"{field}: {error.strip().splitlines()[0]}")
    return constraint


def _asked(request):
    yield "response_format", _response_format(request.response_format)
    for field, kind in GUIDED.items():
        value = getattr(request, field, None)
        if value is None:
            continue
        if field == "guided_json" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise invalid(field, "guided_json: must be a JSON schema (an object, or its JSON text)") from None
        try:
            yield field, Constraint(kind, value)
        except UserError as e:
            raise invalid(field, f"{field}: {e}") from None


def _response_format(value) -> Constraint | None:
    if value is None:
        return None
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint("json_object")
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema", {}) if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise invalid("response_format", "response_format.json_schema.schema: must be a JSON schema object")
        return Constraint("json_schema", schema)
    raise invalid("response_format", f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}")


def logit_bias(value: dict | None) -> dict[int, float]:
    """OpenAI's logit_bias (token ids as strings) with int keys."""
    try:
        return {int(token): bias for token, bias in (value or {}).items()}
    except ValueError:
        raise invalid("logit_bias", "logit_bias: keys must be token ids") from None
