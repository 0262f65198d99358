"""Values of a candidate's ``headers:`` and ``query:`` maps: a literal, or ``{env: NAME}``.

Gateways and some providers need extra HTTP headers or query parameters, and some of those are
credentials (``Authorization``, ``api-key``, ``?key=``). A credential must come from the
environment, so a value is either

* a literal string, for things that are not secret (``anthropic-beta: prompt-caching-2024-07-31``,
  ``X-Team: search``), or
* ``{env: NAME}``: the value of env var ``NAME``, read on every call (a rotated secret is picked up
  without a restart). When the variable is unset the header or parameter is left out and
  ``check-config`` warns, as it does for ``api_key_env``.

A literal is refused at config load when the header or parameter is named like a credential
(``authorization``, ``api-key``, ``x-api-key``, ``token``, ``sig``, ...) or when the value looks like
one (:func:`looks_like_secret`). No error message contains the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from .env_names import check_env_name

#: starts like a well-known key (the same list as ``env_names``' check of ``*_env`` fields)
_KEY_PREFIX = re.compile(r"(sk|pk|rk)[-_]|gh[pousr]_|github_pat_|xox[a-z]-|glpat-|hf_|AKIA|AIza")
#: a run of token characters long enough to be a key: base64/hex/JWT segments, no word separators
_TOKEN_RUN = re.compile(r"[A-Za-z0-9+/=_]{20,}")
_AUTH_SCHEME = re.compile(r"(bearer|basic|token|digest)\s+\S", re.IGNORECASE)

#: words that make a header / parameter name a credential (matched as whole words of the name)
_CREDENTIAL_WORDS = frozenset(
    {
        "authorization",
        "auth",
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "cookie",
        "signature",
        "sig",
        "credential",
        "credentials",
        "bearer",
    }
)
#: headers the HTTP client sets itself
_TRANSPORT_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding", "connection"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


class EnvRef(BaseModel):
    """``{env: NAME}``: the value is read from env var ``NAME`` at call time."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    env: str

    @field_validator("env")
    @classmethod
    def _is_a_name(cls, v: str) -> str:
        check_env_name(v, "secret", "GATEWAY_TOKEN")
        return v

    def __str__(self) -> str:
        return f"{{env: {self.env}}}"


ConfigValue = str | EnvRef


def looks_like_secret(value: str) -> bool:
    """Whether a literal header or query value reads like a credential.

    True for values that start like a well-known key (``sk-``, ``ghp_``, ``AKIA``, ...), carry an
    auth scheme (``Bearer …``, ``Basic …``), or hold a long random-looking run (20+ characters of
    base64/hex with both letters and digits, or 32+ with mixed case): ``sk-ant-api03-…``, a JWT,
    a 32-character hex key. Ordinary values such as ``application/json``, ``2023-06-01`` or
    ``prompt-caching-2024-07-31`` (hyphens split the runs) are not.
    """
    text = value.strip()
    if _KEY_PREFIX.match(text) or _AUTH_SCHEME.match(text):
        return True
    for run in _TOKEN_RUN.findall(text):
        letters, digits = any(c.isalpha() for c in run), any(c.isdigit() for c in run)
        mixed_case = run not in (run.lower(), run.upper())
        if (letters and digits) or (len(run) >= 32 and mixed_case):
            return True
    return False


def is_credential_name(name: str) -> bool:
    """Whether a header or parameter name reads like a credential (``X-Api-Key``, ``apiKey``, ``sig``)."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    return bool(_CREDENTIAL_WORDS.intersection(words)) or "apikey" in name.lower().replace("-", "").replace(
        "_", ""
    )


def _parse_map(value: Any, what: str, example: str) -> dict[str, ConfigValue]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of {what} names to values (like {example})")
    out: dict[str, ConfigValue] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} names must be non-empty strings")
        if isinstance(raw, EnvRef):
            out[name] = raw
        elif isinstance(raw, Mapping):
            if set(raw) != {"env"} or not isinstance(raw["env"], str):
                raise ValueError(f"{name}: an env reference is written {{env: NAME}} (only the key 'env')")
            try:
                out[name] = EnvRef(env=raw["env"])
            except ValueError:
                raise ValueError(
                    f"{name}: env must be the NAME of an environment variable holding the secret "
                    "(like GATEWAY_TOKEN), not the secret itself"
                ) from None
        elif isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            text = str(raw)
            if is_credential_name(name):
                raise ValueError(
                    f"{name}: a credential cannot be written into the config; put it in an "
                    f"environment variable and write {name}: {{env: NAME}} (the value is not shown)"
                )
            if looks_like_secret(text):
                raise ValueError(
                    f"{name}: the value looks like a secret (a key or token); put it in an environment "
                    f"variable and write {name}: {{env: NAME}} (the value is not shown)"
                )
            out[name] = text
        else:
            raise ValueError(f"{name}: expected a string or {{env: NAME}}")
    return out


def parse_headers(value: Any) -> dict[str, ConfigValue]:
    """The validated ``headers:`` map (see the module doc); raises ``ValueError`` naming the header."""
    headers = _parse_map(value, "header", "{X-Team: search, Authorization: {env: GATEWAY_TOKEN}}")
    seen: set[str] = set()
    for name in headers:
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if name.lower() in _TRANSPORT_HEADERS:
            raise ValueError(f"{name}: set by the HTTP client itself; remove it")
        if name.lower() in seen:
            raise ValueError(f"{name}: given twice (header names are case-insensitive)")
        seen.add(name.lower())
        if isinstance(headers[name], str) and ("\n" in headers[name] or "\r" in headers[name]):
            raise ValueError(f"{name}: a header value cannot contain a line break")
    return headers


def parse_query(value: Any) -> dict[str, ConfigValue]:
    """The validated ``query:`` map (see the module doc); raises ``ValueError`` naming the parameter."""
    return _parse_map(value, "query parameter", "{team: search, key: {env: GATEWAY_KEY}}")


def resolve(
    values: Mapping[str, ConfigValue], environ: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """``[(name, value)]`` with env references read now; a reference to an unset (or empty) env
    var is left out. The result holds secrets: send it, never log or store it."""
    env = os.environ if environ is None else environ
    out = []
    for name, value in values.items():
        if isinstance(value, EnvRef):
            got = env.get(value.env)
            if got:
                out.append((name, got))
        else:
            out.append((name, value))
    return out


def env_refs(values: Mapping[str, ConfigValue]) -> list[tuple[str, str]]:
    """``[(name, ENV_NAME)]`` of the values that come from the environment (for unset-var warnings)."""
    return [(name, v.env) for name, v in values.items() if isinstance(v, EnvRef)]
