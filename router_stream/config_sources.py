"""Where a config comes from: the YAML file and the environment overrides.

Kept apart from :mod:`router_stream.config` (the models and their error messages) because
neither depends on the models: the YAML loader refuses duplicate keys and never quotes a line
back (it may hold a pasted secret); the env overrides put each ``ROUTER_STREAM__A__B=value`` at
its path and remember which env var set what, so an error can name it.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError


def path_of(loc: list[Any]) -> str:
    """``["strategies", 1, "rules", 0]`` -> ``strategies[1].rules[0]``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + str(part)
    return path


def kind_of(value: Any) -> str:
    """What a YAML author wrote, in their words (not Python type names)."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true/false"
    for types, word in ((str, "a string"), ((int, float), "a number"), (list, "a list"), (dict, "a mapping")):
        if isinstance(value, types):
            return word
    return type(value).__name__


# ---------------------------------------------------------------- YAML
class DuplicateKeyError(ConfigError, yaml.YAMLError):
    """A YAML mapping names one key twice; the message gives both line numbers."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` keeps the last of two equal keys in a mapping, so a second
    ``strategies:`` block or a second candidate ``cheap:`` silently replaced the first. This loader
    refuses them, naming the key and both lines. Keys brought in by a ``<<: *anchor`` merge may
    still be overridden (that is what merges are for): only the mapping's own keys are compared."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node:
                raise DuplicateKeyError(
                    f"line {key_node.start_mark.line + 1}: duplicate key {key!r} (first at line "
                    f"{first.start_mark.line + 1}); a key may appear once in a mapping: merge the two or remove one"
                )
        return super().construct_mapping(node, deep)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint with line and column but without the text of the line (PyYAML's own
    message quotes it, and the line may hold a secret pasted by mistake)."""
    mark = getattr(exc, "problem_mark", None)
    text = getattr(exc, "problem", None) or type(exc).__name__
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + text + (f" ({context})" if context else "")


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)


# ---------------------------------------------------------------- environment overrides
_ENV_PREFIX = "ROUTER_STREAM__"


def _env_key(node: dict[Any, Any], word: str, env_name: str, path: str) -> Any:
    """The key of ``node`` that the lower-cased env word names. Env var names are upper-case, so
    keys match case-insensitively (``MYMODEL`` is candidate ``myModel``, not a new ``mymodel``);
    two keys differing only in case make the override ambiguous."""
    matches = [k for k in node if isinstance(k, str) and k.lower() == word]
    if len(matches) > 1:
        raise ConfigError(
            f"{env_name}: ambiguous: {path or 'the top level'} has the keys "
            f"{', '.join(map(repr, matches))}, which differ only in case, and env var names "
            "are upper-case; rename one of them or set the value in the file"
        )
    return matches[0] if matches else word


def _set_from_env(
    data: dict[str, Any], words: list[str], value: Any, env_name: str, env_notes: dict[str, str]
) -> None:
    """Put ``value`` at the path spelt by ``words`` (lower-case) and record in ``env_notes`` which
    env var set it, and which sections it created (a misspelt name invents one, and the error then
    says where it came from). A number indexes an existing list; a missing or empty section is
    created; a path through a single value is an error (before, it was silently ignored)."""
    node: Any = data
    loc: list[Any] = []
    for i, word in enumerate(words):
        where = path_of(loc) or "the top level"
        if isinstance(node, list):
            if not (word.isdigit() and int(word) < len(node)):
                indexes = f"its indexes are 0 to {len(node) - 1}" if node else "it is empty"
                raise ConfigError(
                    f"{env_name}: {where} is a list and {word!r} is not one of its indexes ({indexes})"
                )
            key: Any = int(word)
        elif isinstance(node, dict):
            key = _env_key(node, word, env_name, path_of(loc))
        else:
            raise ConfigError(
                f"{env_name}: {where} is a single value ({kind_of(node)}), not a section with "
                f"a field {word!r}; fix the env var's name"
            )
        loc.append(key)
        if i == len(words) - 1:
            node[key] = value
            env_notes[path_of(loc)] = f"from env var {env_name}"
        else:
            if (isinstance(node, dict) and key not in node) or node[key] is None:
                node[key] = {}
                env_notes.setdefault(path_of(loc), f"{path_of(loc)} was created by env var {env_name}")
            node = node[key]


def _env_value(env_name: str, text: str) -> Any:
    """An env value parsed as YAML (``7`` is a number, ``[a, b]`` a list), as before; a value that
    does not parse is a config error naming the variable, without echoing the value."""
    try:
        return load_yaml(text)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{env_name}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{env_name}: the value is not valid YAML ({yaml_problem(exc)}); "
            "quote it if it is meant as a plain string"
        ) from None


#: env vars with a short name: (names, the first set one wins), section, field
SHORT_FORMS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("ROUTER_STREAM_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"), "kafka", "bootstrap_servers"),
    (("ROUTER_STREAM_GROUP_ID",), "kafka", "group_id"),
    (("ROUTER_STREAM_WORKER_ID",), "worker", "worker_id"),
    (("ROUTER_STREAM_METRICS_PORT",), "worker", "metrics_port"),
    (("ROUTER_STREAM_STATE_DIR",), "cache", "state_dir"),
)


def apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """Apply the env overrides to ``data`` in place; return {field path: note naming the env var}
    for error messages. The short forms go first, then the ``ROUTER_STREAM__`` paths in name order
    (a section before its fields, and the same result whatever the order of ``environ``)."""
    env_notes: dict[str, str] = {}
    for names, section, field in SHORT_FORMS:  # taken as strings, not parsed as YAML
        name = next((n for n in names if environ.get(n)), None)
        if name is not None:
            _set_from_env(data, [section, field], environ[name], name, env_notes)
    for name in sorted(n for n in environ if n.startswith(_ENV_PREFIX)):
        words = [w.lower() for w in name.removeprefix(_ENV_PREFIX).split("__") if w]
        if words:
            _set_from_env(data, words, _env_value(name, environ[name]), name, env_notes)
    return env_notes
