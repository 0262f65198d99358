"""Prompt micro-batching: many concurrent calls to one candidate answered by one model call.

:class:`BatchingClient` is a :class:`~.base.ModelClient` that wraps a candidate's real client
(the dispatcher in :mod:`.resilience` wraps it when ``batch.size > 1``). Concurrent
:meth:`~BatchingClient.complete` calls with the same request params wait in a queue until
``batch.size`` have come or ``batch.timeout_ms`` has passed since the first one; then ONE chat
call carries them all:

* a system message: ``batch.system_prompt`` (default: built-in instructions) with ``{count}``
  and ``{format_instructions}`` filled in; the format instructions describe
  ``batch.response`` and end with a machine-readable line (``Answer format: json; path: ...``)
  that the loopback model server reads;
* a user message: each record rendered with ``batch.prompt_template`` (``{index}`` = its
  0-based position, ``{content}`` = its user text), joined by blank lines.

The answer is parsed per ``batch.response.format``:

=============  ===========================================================================
``json``       ``path`` is a JSONPath (subset: ``$``, ``.key``, ``['key']``, ``[n]``,
               ``[*]``, ``.*``, ``..key``) to the answers array or its items; each item is an
               object with ``index_field`` and ``value_field``
``xml``        ``path`` is an ElementTree XPath (``./item``, ``.//item``, ``/results/item``)
               selecting the item elements; a field is a child tag, ``@attribute`` or ``.``
               (the item's own text). DTDs and entity declarations are refused (the model's
               output is untrusted); ``defusedxml`` is used when installed
``delimited``  entries separated by ``delimiter``, each ``<index><field_delimiter><answer>``
=============  ===========================================================================

Every waiting call gets its own :class:`~.base.Completion` (the batch's usage split evenly,
``batch={"id", "size", "position", "answered": "batch"}``). Partial failure:

* a record with no entry (missing, bad or duplicated index) is called alone when
  ``on_missing: individual`` (its ``batch`` says ``"answered": "alone", "reason": "missing"``),
  or fails with ``RetryableModelError(kind="batch_missing")`` when ``on_missing: error``;
* an answer that cannot be parsed at all makes every record call alone
  (``on_parse_error: individual``) or fail with ``kind="batch_parse_error"`` (``error``);
* a failed batched call is retried ``batch.max_retries`` times (backoff, ``Retry-After``
  honoured); after that every record gets the error, which the dispatcher retries / falls back
  on per record as for any call (a retry joins a new batch).

Calls that cannot share a prompt go straight to the wrapped client, answered whole as by any
single call: messages other than user messages (a system prompt, a conversation of their own,
tool results), content parts other than text, params that are not JSON, and params whose answer
a batched text cannot carry (:func:`unbatchable_reason`): ``n > 1`` (one entry per record holds
one answer), ``tools`` / ``functions`` (a record's ``tool_calls`` cannot ride in an entry's
text), a ``response_format`` other than text (the batch format dictates the answer's shape),
``logprobs`` (the batch's token log-probs belong to all records at once), audio output, and
``prediction``. A batch entry's answer is text: its ``finish_reason`` is ``stop`` when the
batched call stopped by itself, else unknown (a ``length`` cut may or may not have hit it).
Each caller keeps its own timeout (``call.timeout_s`` counted from when it joined the queue).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import BatchResponseConfig, CandidateConfig
from ..errors import ConfigError, FatalModelError, ModelError, RetryableModelError
from ..schemas import Usage
from .base import ChatCall, Completion, ModelClient, estimate_tokens
from .ratelimit import RateLimiter

try:  # pragma: no cover - depends on the environment
    from defusedxml.ElementTree import fromstring as _xml_fromstring
except ImportError:  # the DOCTYPE check in _parse_xml keeps entities out either way
    _xml_fromstring = ET.fromstring

log = logging.getLogger(__name__)

__all__ = [
    "BatchParseError", "BatchingClient", "DEFAULT_SYSTEM_PROMPT", "ParsedAnswer", "compile_json_path",
    "format_instructions", "json_path_find", "parse_batch_answer", "render_batch", "unbatchable_reason",
]

DEFAULT_JSON_PATH = "$.results"
DEFAULT_XML_PATH = "./item"

DEFAULT_SYSTEM_PROMPT = (
    "You will receive {count} independent records, each marked with its index. Answer every record "
    "on its own, exactly as if it were the only message you had received; never let one record "
    "change the answer to another, and answer every record. {format_instructions}"
)

_PLACEHOLDER = re.compile(r"\{(index|content|count|format_instructions)\}")


class BatchParseError(ValueError):
    """A batched answer has no usable structure (not the format, or nothing at ``path``)."""


# ---- JSONPath subset -----------------------------------------------------------------------
_JP_TOKEN = re.compile(
    r"""\.\.(?P<desc>[A-Za-z_][\w-]*|\*)"""
    r"""|\.(?P<key>[A-Za-z_][\w-]*)"""
    r"""|(?P<wild>\.\*|\[\s*\*\s*\])"""
    r"""|\[\s*(?P<idx>-?\d+)\s*\]"""
    r"""|\[\s*'(?P<sq>[^']*)'\s*\]"""
    r"""|\[\s*"(?P<dq>[^"]*)"\s*\]"""
)

Step = tuple[str, Any]


def compile_json_path(path: str) -> list[Step]:
    """Steps of a JSONPath in the supported subset; ``ValueError`` names the bad part."""
    text = path.strip()
    if not text.startswith("$"):
        raise ValueError(f"{path!r} does not start with '$'")
    steps: list[Step] = []
    pos = 1
    while pos < len(text):
        m = _JP_TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"{path!r}: unsupported JSONPath at {text[pos:]!r} "
                             "(supported: $ .key ['key'] [n] [*] .* ..key)")
        if m.group("desc") is not None:
            steps.append(("desc", m.group("desc")))
        elif m.group("key") is not None:
            steps.append(("key", m.group("key")))
        elif m.group("wild") is not None:
            steps.append(("wild", None))
        elif m.group("idx") is not None:
            steps.append(("idx", int(m.group("idx"))))
        else:
            steps.append(("key", m.group("sq") if m.group("sq") is not None else m.group("dq")))
        pos = m.end()
    return steps


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node.values())
    if isinstance(node, list):
        return list(node)
    return []


def json_path_find(doc: Any, steps: list[Step]) -> list[Any]:
    """Every node of ``doc`` that ``steps`` (from :func:`compile_json_path`) selects."""
    nodes = [doc]
    for kind, arg in steps:
        out: list[Any] = []
        for node in nodes:
            if kind == "key":
                if isinstance(node, dict) and arg in node:
                    out.append(node[arg])
            elif kind == "idx":
                if isinstance(node, list) and -len(node) <= arg < len(node):
                    out.append(node[arg])
            elif kind == "wild":
                out.extend(_children(node))
            else:  # recursive descent: node and all its descendants, in document order
                stack = [node]
                while stack:
                    cur = stack.pop()
                    if arg == "*":
                        out.extend(_children(cur))
                    elif isinstance(cur, dict) and arg in cur:
                        out.append(cur[arg])
                    stack.extend(reversed(_children(cur)))
        nodes = out
    return nodes


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
                return json.loads(body[start:end + 1])
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


def _xml_entries(text: str, resp: BatchResponseConfig) -> list[tuple[Any, Any]]:
    body = _unfence(text)
    start, end = body.find("<"), body.rfind(">")
    if start < 0 or end <= start:
        raise BatchParseError("not XML")
    body = body[start:end + 1]
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


def parse_batch_answer(text: str, resp: BatchResponseConfig, size: int,
                       json_steps: list[Step] | None = None) -> ParsedAnswer:
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
        spec = (f"Answer format: json; path: {_q(resp.path or DEFAULT_JSON_PATH)}; "
                f"index field: {_q(resp.index_field)}; value field: {_q(resp.value_field)}.")
        head = ("Reply with JSON only (no prose, no code fences), one entry per record, each answer "
                "as a string.")
        example = _json_example(resp)
    elif resp.format == "xml":
        spec = (f"Answer format: xml; path: {_q(resp.path or DEFAULT_XML_PATH)}; "
                f"index field: {_q(resp.index_field)}; value field: {_q(resp.value_field)}.")
        head = ("Reply with XML only (no prose, no code fences), one item element per record, "
                "answers escaped as XML text.")
        example = _xml_example(resp)
    else:
        spec = (f"Answer format: delimited; delimiter: {_q(resp.delimiter)}; "
                f"field delimiter: {_q(resp.field_delimiter)}.")
        head = (f"Reply with one entry per record and nothing else: the record's index, then "
                f"{_q(resp.field_delimiter)}, then your answer; entries separated by "
                f"{_q(resp.delimiter)}, which must not occur inside an answer.")
        example = (f"0{resp.field_delimiter}<answer to record 0>{resp.delimiter}"
                   f"1{resp.field_delimiter}<answer to record 1>")
    text = f"{head} {spec}"
    if example:
        text += f" Example for two records: {example}"
    return text


def render_batch(system_prompt: str | None, prompt_template: str, resp: BatchResponseConfig,
                 contents: list[str]) -> list[dict[str, str]]:
    """The two messages of a batched call over ``contents`` (record ``i`` has index ``i``)."""
    system = _fill(system_prompt if system_prompt is not None else DEFAULT_SYSTEM_PROMPT,
                   {"count": str(len(contents)), "format_instructions": format_instructions(resp)})
    records = [_fill(prompt_template, {"index": str(i), "content": c}) for i, c in enumerate(contents)]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(records)}]


# ---- the client ----------------------------------------------------------------------------
def _user_text(messages: list[dict[str, Any]]) -> str | None:
    """The record's content when every message is a user message; else None (not batchable)."""
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") != "user":
            return None
        content = m.get("content")
        if isinstance(content, list):
            texts = [p.get("text") for p in content if isinstance(p, dict)]
            if not texts or not all(isinstance(t, str) for t in texts):
                return None  # images or other parts cannot ride in a text prompt
            content = "".join(texts)
        if not isinstance(content, str):
            return None
        parts.append(content)
    return "\n\n".join(parts) if parts else None


def unbatchable_reason(params: dict[str, Any]) -> str | None:
    """Why a call with ``params`` must go alone (see the module doc), or None when it may share."""
    n = params.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return "n > 1"
    for name in ("tools", "functions", "prediction", "audio"):
        if params.get(name):
            return name
    fmt = params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        return "response_format"
    if params.get("logprobs"):
        return "logprobs"
    modalities = params.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        return "modalities"
    return None


def _params_key(params: dict[str, Any]) -> str | None:
    try:
        return json.dumps(params, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def _scaled_params(params: dict[str, Any], n: int) -> dict[str, Any]:
    """Token caps are per record: the batched call may use ``n`` times as many."""
    out = dict(params)
    for key in ("max_tokens", "max_completion_tokens"):
        value = out.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out[key] = value * n
    return out


def _split(total: int, n: int) -> list[int]:
    base, extra = divmod(max(0, total), n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _split_usage(usage: Usage, n: int) -> list[Usage]:
    prompts, completions = _split(usage.prompt_tokens, n), _split(usage.completion_tokens, n)
    return [Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)
            for p, c in zip(prompts, completions)]


def _add(a: Usage, b: Usage) -> Usage:
    """``a`` (a record's own call, details kept) plus ``b`` (its share of the failed batch)."""
    return Usage(prompt_tokens=a.prompt_tokens + b.prompt_tokens,
                 completion_tokens=a.completion_tokens + b.completion_tokens,
                 total_tokens=a.total_tokens + b.total_tokens,
                 prompt_tokens_details=a.prompt_tokens_details,
                 completion_tokens_details=a.completion_tokens_details)


def _with_batch(exc: ModelError, batch: dict[str, Any] | None) -> ModelError:
    """A copy of ``exc`` for one record, carrying that record's batch info."""
    copy = type(exc)(str(exc), kind=exc.kind, status=exc.status, retry_after=exc.retry_after)
    copy.batch = dict(batch) if batch else None  # type: ignore[attr-defined]
    return copy


@dataclass(eq=False)
class _Item:
    call: ChatCall
    content: str
    future: asyncio.Future[Completion]
    deadline: float  # loop time by which the caller stops waiting
    tokens: int
    batch: dict[str, Any] | None = None


@dataclass(eq=False)
class _Queue:
    params: dict[str, Any]
    items: list[_Item] = field(default_factory=list)
    tokens: int = 0
    timer: asyncio.TimerHandle | None = None


class _AllGone(Exception):
    """Every caller of a batch has given up; nothing to answer."""


class BatchingClient:
    """:class:`~.base.ModelClient` that folds concurrent calls into batched prompts.

    ``inner`` is the candidate's real client; it is closed by :meth:`aclose` only when
    ``owns_inner`` is true. One instance serves one candidate on one event loop.

    With a ``limiter`` (the candidate's requests-per-minute bucket), every call to ``inner``
    (batched, retried, or a record answered alone) books one request first: the provider counts
    HTTP calls, not records. A wait longer than ``rate_limit.max_wait_ms`` or than the callers'
    time fails the call as ``rate_limited`` (no verdict on the endpoint; the dispatcher moves on
    down the fallback chain). Tokens stay booked per record by the dispatcher.
    """

    def __init__(self, candidate_name: str, cfg: CandidateConfig, inner: ModelClient, *,
                 owns_inner: bool = False, rng: random.Random | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep, limiter: RateLimiter | None = None,
                 on_rate_limit_wait: Callable[[float], Any] | None = None) -> None:
        self.name = candidate_name
        self.limiter = limiter if limiter is not None and limiter.requests is not None else None
        self._on_wait = on_rate_limit_wait
        self.cfg = cfg
        self.batch_cfg = cfg.batch
        self.inner = inner
        self.owns_inner = owns_inner
        self._rng = rng or random.Random()
        self._sleep = sleep
        resp = self.batch_cfg.response
        self._json_steps: list[Step] | None = None
        if resp.format == "json":
            try:
                self._json_steps = compile_json_path(resp.path or DEFAULT_JSON_PATH)
            except ValueError as exc:
                raise ConfigError(f"candidates.{candidate_name}.batch.response.path: {exc}") from None
        elif resp.format == "xml":
            try:
                _xml_items(ET.Element("results"), resp.path or DEFAULT_XML_PATH)
            except SyntaxError as exc:
                raise ConfigError(f"candidates.{candidate_name}.batch.response.path: "
                                  f"{resp.path!r} is not an ElementTree XPath ({exc})") from None
        # prompt budget of the fixed parts, for flushing before the context window overflows
        fixed = render_batch(self.batch_cfg.system_prompt, self.batch_cfg.prompt_template, resp, [])
        self._fixed_tokens = sum(estimate_tokens(m["content"]) + 4 for m in fixed)
        self._queues: dict[str, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"BatchingClient(name={self.name!r}, size={self.batch_cfg.size}, inner={self.inner!r})"

    # ---- ModelClient -----------------------------------------------------------------------
    async def complete(self, call: ChatCall) -> Completion:
        content = _user_text(call.messages) if unbatchable_reason(call.params) is None else None
        key = _params_key(call.params) if content is not None else None
        if content is None or key is None:
            await self._book_call(call.timeout_s)
            return await self.inner.complete(call)
        if self._closed:
            raise RetryableModelError(f"{self.name}: batching client is closed", kind="connection")
        loop = asyncio.get_running_loop()
        timeout_s = max(0.001, call.timeout_s)
        tokens = estimate_tokens(_fill(self.batch_cfg.prompt_template, {"index": "000", "content": content}))
        item = _Item(call=call, content=content, future=loop.create_future(),
                     deadline=loop.time() + timeout_s, tokens=tokens)
        self._enqueue(key, call.params, item)
        try:
            async with asyncio.timeout(timeout_s):
                return await item.future
        except TimeoutError:
            if item.future.done() and not item.future.cancelled():
                return item.future.result()
            self._withdraw(key, item)
            exc = RetryableModelError(f"{self.name}: no answer within {timeout_s:.3g}s", kind="timeout")
            raise _with_batch(exc, item.batch) from None
        except asyncio.CancelledError:
            self._withdraw(key, item)
            raise

    async def aclose(self) -> None:
        """Fail what waits, stop running batches, then close ``inner`` if this client owns it."""
        self._closed = True
        for key in list(self._queues):
            queue = self._queues.pop(key)
            if queue.timer is not None:
                queue.timer.cancel()
            for item in queue.items:
                if not item.future.done():
                    item.future.set_exception(
                        RetryableModelError(f"{self.name}: batching client closed", kind="connection"))
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.owns_inner:
            await self.inner.aclose()

    # ---- queueing ----------------------------------------------------------------------------
    def _enqueue(self, key: str, params: dict[str, Any], item: _Item) -> None:
        queue = self._queues.get(key)
        window = self.cfg.context_window
        if (queue is not None and queue.items and window is not None
                and self._fixed_tokens + queue.tokens + item.tokens > window):
            self._flush(key, queue)  # this record would overflow the context window: start anew
            queue = None
        if queue is None:
            queue = self._queues[key] = _Queue(params=dict(params))
        queue.items.append(item)
        queue.tokens += item.tokens
        if len(queue.items) >= self.batch_cfg.size:
            self._flush(key, queue)
        elif queue.timer is None:
            loop = asyncio.get_running_loop()
            queue.timer = loop.call_later(self.batch_cfg.timeout_ms / 1000.0, self._flush, key, queue)

    def _withdraw(self, key: str, item: _Item) -> None:
        queue = self._queues.get(key)
        if queue is None or item not in queue.items:
            return
        queue.items.remove(item)
        queue.tokens -= item.tokens
        if not queue.items:
            if queue.timer is not None:
                queue.timer.cancel()
            del self._queues[key]

    def _flush(self, key: str, queue: _Queue) -> None:
        if self._queues.get(key) is not queue:
            return  # a stale timer: this queue was flushed already
        del self._queues[key]
        if queue.timer is not None:
            queue.timer.cancel()
        items = [i for i in queue.items if not i.future.done()]
        if not items:
            return
        task = asyncio.get_running_loop().create_task(self._run(items, queue.params))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- one batch ---------------------------------------------------------------------------
    async def _run(self, items: list[_Item], params: dict[str, Any]) -> None:
        try:
            await self._run_batch(items, params)
        except asyncio.CancelledError:  # aclose(): nobody will answer these callers
            for item in items:
                self._fail(item, RetryableModelError(f"{self.name}: batching client closed", kind="connection"))
            raise

    async def _run_batch(self, items: list[_Item], params: dict[str, Any]) -> None:
        n = len(items)
        batch_id = uuid.uuid4().hex[:16]
        for pos, item in enumerate(items):
            item.batch = {"id": batch_id, "size": n, "position": pos, "answered": "batch"}
        cfg = self.batch_cfg
        messages = render_batch(cfg.system_prompt, cfg.prompt_template, cfg.response,
                                [i.content for i in items])
        try:
            completion = await self._call_batch(items, messages, _scaled_params(params, n))
        except _AllGone:
            return
        except ModelError as exc:
            for item in items:
                self._fail(item, exc)
            return
        except Exception as exc:  # a bug in the wrapped client must not leave callers hanging
            log.error("batched call for candidate %s raised %s", self.name, type(exc).__name__, exc_info=True)
            err = FatalModelError(f"{self.name}: client error ({type(exc).__name__})", kind="internal")
            for item in items:
                self._fail(item, err)
            return
        shares = _split_usage(completion.usage, n)
        try:
            parsed = parse_batch_answer(completion.text, cfg.response, n, self._json_steps)
        except BatchParseError as exc:
            log.warning("candidate %s: batch %s (%d records) answer not parseable as %s: %s",
                        self.name, batch_id, n, cfg.response.format, exc)
            if cfg.on_parse_error == "individual":
                await self._alone(list(zip(items, shares)), "parse_error")
            else:
                err = RetryableModelError(
                    f"{self.name}: batched answer not parseable as {cfg.response.format} ({exc})",
                    kind="batch_parse_error", status=completion.status)
                for item in items:
                    self._fail(item, err)
            return
        missing: list[tuple[_Item, Usage]] = []
        for pos, item in enumerate(items):
            text = parsed.answers.get(pos)
            if text is None:
                missing.append((item, shares[pos]))
            elif not item.future.done():
                item.future.set_result(Completion(
                    text=text, provider_model=completion.provider_model, usage=shares[pos],
                    latency_ms=completion.latency_ms, status=completion.status, batch=dict(item.batch or {}),
                    finish_reason="stop" if completion.finish_reason == "stop" else None,
                    response_id=completion.response_id, system_fingerprint=completion.system_fingerprint,
                    service_tier=completion.service_tier))
        if not missing:
            return
        log.info("candidate %s: batch %s answered %d of %d records (%d bad entries, duplicates %s)",
                 self.name, batch_id, n - len(missing), n, parsed.bad, parsed.duplicates)
        if cfg.on_missing == "individual":
            await self._alone(missing, "missing")
        else:
            for item, _ in missing:
                pos = (item.batch or {}).get("position")
                self._fail(item, RetryableModelError(
                    f"{self.name}: batched answer has no usable entry for record {pos}",
                    kind="batch_missing", status=completion.status))

    async def _call_batch(self, items: list[_Item], messages: list[dict[str, Any]],
                          params: dict[str, Any]) -> Completion:
        """The batched call, retried ``batch.max_retries`` times while any caller still waits."""
        loop = asyncio.get_running_loop()
        limit_ms = self.batch_cfg.request_timeout_ms or self.cfg.request_timeout_ms
        retry = 0
        while True:
            live = [i for i in items if not i.future.done()]
            if not live:
                raise _AllGone()
            last = max(i.deadline for i in live)
            timeout_s = min(limit_ms / 1000.0, last - loop.time())
            if timeout_s <= 0:
                raise RetryableModelError(f"{self.name}: no time left for the batched call", kind="timeout")
            try:
                started = loop.time()
                await self._book_call(timeout_s)
                timeout_s = max(0.001, timeout_s - (loop.time() - started))
                return await self.inner.complete(ChatCall(messages=messages, params=params, timeout_s=timeout_s))
            except RetryableModelError as exc:
                if retry >= self.batch_cfg.max_retries:
                    raise
                retry += 1
                ceiling = min(2.0, 0.1 * 2 ** (retry - 1))
                delay = max(self._rng.uniform(ceiling / 2, ceiling), exc.retry_after or 0.0)
                if loop.time() + delay >= last:
                    raise
                log.info("candidate %s: batched call failed (%s), retry %d in %.2fs",
                         self.name, exc.kind, retry, delay)
                await self._sleep(delay)

    async def _alone(self, members: list[tuple[_Item, Usage]], reason: str) -> None:
        """Answer each record with its own call; its usage includes its share of the batch."""
        await asyncio.gather(*(self._one(item, share, reason) for item, share in members))

    async def _one(self, item: _Item, share: Usage, reason: str) -> None:
        if item.future.done():
            return
        info = {**(item.batch or {}), "answered": "alone", "reason": reason}
        item.batch = info
        loop = asyncio.get_running_loop()
        remaining = item.deadline - loop.time()
        if remaining <= 0:
            return  # the caller has timed out already
        try:
            await self._book_call(remaining)
            remaining = item.deadline - loop.time()
            call = ChatCall(messages=item.call.messages, params=item.call.params, timeout_s=max(0.001, remaining))
            completion = await self.inner.complete(call)
        except ModelError as exc:
            self._fail(item, exc)
            return
        except Exception as exc:
            log.error("model client for candidate %s raised %s", self.name, type(exc).__name__, exc_info=True)
            self._fail(item, FatalModelError(f"{self.name}: client error ({type(exc).__name__})", kind="internal"))
            return
        if not item.future.done():  # the whole answer of its own call, with its share of the batch
            item.future.set_result(dataclasses.replace(completion, usage=_add(completion.usage, share),
                                                       batch=dict(info)))

    async def _book_call(self, time_left_s: float) -> None:
        """Book one request with the limiter, waiting for the budget if it comes in time."""
        if self.limiter is None:
            return
        max_wait = min(self.cfg.rate_limit.max_wait_ms / 1000.0, max(0.0, time_left_s))
        wait = self.limiter.reserve(0, max_wait, requests=1)
        if wait is None:
            raise FatalModelError(f"{self.name}: rate limit budget exhausted "
                                  f"(requests_per_minute={self.cfg.rate_limit.requests_per_minute})",
                                  kind="rate_limited")
        if wait > 0:
            if self._on_wait is not None:
                self._on_wait(wait)
            await self._sleep(wait)

    @staticmethod
    def _fail(item: _Item, exc: ModelError) -> None:
        if not item.future.done():
            item.future.set_exception(_with_batch(exc, item.batch))
