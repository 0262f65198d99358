"""Secrets stay in the environment: checks for the config fields that point at them.

A config names the env var that holds a key (``api_key_env: OPENAI_API_KEY``); it never holds the
key. People still paste the key itself where the name belongs, or put it into a URL
(``user:password@``, ``?api_key=sk-...``, ``/sk-.../``). These checks refuse both, and their
messages never contain the value: an error message ends up in logs and CI output, which is
exactly where a key must not go.

Public helpers for other checks: :func:`looks_like_secret` (is this value a key, token or
password rather than a plain word?) and :func:`is_secret_name` (is this field or parameter
*named* like a secret?).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PREFIX = re.compile(r"(sk|pk|rk)[-_]|gh[pousr]_|github_pat_|xox[a-z]-|glpat-|hf_|AKIA|AIza")
_AUTH_SCHEME = re.compile(r"(?i)(bearer|basic|token|apikey)\s+[^\s$%{]")  # not "Bearer ${VAR}"
_TOKEN_SPLIT = re.compile(r"[\s/?&=#,;:@\"'()<>\[\]{}]+")
_SECRET_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "secrets",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "bearer",
        "cookie",
        "passphrase",
        "sig",
        "signature",
    }
)


def is_secret_name(name: str) -> bool:
    """Whether a field, header or query-parameter NAME says its value is a secret (``api_key``,
    ``sasl_password_env``, ``apiKey``, ``x-api-key``, ``access_token``, ``sig``). Whole words only,
    so ``keywords``, ``max_tokens`` and ``tokens_per_minute`` are not."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    return bool(_SECRET_WORDS.intersection(words))


def _random_looking(token: str, *, single_case: bool) -> bool:
    """A long token of letters and digits that reads as random: 20+ characters with upper case,
    lower case and digits (base62/base64 keys, JWTs); with ``single_case``, also 32+ characters of
    one case with letters and digits (hex keys, lowercase keys)."""
    core = token.replace("-", "").replace("_", "").replace(".", "").rstrip("=")
    if not core.isalnum() or not core.isascii() or not any(c.isdigit() for c in core):
        return False
    if len(core) >= 20 and any(c.islower() for c in core) and any(c.isupper() for c in core):
        return True
    return single_case and len(core) >= 32 and any(c.isalpha() for c in core)


def _prefixed_key(token: str) -> bool:
    """``sk-...``, ``ghp_...``, ``AKIA...``: a well-known key prefix followed by enough characters."""
    return len(token) >= 16 and _KEY_PREFIX.match(token) is not None


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` holds something that reads as a key, token or password.

    True for an auth scheme with a credential (``Bearer ...``, ``Basic ...``), and for any word
    (split at spaces and URL punctuation) that starts like a well-known key (``sk-``, ``ghp_``,
    ``AKIA``, ``AIza``, ...) or looks random (20+ letters and digits in mixed case, or 32+ in one
    case, like a hex key). Plain words, model names (``gpt-4o-2024-08-06``), version strings and
    ``${ENV}`` references are not. Use it to refuse a value written literally where a secret
    belongs (a header, a URL) and to decide whether an error may quote a value.
    """
    text = value.strip()
    if _AUTH_SCHEME.match(text):
        return True
    return any(
        _prefixed_key(tok) or _random_looking(tok, single_case=True) for tok in _TOKEN_SPLIT.split(text)
    )


def looks_like_env_name(value: str) -> bool:
    """Whether ``value`` reads as an env var NAME rather than a pasted key or password.

    A name is ``[A-Za-z_][A-Za-z0-9_]*``, does not start like a well-known key (``sk-``, ``sk_``,
    ``ghp_``, ``AKIA``, ...) and has no long random-looking word (20+ characters between
    underscores with a digit or mixed case): ``OPENAI_API_KEY`` passes, ``sk-proj-...``,
    ``my-key`` and a 32-character hex string do not.
    """
    if not _ENV_NAME.fullmatch(value) or _KEY_PREFIX.match(value):
        return False
    return not any(
        len(word) >= 20 and (any(c.isdigit() for c in word) or word not in (word.lower(), word.upper()))
        for word in value.split("_")
    )


def check_env_name(value: str | None, secret: str, example: str) -> str | None:
    """The validator of ``*_env`` fields. Its message never contains ``value``: when a user puts
    the secret itself where the variable's name belongs, the error must not print it."""
    if value is not None and not looks_like_env_name(value):
        raise ValueError(
            f"must be the NAME of an environment variable holding the {secret} (like {example}), "
            f"not the {secret} itself"
        )
    return value


_PUT_IT_IN_ENV = "put the key in an environment variable and name it in api_key_env instead"


def _url_secret(parts: SplitResult) -> str | None:
    """Where in the URL a secret sits (for the message; the value itself is never quoted)."""
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return (
            "the URL has credentials in it (user:password@); put the secret in an environment "
            "variable and name it in api_key_env instead"
        )
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        plain_name = re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", name) is not None and not looks_like_secret(name)
        secret_named = is_secret_name(name) and len(value) >= 8 and not value.isdigit()
        if not plain_name or secret_named or looks_like_secret(value):
            where = f"parameter {name!r}" if plain_name else "a parameter"
            return f"the URL has a key-like value in its query string ({where}); {_PUT_IT_IN_ENV}"
    for i, segment in enumerate(s for s in parts.path.split("/") if s):
        segment = unquote(segment)
        # no single-case rule here: a hex account id in a gateway path is not a key
        if (
            _AUTH_SCHEME.match(segment)
            or _prefixed_key(segment)
            or _random_looking(segment, single_case=False)
        ):
            return f"the URL has a key-like value in its path (segment {i + 1}); {_PUT_IT_IN_ENV}"
    if parts.fragment and looks_like_secret(unquote(parts.fragment)):
        return f"the URL has a key-like value after '#'; {_PUT_IT_IN_ENV}"
    return None


def url_has_secret(value: str) -> bool:
    """Whether ``value``, read as a URL, has a secret in any part (what :func:`check_http_url`
    refuses): an error about such a value must not quote it."""
    try:
        return _url_secret(urlsplit(value)) is not None
    except ValueError:
        return True  # unparsable: do not risk quoting it


def check_http_url(value: str) -> str:
    """An ``http(s)://`` URL with no secret in any part of it: not ``https://user:pass@host``, not
    ``?api_key=sk-...`` or ``?key=AIza...``, not ``/sk-.../`` in the path. Those belong in an env
    var named by an ``*_env`` field. The message names the part, never the value; it quotes a
    value that is not a URL only when nothing in it could be a secret."""
    if not re.match(r"^https?://", value):
        shown = repr(value) if "@" not in value and not looks_like_secret(value) else "the value"
        raise ValueError(f"{shown} is not an http(s) URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - validates it: "https://user:pa/ss@host" parses with port "pa"
    except ValueError:
        raise ValueError("not a valid URL (check the host and port)") from None
    problem = _url_secret(parts)
    if problem is not None:
        raise ValueError(problem)
    return value
