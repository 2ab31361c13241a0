"""Tool calling for chat in the Hermes / Qwen format: the model writes each call as
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`.

`tool_choice` "auto" lets the model choose and parses what it wrote; "required" and a named function
constrain the output to calls (a Lark grammar with each function's parameters as a JSON schema);
"none" renders no tools. The engine masks the output with that grammar on the device, token by token.
Chat templates that use another call format are refused by its name.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from llmc.errors import UserError

from ..structured_output import Constraint

CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
OTHER_FORMATS = {"[TOOL_CALLS]": "mistral", "<|python_tag|>": "llama3_json", "<function=": "llama4_pythonic",
                 "<|tool_call_begin|>": "kimi_k2", "<tool▁call▁begin>": "deepseek_v3"}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def to_openai(self, index: int) -> dict:
        return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "index": index,
                "function": {"name": self.name, "arguments": self.arguments}}


def template_format(chat_template: str | None) -> str:
    """Which tool-call format the chat template renders: "hermes", or the name of one llmc refuses."""
    template = chat_template or ""
    if "<tool_call>" in template:
        return "hermes"
    for marker, name in OTHER_FORMATS.items():
        if marker in template:
            return name
    return "none"


def check_tools(tools, tool_choice, chat_template: str | None) -> tuple[list[dict], str | dict]:
    """The request's tools and choice, validated; (tools to render, normalised choice)."""
    if tools is None:
        if tool_choice not in (None, "none"):
            raise UserError("tool_choice: needs tools")
        return [], "none"
    if not isinstance(tools, list) or not tools:
        raise UserError("tools: must be a non-empty list of functions")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise UserError(f"tools[{i}]: only {{'type': 'function', 'function': {{...}}}} tools are supported")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise UserError(f"tools[{i}].function.name: must be a non-empty string")
        if not isinstance(fn.get("parameters", {}), dict):
            raise UserError(f"tools[{i}].function.parameters: must be a JSON schema object")
    choice = "auto" if tool_choice is None else tool_choice
    names = [t["function"]["name"] for t in tools]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if name not in names:
            raise UserError(f"tool_choice: names function {name!r}, which is not among the tools {names}")
    elif choice not in ("none", "auto", "required"):
        raise UserError("tool_choice: must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}")
    if choice != "none":
        found = template_format(chat_template)
        if found != "hermes":
            detail = "renders no tools" if found == "none" else f"uses the {found} tool-call format"
            raise UserError(f"tools: this model's chat template {detail}; llmc parses the hermes <tool_call> format only")
    return ([] if choice == "none" else tools), choice


def call_constraint(tools: list[dict], choice) -> Constraint | None:
    """For "required" or a named function: output that is one or more calls, each to a valid function."""
    if choice in ("none", "auto"):
        return None
    chosen = [t["function"] for t in tools if choice == "required" or t["function"]["name"] == choice["function"]["name"]]
    schemas = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                "properties": {"name": {"const": fn["name"]}, "arguments": fn.get("parameters") or {"type": "object"}}}
               for fn in chosen]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    schema = {**schema, "x-guidance": {"whitespace_flexible": False}}  # compact JSON, as Hermes models write calls
    repeat = "+" if choice == "required" else ""
    lark = (f'start: call{repeat}\ncall: "<tool_call>\\n" body "\\n</tool_call>"\n'
            f"body: %json {json.dumps(schema, sort_keys=True)}\n")
    return Constraint("grammar", lark)


def parse_tool_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """(the text outside the calls or None, the calls); a block that is not a call stays text."""
    calls, kept, last = [], [], 0
    for match in CALL.finditer(text):
        try:
            body = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            continue
        kept.append(text[last:match.start()])
        last = match.end()
        arguments = body.get("arguments", body.get("parameters", {}))
        calls.append(ToolCall(body["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)))
    kept.append(text[last:])
    content = "".join(kept).strip()
    return (content or None), calls
