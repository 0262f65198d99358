"""Control records: operator commands that travel the requests topic (``router-stream state evict``).

Why through the requests topic: a command produced with the key's Kafka key lands on the
partition that owns the key's state, is ordered with the key's requests, and is applied by the
owning worker inside that partition's transaction. So an eviction happens exactly once, survives
a rebalance or a crash (it is re-read like any record until its offset commits) and never races
the key's requests.

Why a secret: anyone who may produce requests could otherwise steer other keys' routing. A
record is a control record when it carries the :data:`CONTROL_HEADER` header, or when its JSON
has a top-level ``control`` field. It is applied only when the header's value equals the secret
in the env var named by ``control.secret_env`` (compared with :func:`hmac.compare_digest`).
Anything else is a dead letter, never applied and never answered:

* ``unauthorised_control``: the header is missing (control-shaped JSON without it), empty, or
  does not match the secret;
* ``control_disabled``: the record carries the header but this worker has no secret configured
  (``control.secret_env`` unset, or its env var unset or shorter than :data:`MIN_SECRET_CHARS`);
* ``invalid_control``: authorised, but the body is not a command this worker knows.

The secret never leaves the worker: dead letters copy the record's value (not its headers), the
outputs carry trace headers only, and no message here contains it.

Body (JSON): ``{"control": "evict" | "reset_budget", "scope_key": "<scope key or budget scope
value>", "strategy": "<name>" | null, "budget": "<name>" | null, "control_id": "<id for the
audit>"}``; unknown fields are ignored and listed in the audit. ``reset_budget`` is applied by the
handler's budget ledger (``budgets/ledger.py``).
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..state import keystate
from ..state.store import key_state_key
from .intake import Poison

#: the record header carrying the shared secret
CONTROL_HEADER = "router-stream-control"
#: shorter secrets are refused (control stays disabled): they could be guessed
MIN_SECRET_CHARS = 16
ACTIONS = ("evict", "reset_budget")
_FIELDS = {"control", "scope_key", "strategy", "budget", "control_id", "schema_version"}
_HOW_TO_ENABLE = (
    "set control.secret_env in the config to the name of an env var holding a shared secret of at "
    f"least {MIN_SECRET_CHARS} characters, in the worker's and the operator's environment "
    "(docs/operations.md, 'Inspect and evict a key's state')"
)


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """An authorised operator command for one scope key of the partition it arrived on."""

    action: str
    scope_key: str
    strategy: str | None = None
    control_id: str = ""
    ignored_fields: tuple[str, ...] = ()
    budget: str | None = None  # reset_budget: this budget only (None: every budget)


def control_body(
    action: str, scope_key: str, strategy: str | None, control_id: str, budget: str | None = None
) -> bytes:
    """The value the CLI produces (the same shape :meth:`ControlGate.check` reads)."""
    return json.dumps(
        {
            "control": action,
            "scope_key": scope_key,
            "strategy": strategy,
            "budget": budget,
            "control_id": control_id,
        },
        separators=(",", ":"),
    ).encode()


def _looks_like_control(value: bytes | None) -> bool:
    """JSON with a top-level ``control`` field. The substring test keeps the common case (a
    request) to one ``bytes.find``; only a record mentioning ``"control"`` is parsed here."""
    if not value or b'"control"' not in value:
        return False
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "control" in data


class ControlGate:
    """Decides whether a record is a control record and whether it is authorised."""

    def __init__(self, secret: str | None, disabled_why: str | None = None) -> None:
        self._secret = secret.encode("utf-8") if secret else None
        self.disabled_why = disabled_why if self._secret is None else None

    def __repr__(self) -> str:  # never the secret
        return f"ControlGate(enabled={self._secret is not None})"

    @classmethod
    def from_env(cls, secret_env: str | None, environ: Mapping[str, str] | None = None) -> ControlGate:
        """The gate for ``control.secret_env`` (None: control records disabled)."""
        env = os.environ if environ is None else environ
        if not secret_env:
            return cls(None, f"control records are disabled on this worker: {_HOW_TO_ENABLE}")
        secret = env.get(secret_env) or ""
        if not secret:
            return cls(
                None,
                f"control records are disabled on this worker: control.secret_env names "
                f"{secret_env}, which is not set in its environment",
            )
        if len(secret) < MIN_SECRET_CHARS:
            return cls(
                None,
                f"control records are disabled on this worker: the secret in {secret_env} is "
                f"shorter than {MIN_SECRET_CHARS} characters",
            )
        return cls(secret)

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def check(
        self, headers: tuple[tuple[str, bytes], ...], value: bytes | None
    ) -> ControlCommand | Poison | None:
        """None for an ordinary record; else the authorised command, or why it is refused."""
        given: bytes | None = None
        has_header = False
        for name, header_value in headers:
            if name.lower() == CONTROL_HEADER:
                has_header, given = True, header_value
                break
        if not has_header:
            if _looks_like_control(value):
                return Poison(
                    "unauthorised_control",
                    f"a control record (top-level 'control' field) without the "
                    f"{CONTROL_HEADER} header; it was not applied",
                )
            return None
        if self._secret is None:
            return Poison("control_disabled", f"{self.disabled_why}; the record was not applied")
        if not given or not hmac.compare_digest(given, self._secret):
            return Poison(
                "unauthorised_control",
                f"the {CONTROL_HEADER} header does not carry this worker's "
                "control secret; the record was not applied",
            )
        return parse_command(value)


def parse_command(value: bytes | None) -> ControlCommand | Poison:
    """The command in an authorised record's body, or ``invalid_control`` saying what is wrong."""

    def bad(why: str) -> Poison:
        return Poison("invalid_control", f"an authorised control record that cannot be applied: {why}")

    try:
        data: Any = json.loads(value or b"")
    except (ValueError, RecursionError):
        return bad("the value is not JSON")
    if not isinstance(data, dict):
        return bad("the value is not a JSON object")
    action = data.get("control")
    if action not in ACTIONS:
        return bad(f"'control' must be one of {', '.join(ACTIONS)} (got {str(action)[:40]!r})")
    scope_key = data.get("scope_key")
    if not isinstance(scope_key, str) or not scope_key:
        return bad("'scope_key' must be a non-empty string (the key whose state to change)")
    strategy = data.get("strategy")
    if strategy is not None and (not isinstance(strategy, str) or not strategy):
        return bad("'strategy' must be a strategy name or null")
    budget = data.get("budget")
    if budget is not None and (not isinstance(budget, str) or not budget):
        return bad("'budget' must be a budget name or null")
    control_id = data.get("control_id")
    if not isinstance(control_id, str) or not control_id or len(control_id) > 256:
        return bad(
            "'control_id' must be a string of 1-256 characters (it identifies the command in the audit)"
        )
    ignored = tuple(sorted(set(data) - _FIELDS))
    return ControlCommand(action, scope_key, strategy, control_id, ignored, budget)


def apply_command(command: ControlCommand, state: dict[str, Any] | None) -> tuple[bool, dict[str, Any]]:
    """Apply ``command`` to a key's state (:mod:`..state.keystate` shape; None = no state).

    Returns (changed, note): ``state`` is modified in place when changed; ``note`` is what the
    audit's ``control`` field says happened. Evicting drops the sticky decision and keeps the
    request count and recent ids (the janitor removes an entry without a decision later)."""
    note: dict[str, Any] = {"action": command.action, "strategy": command.strategy, "applied": False}
    if command.ignored_fields:
        note["ignored_fields"] = list(command.ignored_fields)
    decision = state.get("decision") if state is not None else None
    if state is None:
        note["result"] = "no state for this key on this partition: nothing to evict"
    elif not isinstance(decision, dict):
        note["result"] = "the key has no sticky decision: nothing to evict"
    elif command.strategy is not None and decision.get("decided_by") != command.strategy:
        note["result"] = (
            f"kept: the sticky decision was made by {decision.get('decided_by')!r}, not {command.strategy!r}"
        )
        note["kept"] = {k: decision.get(k) for k in ("candidate", "decided_by", "decided_at")}
    else:
        state["decision"] = None
        note["applied"] = True
        note["result"] = "evicted: the key's next request is decided afresh"
        note["evicted"] = {k: decision.get(k) for k in ("candidate", "decided_by", "decided_at")}
    return note["applied"], note


class StateAccess(Protocol):
    """What applying a command needs of the batch's state view (``handler.StateView``)."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes | None) -> None: ...


def apply_to_state(command: ControlCommand, view: StateAccess) -> dict[str, Any]:
    """:func:`apply_command` on the key's stored state, writing it back when it changed (the
    write joins the batch's transaction like a request's). Returns the audit note."""
    state_key = key_state_key(command.scope_key)
    raw = view.get(state_key)
    state = keystate.load(raw) if raw is not None else None
    changed, note = apply_command(command, state)
    if changed and state is not None:
        view.put(state_key, keystate.dump(state))
    return note
