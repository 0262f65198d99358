"""Config error wording: pydantic's validation errors as one ``path: message`` line each.

Kept apart from the models (:mod:`router_stream.config`): this module knows nothing about our
sections; it walks whatever model it is given. Each line names the field path the way the YAML
reads (``strategies[0].rules[2].then``), says what is wrong in a config author's words (not
pydantic's "Input tag ..." or "Extra inputs are not permitted"), suggests the field that was
probably meant for a misspelt key ("did you mean 'default'?"), names the env var behind a value
that came from the environment, and never echoes a value that is, or may be, a secret.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ValidationError

from .config_sources import kind_of, path_of
from .env_names import is_secret_name, looks_like_secret, url_has_secret

#: validation-context key: ``{field path: "from env var X"}`` (set by ``parse_config``)
ENV_NOTES = "env_notes"


def env_note(path: str, env_notes: dict[str, str]) -> str | None:
    """The note of the env var that set ``path`` or the closest section above it, if any."""
    best = None
    for where in env_notes:
        if (path == where or path.startswith((where + ".", where + "["))) and (
            best is None or len(where) > len(best)
        ):
            best = where
    return env_notes[best] if best is not None else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``"; did you mean 'default'?"`` when one of ``options`` is close to ``word`` (a typo, a
    transposition, another case), else ``""``."""
    options = [o for o in options if o != word]
    by_case = [o for o in options if o.lower() == word.lower()]
    close = by_case or difflib.get_close_matches(word, options, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def is_secret_field(loc: list[Any]) -> bool:
    """Whether a field on the path is named like a secret (``api_key_env``, ``sasl_password_env``,
    ``token``, ``apiKey``, ...): its value is never echoed in an error."""
    return any(isinstance(part, str) and is_secret_name(part) for part in loc)


# ---------------------------------------------------------------- which model sits at a location
def _alternatives(annotation: Any) -> list[Any]:
    """The types an annotation allows, with ``Annotated``, ``Optional`` and unions unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [
            alt for arg in typing.get_args(annotation) if arg is not type(None) for alt in _alternatives(arg)
        ]
    return [annotation]


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _tag(model: Any) -> Any:
    """The ``type:`` value that selects ``model`` in a discriminated union, or None."""
    field = model.model_fields.get("type") if _is_model(model) else None
    if field is not None and typing.get_origin(field.annotation) is Literal:
        return typing.get_args(field.annotation)[0]
    return None


def _field(model: type[BaseModel], name: Any) -> Any:
    for field_name, field in model.model_fields.items():
        if name in (field_name, field.alias):
            return field
    return None


def resolve(root: type[BaseModel], loc: list[Any]) -> tuple[list[Any], list[Any]]:
    """``(types, shown_loc)``: what the schema expects at pydantic's ``loc`` (the alternatives
    of a union; ``[]`` if the walk gets lost), and ``loc`` without the union tags pydantic puts
    in it (``strategies, 0, 'rules', ...`` reads ``strategies[0]...``)."""
    current, shown = [root], []
    for i, part in enumerate(loc):
        alts = [alt for t in current for alt in _alternatives(t)]
        tagged = [alt for alt in alts if _tag(alt) == part] if len(alts) > 1 else []
        if tagged:  # a discriminated union: this part is the tag, not a field
            current = tagged
            continue
        shown.append(part)
        nxt = []
        for alt in alts:
            origin, args = typing.get_origin(alt), typing.get_args(alt)
            if _is_model(alt):
                field = _field(alt, part)
                if field is not None:
                    nxt.append(field.annotation)
            elif origin in (list, tuple, set, frozenset) and args and isinstance(part, int):
                nxt.append(args[0])
            elif origin is dict and len(args) == 2:
                nxt.append(args[1])
        current = nxt
        if not current:
            return [], shown + list(loc[i + 1 :])
    return [alt for t in current for alt in _alternatives(t)], shown


def _field_names(model: type[BaseModel]) -> list[str]:
    """The keys a YAML author writes for ``model`` (aliases where set: ``from``, ``class``)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def _fields_hint(expected: list[Any]) -> str:
    """`` (base_url, model, ...)`` for "expected a mapping": what goes under the section (its
    required fields, else its first ones; for a union selected by ``type``, the fields all share)."""
    models = [t for t in expected if _is_model(t)]
    if not models:
        return ""
    if len(models) > 1:
        common = [n for n in _field_names(models[0]) if all(n in _field_names(m) for m in models[1:])]
        return f" ({', '.join(common[:2])}, ...)" if common else ""
    model = models[0]
    names = [field.alias or name for name, field in model.model_fields.items() if field.is_required()]
    return f" ({', '.join(names or _field_names(model)[:3])}, ...)"


# ---------------------------------------------------------------- one error, one line
def _reworded(
    err: Any, loc: list[Any], path: str, expected: list[Any], parent: list[Any]
) -> tuple[str, str] | None:
    """``(path, message)`` in our words for pydantic errors whose own text means nothing to a config
    author, chosen by error ``type`` (not message text); ``None`` keeps pydantic's message."""
    kind, ctx = err["type"], err.get("ctx") or {}
    is_strategy = len(loc) == 2 and loc[0] == "strategies"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "type")).strip("'")
        if kind == "union_tag_not_found":
            known = ", ".join(str(tag) for tag in (_tag(t) for t in expected) if tag is not None)
            return f"{path}.{field}", "missing" + (f"; give one of: {known}" if known else "")
        known = str(ctx.get("expected_tags", "")).replace("'", "")
        what = f"strategy {field}" if is_strategy else field
        return f"{path}.{field}", f"unknown {what} {ctx.get('tag')!r} (known: {known})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return path, f"expected a mapping{_fields_hint(expected)}, got {kind_of(err.get('input'))}"
    if kind == "list_type":
        return path, f"expected a list, got {kind_of(err.get('input'))}"
    if kind == "extra_forbidden":
        if is_secret_field(loc[-1:]):
            return path, (
                "unknown field; secrets never go in the config file: put the value in an environment "
                "variable and give that variable's name (e.g. api_key_env: OPENAI_API_KEY)"
            )
        allowed = [name for model in parent if _is_model(model) for name in _field_names(model)]
        hint = did_you_mean(str(loc[-1]), allowed)
        return path, "unknown field" + (hint or (f" (allowed: {', '.join(allowed)})" if allowed else ""))
    return None


def _shows_input(err: Any, msg: str, loc: list[Any]) -> bool:
    """Whether "(got ...)" adds something: not for missing fields or whole sections, not when the
    message already quotes the input, and never for a secret-named field or a value that looks
    like a key, or a URL with a key or credentials in it."""
    if err["type"] == "missing" or "input" not in err or is_secret_field(loc):
        return False
    value = err["input"]
    if isinstance(value, (dict, list)):
        return False  # a whole section
    if isinstance(value, str) and ("@" in value or looks_like_secret(value) or url_has_secret(value)):
        return False
    return not (isinstance(value, str) and (repr(value) in msg or f'"{value}"' in msg))


def format_validation(
    exc: ValidationError, root: type[BaseModel], env_notes: dict[str, str] | None = None
) -> list[str]:
    """One ``path: message`` line per error of ``exc`` (raised validating ``root``).
    ``env_notes`` ({path: "from env var X"}) names the env var behind a value, or behind a
    section it created."""
    lines = []
    for err in exc.errors():
        expected, loc = resolve(root, list(err["loc"]))
        path = path_of(loc)
        reworded = _reworded(err, loc, path, expected, resolve(root, list(err["loc"])[:-1])[0])
        if reworded is not None:
            path, msg = reworded
            notes = []
        else:
            msg = err["msg"].removeprefix("Value error, ")
            notes = [f"got {err['input']!r}"] if _shows_input(err, msg, loc) else []
        note = env_note(path, env_notes or {})
        notes += [note] if note else []
        lines.append(f"{path or '<root>'}: {msg}" + (f" ({', '.join(notes)})" if notes else ""))
    return lines
