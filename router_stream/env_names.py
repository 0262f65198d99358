"""Secrets stay in the environment: checks for the config fields that point at them.

A config names the env var that holds a key (``api_key_env: OPENAI_API_KEY``); it never holds the
key. People still paste the key itself where the name belongs, or put ``user:password@`` into a
URL. These checks refuse both, and their messages never contain the value: an error message
ends up in logs and CI output, which is exactly where a key must not go.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PREFIX = re.compile(r"(sk|pk|rk)[-_]|gh[pousr]_|github_pat_|xox[a-z]-|glpat-|hf_|AKIA|AIza")


def looks_like_env_name(value: str) -> bool:
    """Whether ``value`` reads as an env var NAME rather than a pasted key or password.

    A name is ``[A-Za-z_][A-Za-z0-9_]*``, does not start like a well-known key (``sk-``, ``sk_``,
    ``ghp_``, ``AKIA``, ...) and has no long random-looking word (20+ characters between
    underscores with a digit or mixed case): ``OPENAI_API_KEY`` passes, ``sk-proj-...``,
    ``my-key`` and a 32-character hex string do not.
    """
    if not _ENV_NAME.fullmatch(value) or _KEY_PREFIX.match(value):
        return False
    return not any(len(word) >= 20 and (any(c.isdigit() for c in word) or word not in (word.lower(), word.upper()))
                   for word in value.split("_"))


def check_env_name(value: str | None, secret: str, example: str) -> str | None:
    """The validator of ``*_env`` fields. Its message never contains ``value``: when a user puts
    the secret itself where the variable's name belongs, the error must not print it."""
    if value is not None and not looks_like_env_name(value):
        raise ValueError(f"must be the NAME of an environment variable holding the {secret} (like {example}), "
                         f"not the {secret} itself")
    return value


def check_http_url(value: str) -> str:
    """An ``http(s)://`` URL without credentials in it (``https://user:pass@host``): those belong
    in an env var named by an ``*_env`` field. The message quotes the value only when it has no
    ``@`` (so a URL with credentials is never echoed)."""
    if not re.match(r"^https?://", value):
        shown = repr(value) if "@" not in value else "the value"
        raise ValueError(f"{shown} is not an http(s) URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - validates it: "https://user:pa/ss@host" parses with port "pa"
    except ValueError:
        raise ValueError("not a valid URL (check the host and port)") from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("the URL has credentials in it (user:password@); put the secret in an environment "
                         "variable and name it in api_key_env instead")
    return value
