"""Checks across config sections, which per-field validation cannot make.

Errors: every candidate a section names exists (with "did you mean" for a near miss), no
candidate falls back to itself, strategy names are unique (audit records, metrics and
recalibration state are keyed by them). Warnings: strategies placed after one that always
decides can never run.

The reference checks run twice by design. On a config whose fields all validate, the model's
own validator calls :func:`reference_problems` with the parsed values. When some fields fail,
pydantic never reaches that validator, so :func:`partial_reference_problems` runs the same
checks on the parts of the raw document that do validate: a type error and a misspelt candidate
name are reported in the same pass instead of one round after the other.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from .config_errors import did_you_mean, env_note
from .routing.registry import StrategyConfig


class StrategySection(Protocol):
    """What these checks need of a strategy's config (every ``routing/*Config`` has it). Read-only
    members, so a config whose ``type`` is a ``Literal`` satisfies ``str``."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def model_fields_set(self) -> set[str]: ...

    def referenced_candidates(self) -> list[tuple[str, str]]: ...

    def always_decides(self) -> str | None: ...


def reference_problems(
    candidates: Collection[str],
    *,
    default: str | None,
    fallbacks: Sequence[str | None],
    candidate_fallbacks: Mapping[str, Sequence[str | None]],
    strategies: Sequence[StrategySection | None],
    env_notes: Mapping[str, str] | None = None,
) -> list[str]:
    """One ``path: message`` line per broken reference. ``None`` stands for a part that did not
    validate (its own error is reported elsewhere): it is skipped, and list positions keep their
    indexes."""
    names = set(candidates)
    known = ", ".join(sorted(names))
    problems: list[str] = []

    def problem(path: str, text: str) -> None:
        note = env_note(path, dict(env_notes or {}))
        problems.append(f"{path}: {text}" + (f" ({note})" if note else ""))

    def check(path: str, value: str | None) -> None:
        if value is not None and value not in names:
            problem(
                path, f"{value!r} is not a candidate{did_you_mean(value, sorted(names))} (known: {known})"
            )

    check("default", default)
    for i, name in enumerate(fallbacks):
        check(f"fallbacks[{i}]", name)
    for cname, chain in candidate_fallbacks.items():
        for i, name in enumerate(chain):
            if name == cname:
                problem(
                    f"candidates.{cname}.fallbacks[{i}]",
                    f"{cname!r} cannot fall back to itself; remove it "
                    "(retries on the same candidate are max_retries)",
                )
            else:
                check(f"candidates.{cname}.fallbacks[{i}]", name)
    first_with_name: dict[str, int] = {}
    for i, strategy in enumerate(strategies):
        if strategy is None:
            continue
        for sub, name in strategy.referenced_candidates():
            check(f"strategies[{i}]{sub}", name)
        j = first_with_name.setdefault(strategy.name, i)
        if j != i:
            unset = "name" not in strategy.model_fields_set
            what = f" (the default name of a {strategy.type} strategy)" if unset else ""
            problem(
                f"strategies[{i}].name",
                f"{strategy.name!r}{what} is already the name of "
                f"strategies[{j}]; give each strategy a unique name",
            )
    return problems


_STRATEGY = TypeAdapter(StrategyConfig)


def _strings(value: Any) -> list[str | None]:
    """A raw YAML list with its non-strings as ``None`` (their type errors are reported already)."""
    return [v if isinstance(v, str) else None for v in value] if isinstance(value, list) else []


def partial_reference_problems(
    data: Mapping[str, Any], env_notes: Mapping[str, str] | None = None
) -> list[str]:
    """:func:`reference_problems` on a raw config document that failed validation, using what
    does validate: candidate names (even of candidates with a bad field), string references, and
    each strategy that validates on its own. Nothing, when the candidates section itself is
    unusable (every reference would be reported against nothing)."""
    raw_candidates = data.get("candidates")
    if not isinstance(raw_candidates, dict) or not raw_candidates:
        return []
    raw_strategies = data.get("strategies")
    strategies: list[StrategySection | None] = []
    for raw in raw_strategies if isinstance(raw_strategies, list) else []:
        try:
            strategies.append(_STRATEGY.validate_python(raw))
        except (ValidationError, ValueError, TypeError):
            strategies.append(None)
    default = data.get("default")
    return reference_problems(
        [str(name) for name in raw_candidates],
        default=default if isinstance(default, str) else None,
        fallbacks=_strings(data.get("fallbacks")),
        candidate_fallbacks={
            str(name): _strings(c.get("fallbacks"))
            for name, c in raw_candidates.items()
            if isinstance(c, dict)
        },
        strategies=strategies,
        env_notes=env_notes,
    )


def never_run_warnings(strategies: Sequence[StrategySection]) -> list[str]:
    """A warning when a strategy that always decides has strategies after it: the pipeline stops
    at the first decision, so those never run. Only the first such strategy is named (everything
    after it is unreachable already)."""
    for i, strategy in enumerate(strategies):
        reason = strategy.always_decides()
        later = strategies[i + 1 :]
        if reason is not None and later:
            names = ", ".join(repr(s.name) for s in later)
            count = (
                "the strategy after it never runs"
                if len(later) == 1
                else f"the {len(later)} strategies after it never run"
            )
            return [
                f"strategies[{i}]: {strategy.name!r} always decides ({reason}), so {count} ({names}); "
                "move it last, or remove what follows it"
            ]
    return []
