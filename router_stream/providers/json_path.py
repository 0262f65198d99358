"""A JSONPath subset: ``$``, ``.key``, ``['key']``, ``["key"]``, ``[n]``, ``[*]``, ``.*``, ``..key``.

Enough to point at the answers inside a model's JSON reply (``batch.response.path`` of a prompt
micro-batch, see :mod:`.micro_batch_format`) without a dependency; filters, slices and unions are
not supported and :func:`compile_json_path` says so. A path is compiled once (at start-up, so a bad
path is a config error) and then applied to each document with :func:`json_path_find`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["Step", "compile_json_path", "json_path_find"]

_JP_TOKEN = re.compile(
    r"""\.\.(?P<desc>[A-Za-z_][\w-]*|\*)"""
    r"""|\.(?P<key>[A-Za-z_][\w-]*)"""
    r"""|(?P<wild>\.\*|\[\s*\*\s*\])"""
    r"""|\[\s*(?P<idx>-?\d+)\s*\]"""
    r"""|\[\s*'(?P<sq>[^']*)'\s*\]"""
    r"""|\[\s*"(?P<dq>[^"]*)"\s*\]"""
)

#: one compiled step, ``(kind, arg)``: ``("key", name)``, ``("idx", n)``, ``("wild", None)`` or
#: ``("desc", name or "*")`` (recursive descent)
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
            raise ValueError(
                f"{path!r}: unsupported JSONPath at {text[pos:]!r} "
                "(supported: $ .key ['key'] [n] [*] .* ..key)"
            )
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
