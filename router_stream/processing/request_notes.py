"""What the audit says about a request's fields that reached no model.

A request record is an OpenAI chat-completions body plus the router's fields (see
:class:`~router_stream.schemas.Request`). Most fields go to the model as given; the rest are
read by the router or dropped, and the audit names them (``Audit.ignored_fields``) with a
sentence each where the reason is not obvious (``Audit.notes``), so nothing disappears silently:

* an unknown top-level field (neither the router's nor chat-completions'): readers ignore what
  they do not know (Kafka's schema-evolution habit), so it is neither sent nor a dead letter;
* ``params.<name>`` when ``<name>`` is also given at top level: the top-level value is sent;
* ``stream`` / ``stream_options``: one Kafka record carries one whole answer;
* ``model``: the router picks the candidate. A request's ``model`` names a candidate only when
  ``allow_request_candidate_field`` is ``model`` (and ``fields.model`` is absent); the routing
  verdict then records it (:func:`~router_stream.processing.handler.request_override`);
* ``params.model`` / ``params.messages`` / ``params.stream`` / ``params.stream_options``.
"""

from __future__ import annotations

from ..schemas import CHAT_COMPLETION_FIELDS, NOT_SENT, Request

__all__ = ["audit_notes", "model_names_candidate"]


def model_names_candidate(request: Request, candidate_field: str | None) -> bool:
    """True when the request's top-level ``model`` is read as its candidate choice."""
    return (
        candidate_field == "model"
        and "model" not in request.fields
        and request.top_level("model") is not None
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


def audit_notes(request: Request, candidate_field: str | None) -> tuple[list[str] | None, list[str] | None]:
    """``(ignored_fields, notes)`` for the request's audit record; each None when empty."""
    ignored: list[str] = []
    notes: list[str] = []
    extra = request.model_extra or {}
    unknown = request.unknown_fields()
    if unknown:
        ignored.extend(unknown)
        notes.append(f"unknown top-level field(s) ignored, not sent to the model: {', '.join(unknown)[:300]}")
    for name in request.params:
        if name in NOT_SENT:
            ignored.append(f"params.{name}")
        elif name in extra and name in CHAT_COMPLETION_FIELDS:
            ignored.append(f"params.{name}")
            notes.append(f"params.{name} was overridden by the top-level {name}")
    if "model" in extra and not model_names_candidate(request, candidate_field):
        ignored.append("model")
        notes.append(
            f"model {_shown(extra['model'])} was not used: the router chooses the candidate "
            "(config allow_request_candidate_field: model lets a request name one)"
        )
    for name in ("stream", "stream_options"):
        if name in extra:
            ignored.append(name)
    if extra.get("stream") is True or request.params.get("stream") is True:
        notes.append("stream: true was answered whole (one Kafka record carries one complete answer)")
    return ignored or None, notes or None
