"""Refuse regexes whose shape invites catastrophic backtracking, at config load.

Python's ``re`` has no timeout, and a regex configured by an operator runs over text a user (or
a model) wrote: one pattern like ``(a+)+$`` or ``(a|aa)+$`` on a few dozen characters of the
wrong input blocks the worker's event loop for seconds or years. :func:`check_regex` compiles a
pattern and refuses the two usual shapes, found on the parser's tree (``re._parser``):

* a **nested quantifier**: an unbounded repeat whose body can match by a repeat alone
  (``(a+)+``, ``(\\w+\\s?)*``, ``(a|b+)+``);
* a **repeated ambiguous choice**: inside an unbounded repeat, a choice whose alternatives can
  start with the same character, or can both match empty, where an empty alternative starts with
  whatever follows (``(a|a)*``, ``(a|aa)+``, ``(.|\\s)*``). The parser has already factored
  common prefixes out (``(a|ab)`` is ``a(?:|b)``, which is fine) and turned single-character
  choices into sets (``(\\w|\\d)`` is ``[\\w\\d]``, also fine).

Both are heuristics over first characters (computed over Latin-1 plus a few wider characters),
erring towards refusing; a possessive repeat (``*+``, ``++``) or an atomic group does not
backtrack and passes. Callers still cap the scanned text: even a merely quadratic pattern costs
seconds on a megabyte. Used by the ``keywords`` strategy and the cascade's ``regex`` validator.
"""

from __future__ import annotations

import re
from re import _constants as _sre  # type: ignore[attr-defined]
from re import _parser as _sre_parse  # type: ignore[attr-defined]
from typing import Any

_UNBOUNDED_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT)


def _loose(items: Any) -> bool:
    """True when ``items`` can match by an unbounded repeat alone (everything else optional)."""
    has_repeat = False
    for op, av in items:
        if op is _sre.SUBPATTERN:
            if _loose(av[-1]):
                has_repeat = True
            elif av[-1].getwidth()[0] != 0:
                return False
        elif op in _UNBOUNDED_REPEATS or op is _sre.POSSESSIVE_REPEAT:
            lo, hi, _sub = av
            if hi == _sre.MAXREPEAT and op is not _sre.POSSESSIVE_REPEAT:
                has_repeat = True
            elif lo != 0:
                return False
        elif op is _sre.BRANCH:
            if any(_loose(branch) for branch in av[1]):
                has_repeat = True
            else:
                return False
        elif op is _sre.AT:
            continue
        else:
            return False
    return has_repeat


def _children(op: Any, av: Any) -> list[Any]:
    """The item sequences inside one parsed item: a repeat's body, a group's or an assertion's
    contents, the alternatives of a choice or a conditional. Empty for a leaf."""
    if op in _UNBOUNDED_REPEATS or op is _sre.POSSESSIVE_REPEAT:
        return [av[2]]
    if op is _sre.SUBPATTERN:
        return [av[-1]]
    if op is _sre.ATOMIC_GROUP:
        return [av]
    if op is _sre.ASSERT or op is _sre.ASSERT_NOT:
        return [av[1]]
    if op is _sre.BRANCH:
        return list(av[1])
    if op is _sre.GROUPREF_EXISTS:
        return [b for b in av[1:] if b is not None]
    return []


def _nested_repeat(items: Any) -> bool:
    """True when an unbounded, backtracking repeat's body is itself a loose repeat."""
    for op, av in items:
        if op in _UNBOUNDED_REPEATS and av[1] == _sre.MAXREPEAT and _loose(av[2]):
            return True
        if any(_nested_repeat(sub) for sub in _children(op, av)):
            return True
    return False


#: characters a first-character set is computed over: Latin-1 plus a few wider ones (a
#: heuristic: two alternatives that share none of these rarely share any other first character)
_PROBE = frozenset(map(chr, range(256))) | frozenset("\u0394\u0416\u4e00\u2028\u3000\u00e9\U0001f600")
_CATEGORIES = {
    name: re.compile(rx)
    for name, rx in [
        ("CATEGORY_DIGIT", r"\d"),
        ("CATEGORY_NOT_DIGIT", r"\D"),
        ("CATEGORY_SPACE", r"\s"),
        ("CATEGORY_NOT_SPACE", r"\S"),
        ("CATEGORY_WORD", r"\w"),
        ("CATEGORY_NOT_WORD", r"\W"),
    ]
}


def _cased(c: str, ignorecase: bool) -> frozenset[str]:
    return frozenset((c, c.lower(), c.upper())) if ignorecase else frozenset(c)


def _charset(entries: Any, ignorecase: bool) -> frozenset[str]:
    """The probe characters an ``IN`` set (``[...]``, ``\\d``) matches."""
    chars: set[str] = set()
    negate = False
    for op, av in entries:
        if op is _sre.NEGATE:
            negate = True
        elif op is _sre.LITERAL:
            chars |= _cased(chr(av), ignorecase)
        elif op is _sre.RANGE:
            chars |= {c for c in _PROBE if av[0] <= ord(c) <= av[1]}
        elif op is _sre.CATEGORY and str(av) in _CATEGORIES:
            rx = _CATEGORIES[str(av)]
            chars |= {c for c in _PROBE if rx.match(c)}
        else:
            return _PROBE  # unknown: assume anything
    return frozenset(_PROBE - chars) if negate else frozenset(chars)


def _first(items: Any, dotall: bool, ignorecase: bool = True) -> tuple[frozenset[str], bool]:
    """(probe characters a match of ``items`` can start with, whether it can match empty)."""
    first: set[str] = set()
    for op, av in items:
        if op is _sre.LITERAL:
            f, nullable = _cased(chr(av), ignorecase), False
        elif op is _sre.NOT_LITERAL:
            f, nullable = _PROBE - {chr(av)}, False
        elif op is _sre.ANY:
            f, nullable = (_PROBE if dotall else _PROBE - {"\n"}), False
        elif op is _sre.IN:
            f, nullable = _charset(av, ignorecase), False
        elif op is _sre.SUBPATTERN:
            f, nullable = _first(av[-1], dotall, ignorecase)
        elif op is _sre.ATOMIC_GROUP:
            f, nullable = _first(av, dotall, ignorecase)
        elif op in _UNBOUNDED_REPEATS or op is _sre.POSSESSIVE_REPEAT:
            f, nullable = _first(av[2], dotall, ignorecase)
            nullable = nullable or av[0] == 0
        elif op is _sre.BRANCH:
            parts = [_first(branch, dotall, ignorecase) for branch in av[1]]
            f = frozenset().union(*(p[0] for p in parts))
            nullable = any(p[1] for p in parts)
        elif op in (_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT):
            f, nullable = frozenset(), True  # zero-width
        else:  # back references, conditionals: could start with anything
            f, nullable = _PROBE, True
        first |= f
        if not nullable:
            return frozenset(first), False
    return frozenset(first), True


def _overlapping(branches: Any, dotall: bool, follow: frozenset[str], ignorecase: bool) -> bool:
    """True when two alternatives can start alike: an alternative that can match empty starts
    with whatever follows the choice (``follow``). The parser has factored common prefixes out
    by then: ``(a|a)`` is ``a(?:|)``, ``(a|aa)`` is ``a(?:|a)``, ``(a|ab)`` is ``a(?:|b)``."""
    seen: set[str] = set()
    empties = 0
    for branch in branches:
        first, nullable = _first(branch, dotall, ignorecase)
        if nullable:
            empties += 1
            first = first | follow
        if seen & first or empties > 1:
            return True
        seen |= first
    return False


def _ambiguous_repeat(
    items: Any,
    dotall: bool,
    repeated: bool = False,
    follow: frozenset[str] = frozenset(),
    ignorecase: bool = True,
) -> bool:
    """True when a choice inside an unbounded, backtracking repeat has :func:`_overlapping`
    alternatives (``(a|a)*``, ``(a|aa)+``): each iteration can then match in several ways, and a
    failing match tries them all. ``follow``: what can come right after ``items`` (inside a repeat,
    the next iteration). Atomic groups and possessive repeats do not backtrack."""
    for i, (op, av) in enumerate(items):
        subs = _children(op, av)
        if not subs:
            continue
        rest, rest_nullable = _first(items[i + 1 :], dotall, ignorecase)
        after = rest | follow if rest_nullable else rest
        if op is _sre.BRANCH and repeated and _overlapping(av[1], dotall, after, ignorecase):
            return True
        inner, sub_follow = repeated, after
        if op in _UNBOUNDED_REPEATS and av[1] == _sre.MAXREPEAT:  # the next iteration follows the body
            inner, sub_follow = True, _first(av[2], dotall, ignorecase)[0] | after
        elif op is _sre.POSSESSIVE_REPEAT or op is _sre.ATOMIC_GROUP:  # no backtracking into them
            inner = False
        elif op is _sre.ASSERT or op is _sre.ASSERT_NOT:  # zero-width: nothing follows inside
            sub_follow = frozenset()
        if any(_ambiguous_repeat(sub, dotall, inner, sub_follow, ignorecase) for sub in subs):
            return True
    return False


def check_regex(pattern: str, ignorecase: bool = True) -> str:
    """Compile ``pattern`` or raise ``ValueError`` saying what is wrong with it.

    ``ignorecase``: the pattern may run case-insensitively (the keyword rules' default), so ``a``
    and ``A`` start alike; ``False`` unless the pattern itself says ``(?i)``."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    parsed = _sre_parse.parse(pattern)
    if _nested_repeat(parsed):
        raise ValueError(
            f"regex {pattern!r} repeats a group that itself repeats (nested quantifier), which can "
            "backtrack catastrophically; rewrite it (e.g. 'a+' for '(a+)+', '(\\w+\\s)*' for "
            "'(\\w+\\s?)*') or make the outer repeat possessive ('++', '*+')"
        )
    flags = parsed.state.flags
    if _ambiguous_repeat(
        parsed, bool(flags & re.DOTALL), ignorecase=ignorecase or bool(flags & re.IGNORECASE)
    ):
        raise ValueError(
            f"regex {pattern!r} repeats a choice whose alternatives can match the same text "
            "(e.g. '(a|a)*', '(a|aa)+'), which can backtrack catastrophically; make the alternatives "
            "exclusive ('a+' for '(a|aa)+'), or the repeat possessive ('*+', '++')"
        )
    return pattern
