"""The prompt micro-batch text format: how N records are written into one chat prompt, and how
the model's one answer is read back into N answers.

Pure text in, text out: no I/O, no client, no event loop. :mod:`.batching` (the micro-batching
client) renders a batch with :func:`render_batch` and reads its answer with
:func:`parse_batch_answer`; the loopback model server reads the machine-readable spec line that
:func:`format_instructions` ends with. ("Batch" here is always the prompt micro-batch of
``candidates.<name>.batch``, not a Kafka fetch batch or a Batch API job.)

A batched prompt is two messages:

* a system message: ``batch.system_prompt`` (default :data:`DEFAULT_SYSTEM_PROMPT`) with
  ``{count}`` and ``{format_instructions}`` filled in; the format instructions describe
  ``batch.response`` and end with a machine-readable line (``Answer format: json; path: ...``);
* a user message: each record rendered with ``batch.prompt_template`` (``{index}`` = its
  0-based position, ``{content}`` = its user text), joined by blank lines.

The answer is parsed per ``batch.response.format``:

=============  ===========================================================================
``json``       ``path`` is a JSONPath (the subset of :mod:`.json_path`) to the answers array
               or its items; each item is an object with ``index_field`` and ``value_field``
``xml``        ``path`` is an ElementTree XPath (``./item``, ``.//item``, ``/results/item``)
               selecting the item elements; a field is a child tag, ``@attribute`` or ``.``
               (the item's own text). DTDs and entity declarations are refused (the model's
               output is untrusted); ``defusedxml`` is used when installed
``delimited``  entries separated by ``delimiter``, each ``<index><field_delimiter><answer>``
=============  ===========================================================================

Placeholders are filled in one pass, so a record's text that contains ``{index}`` stays as it is.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from ..config_candidates import BatchResponseConfig
from ..errors import RetryableModelError
from .json_path import Step, compile_json_path, json_path_find

try:  # pragma: no cover - depends on the environment
    from defusedxml.ElementTree import fromstring as _xml_fromstring
except ImportError:  # the DOCTYPE check in _xml_entries keeps entities out either way
    _xml_fromstring = ET.fromstring

__all__ = [
    "DEFAULT_JSON_PATH",
    "DEFAULT_SYSTEM_PROMPT",
    "DEFAULT_XML_PATH",
    "BatchParseError",
    "ParsedAnswer",
    "check_xml_path",
    "format_instructions",
    "parse_batch_answer",
    "render_batch",
    "render_record",
]

DEFAULT_JSON_PATH = "$.results"
DEFAULT_XML_PATH = "./item"

DEFAULT_SYSTEM_PROMPT = (
    "You will receive {count} independent records, each marked with its index. Answer every record "
    "on its own, exactly as if it were the only message you had received; never let one record "
    "change the answer to another, and answer every record. {format_instructions}"
)

_PLACEHOLDER = re.compile(r"\{(index|content|count|format_instructions)\}")


class BatchParseError(RetryableModelError, ValueError):
    """A batched answer has no usable structure (not the format, or nothing at ``path``)."""


# ---- parsing an answer ---------------------------------------------------------------------
@dataclass
class ParsedAnswer:
    """Answers by record position, and what could not be used."""

    answers: dict[int, str]
    entries: int = 0
    bad: int = 0  # entries without a usable index or value, or with an index out of range
    duplicates: list[int] = field(default_factory=list)


_FENCE = re.compile(r"^\s*```[\w-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def _unfence(text: str) -> str:
    m = _FENCE.match(text)
    return m.group(1) if m else text.strip()


def _as_index(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"\s*\d+\s*", raw):
        return int(raw)
    return None


def _as_text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    return json.dumps(raw, ensure_ascii=False)


def _load_json(text: str) -> Any:
    body = _unfence(text)
    try:
        return json.loads(body)
    except ValueError:
        pass
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if starts:  # prose around the document: take the outermost {...} or [...]
        start = min(starts)
        end = body.rfind("}" if body[start] == "{" else "]")
        if end > start:
            try:
                return json.loads(body[start : end + 1])
            except ValueError:
                pass
    raise BatchParseError("not JSON")


def _json_entries(text: str, resp: BatchResponseConfig, steps: list[Step]) -> list[tuple[Any, Any]]:
    doc = _load_json(text)
    found = json_path_find(doc, steps)
    if not found:
        raise BatchParseError(f"nothing at {resp.path or DEFAULT_JSON_PATH}")
    items = found[0] if len(found) == 1 and isinstance(found[0], list) else found
    entries = []
    for item in items:
        if isinstance(item, dict):
            entries.append((item.get(resp.index_field), item.get(resp.value_field)))
        else:
            entries.append((None, None))
    return entries


def _xml_field(elem: ET.Element, name: str) -> str | None:
    if name in (".", "text()"):
        return "".join(elem.itertext()).strip()
    if name.startswith("@"):
        return elem.get(name[1:])
    child = elem.find(name)
    if child is not None:
        return "".join(child.itertext()).strip()
    return elem.get(name)


def _xml_items(root: ET.Element, path: str) -> list[ET.Element]:
    if path.startswith("//"):
        rel = "." + path
        found = root.findall(rel)
        tag = path[2:].split("/", 1)[0]
        if "/" not in path[2:] and (tag == "*" or tag == root.tag):
            found.insert(0, root)
        return found
    if path.startswith("/"):
        first, _, rest = path[1:].partition("/")
        if first not in ("*", root.tag):
            return []
        return root.findall("./" + rest) if rest else [root]
    return root.findall(path)


def check_xml_path(path: str) -> None:
    """Raise ``ValueError`` when ``path`` is not an ElementTree XPath the parser can use (checked
    once at start-up, so a bad ``batch.response.path`` is a config error, not a parse error)."""
    try:
        _xml_items(ET.Element("results"), path)
    except SyntaxError as exc:
        raise ValueError(str(exc)) from None


def _xml_entries(text: str, resp: BatchResponseConfig) -> list[tuple[Any, Any]]:
    body = _unfence(text)
    start, end = body.find("<"), body.rfind(">")
    if start < 0 or end <= start:
        raise BatchParseError("not XML")
    body = body[start : end + 1]
    lowered = body.lower()
    if "<!doctype" in lowered or "<!entity" in lowered:
        raise BatchParseError("XML with a DTD or entity declarations is refused")
    try:
        root = _xml_fromstring(body)
    except Exception as exc:  # ET.ParseError, or defusedxml's refusals
        raise BatchParseError(f"not XML ({type(exc).__name__})") from None
    path = resp.path or DEFAULT_XML_PATH
    try:
        items = _xml_items(root, path)
    except SyntaxError as exc:
        raise BatchParseError(f"bad XPath {path!r}: {exc}") from None
    if not items:
        raise BatchParseError(f"nothing at {path}")
    return [(_xml_field(e, resp.index_field), _xml_field(e, resp.value_field)) for e in items]


def _delimited_entries(text: str, resp: BatchResponseConfig) -> list[tuple[Any, Any]]:
    body = _unfence(text)
    entries = []
    chunks = [c.strip() for c in body.split(resp.delimiter)]
    chunks = [c for c in chunks if c]
    for chunk in chunks:
        idx, sep, value = chunk.partition(resp.field_delimiter)
        if sep and _as_index(idx) is not None:
            entries.append((idx, value.strip()))
    if not entries:
        raise BatchParseError("no '<index><field_delimiter><answer>' entries")
    return entries


def parse_batch_answer(
    text: str, resp: BatchResponseConfig, size: int, json_steps: list[Step] | None = None
) -> ParsedAnswer:
    """Map a batched answer to ``{position: answer}``; raise :class:`BatchParseError` when the
    answer has no usable structure. Entries with a bad index, and every entry of an index that
    occurs twice, are left out (their records count as missing)."""
    if resp.format == "json":
        steps = json_steps if json_steps is not None else compile_json_path(resp.path or DEFAULT_JSON_PATH)
        entries = _json_entries(text, resp, steps)
    elif resp.format == "xml":
        entries = _xml_entries(text, resp)
    else:
        entries = _delimited_entries(text, resp)
    parsed = ParsedAnswer(answers={}, entries=len(entries))
    seen: set[int] = set()
    for raw_index, raw_value in entries:
        index = _as_index(raw_index)
        value = _as_text(raw_value)
        if index is None or value is None or not 0 <= index < size:
            parsed.bad += 1
            continue
        if index in seen:
            if index not in parsed.duplicates:
                parsed.duplicates.append(index)
            continue
        seen.add(index)
        parsed.answers[index] = value
    for index in parsed.duplicates:  # two answers for one record: trust neither
        parsed.answers.pop(index, None)
    return parsed


# ---- rendering a batched prompt ------------------------------------------------------------
def _fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` placeholders in one pass (inserted text is never re-scanned)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _json_example(resp: BatchResponseConfig) -> str | None:
    try:
        steps = compile_json_path(resp.path or DEFAULT_JSON_PATH)
    except ValueError:
        return None
    if steps and steps[-1][0] == "wild":
        steps = steps[:-1]
    if any(kind != "key" for kind, _ in steps):
        return None
    doc: Any = [{resp.index_field: i, resp.value_field: f"<answer to record {i}>"} for i in (0, 1)]
    for _, key in reversed(steps):
        doc = {key: doc}
    return json.dumps(doc, ensure_ascii=False)


def _xml_example(resp: BatchResponseConfig) -> str | None:
    path = resp.path or DEFAULT_XML_PATH
    root = "results"
    if path.startswith("/") and not path.startswith("//"):
        root, _, path = path[1:].partition("/")
    else:
        path = re.sub(r"^(\./|\.//|//)", "", path)
    names = path.split("/") if path else []
    pattern = re.compile(r"[A-Za-z_][\w.-]*")
    if not names or not pattern.fullmatch(root) or not all(pattern.fullmatch(n) for n in names):
        return None

    def item(i: int) -> str:
        attrs, children, text = [], [], ""
        for name, value in ((resp.index_field, str(i)), (resp.value_field, f"answer to record {i}")):
            if name in (".", "text()"):
                text = value
            elif name.startswith("@"):
                attrs.append(f' {name[1:]}="{value}"')
            elif pattern.fullmatch(name):
                children.append(f"<{name}>{value}</{name}>")
            else:
                return ""
        return f"<{names[-1]}{''.join(attrs)}>{''.join(children)}{text}</{names[-1]}>"

    items = item(0) + item(1)
    if not items:
        return None
    for name in reversed(names[:-1]):
        items = f"<{name}>{items}</{name}>"
    return f"<{root}>{items}</{root}>"


def format_instructions(resp: BatchResponseConfig) -> str:
    """What the model is told about the reply's shape; ends with a machine-readable spec."""
    if resp.format == "json":
        spec = (
            f"Answer format: json; path: {_q(resp.path or DEFAULT_JSON_PATH)}; "
            f"index field: {_q(resp.index_field)}; value field: {_q(resp.value_field)}."
        )
        head = (
            "Reply with JSON only (no prose, no code fences), one entry per record, each answer as a string."
        )
        example = _json_example(resp)
    elif resp.format == "xml":
        spec = (
            f"Answer format: xml; path: {_q(resp.path or DEFAULT_XML_PATH)}; "
            f"index field: {_q(resp.index_field)}; value field: {_q(resp.value_field)}."
        )
        head = (
            "Reply with XML only (no prose, no code fences), one item element per record, "
            "answers escaped as XML text."
        )
        example = _xml_example(resp)
    else:
        spec = (
            f"Answer format: delimited; delimiter: {_q(resp.delimiter)}; "
            f"field delimiter: {_q(resp.field_delimiter)}."
        )
        head = (
            f"Reply with one entry per record and nothing else: the record's index, then "
            f"{_q(resp.field_delimiter)}, then your answer; entries separated by "
            f"{_q(resp.delimiter)}, which must not occur inside an answer."
        )
        example = (
            f"0{resp.field_delimiter}<answer to record 0>{resp.delimiter}"
            f"1{resp.field_delimiter}<answer to record 1>"
        )
    text = f"{head} {spec}"
    if example:
        text += f" Example for two records: {example}"
    return text


def render_batch(
    system_prompt: str | None, prompt_template: str, resp: BatchResponseConfig, contents: list[str]
) -> list[dict[str, str]]:
    """The two messages of a batched call over ``contents`` (record ``i`` has index ``i``)."""
    system = _fill(
        system_prompt if system_prompt is not None else DEFAULT_SYSTEM_PROMPT,
        {"count": str(len(contents)), "format_instructions": format_instructions(resp)},
    )
    records = [render_record(prompt_template, str(i), c) for i, c in enumerate(contents)]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(records)}]


def render_record(prompt_template: str, index: str, content: str) -> str:
    """One record as ``prompt_template`` writes it into the user message (also how the client
    estimates a record's share of the prompt before the batch exists)."""
    return _fill(prompt_template, {"index": index, "content": content})
