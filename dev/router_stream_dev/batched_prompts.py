"""Batched prompts as the loopback chat endpoint reads and answers them (pure text, no HTTP).

The batching client (:mod:`router_stream.providers.batching`) renders several records into one
user message (``<record index="N">`` … ``</record>``) and ends its system message with a spec
line (``Answer format: json|xml|delimited; path: "..."; index field: "..."; ...``).
:func:`parse_batch` finds both; :func:`batch_answer` answers every record in the asked shape, or
spoils the answer the way the ``batch_drop``, ``batch_bad_index`` and ``batch_garbage`` fault
modes ask. Written from the format's description, not from the client's parser, so a test of
one against the other can fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from .chat_replies import last_user_text

__all__ = ["BATCH_RECORD", "BATCH_SPEC", "BatchedPrompt", "batch_answer", "parse_batch"]

#: one record of a batched prompt, as the default ``batch.prompt_template`` renders it
BATCH_RECORD = re.compile(r'<record index="(\d+)">\n(.*?)\n</record>', re.DOTALL)
#: the machine-readable spec line the batching client ends its format instructions with
BATCH_SPEC = re.compile(r'Answer format: (json|xml|delimited)((?:; [a-z ]+: "(?:[^"\\]|\\.)*")*)')
_SPEC_FIELD = re.compile(r'; ([a-z ]+): ("(?:[^"\\]|\\.)*")')

#: ``(format, spec fields, [(index, content)])``
BatchedPrompt = tuple[str, dict[str, str], list[tuple[int, str]]]


def parse_batch(messages: list[Any]) -> BatchedPrompt | None:
    """The format, spec and records of a batched prompt, or None when the prompt is not batched."""
    user = last_user_text(messages, or_last=True)
    records = [(int(i), c) for i, c in BATCH_RECORD.findall(user)]
    if not records:
        return None
    fmt, spec = "json", {}
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "system":
            found = BATCH_SPEC.search(str(m.get("content") or ""))
            if found:
                fmt = found.group(1)
                spec = {k: json.loads(v) for k, v in _SPEC_FIELD.findall(found.group(2))}
                break
    return fmt, spec, records


def batch_answer(batch: BatchedPrompt, answer_text: Callable[[str], str], mode: str, position: int) -> str:
    """Each record answered as if alone (``answer_text(content)``), in the asked format, or
    spoilt per ``mode`` (``position``: which entry ``batch_drop`` / ``batch_bad_index`` spoil)."""
    fmt, spec, records = batch
    if mode == "batch_garbage":
        return "I am sorry, but I cannot answer these in the requested shape today."
    entries: list[list[Any]] = [[index, answer_text(content)] for index, content in records]
    if mode in ("batch_drop", "batch_bad_index") and entries:
        pos = position if -len(entries) <= position < len(entries) else -1
        if mode == "batch_drop":
            del entries[pos]
        else:
            entries[pos][0] = len(records) + 100
    index_field = spec.get("index field", "index")
    value_field = spec.get("value field", "value")
    if fmt == "delimited":
        delim, fdelim = spec.get("delimiter", "\n"), spec.get("field delimiter", "|")
        return delim.join(f"{i}{fdelim}{v.replace(delim, ' ')}" for i, v in entries)
    if fmt == "xml":
        return _xml(spec.get("path", "./item"), index_field, value_field, entries)
    keys = re.findall(r"\.([A-Za-z_][\w-]*)|\[['\"]([^'\"]*)['\"]\]", spec.get("path", "$.results"))
    doc: Any = [{index_field: i, value_field: v} for i, v in entries]
    for dotted, bracketed in reversed(keys):
        doc = {dotted or bracketed: doc}
    return json.dumps(doc)


def _xml(path: str, index_field: str, value_field: str, entries: list[list[Any]]) -> str:
    root = "results"
    if path.startswith("/") and not path.startswith("//"):
        root, _, path = path[1:].partition("/")
    names = [n for n in re.sub(r"^(\./|\.//|//)", "", path).split("/") if n] or ["item"]
    items = []
    for index, value in entries:
        attrs, children, text = "", "", ""
        for name, v in ((index_field, str(index)), (value_field, value)):
            if name in (".", "text()"):
                text = xml_escape(v)
            elif name.startswith("@"):
                attrs += f" {name[1:]}={quoteattr(v)}"
            else:
                children += f"<{name}>{xml_escape(v)}</{name}>"
        items.append(f"<{names[-1]}{attrs}>{children}{text}</{names[-1]}>")
    inner = "".join(items)
    for name in reversed(names[:-1]):
        inner = f"<{name}>{inner}</{name}>"
    return f"<{root}>{inner}</{root}>"
