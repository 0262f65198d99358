"""Configuration: one YAML file validated by pydantic, with environment overrides.

Load with :func:`load_config`. Every error names the path of the bad field and the bad value,
in the shape ``strategies[0].rules[2].then: 'smartt' is not a candidate (known: cheap, smart)``,
so a user can fix the file without reading our code.

Environment overrides (highest precedence): ``ROUTER_STREAM_BOOTSTRAP_SERVERS`` (or
``KAFKA_BOOTSTRAP_SERVERS``), ``ROUTER_STREAM_GROUP_ID``, ``ROUTER_STREAM_WORKER_ID``,
``ROUTER_STREAM_METRICS_PORT``, and any dotted path with ``ROUTER_STREAM__`` and ``__`` as
separator, e.g. ``ROUTER_STREAM__CANDIDATES__CHEAP__BASE_URL=http://...`` (the words match
existing keys case-insensitively, a number indexes a list: ``ROUTER_STREAM__STRATEGIES__0__NAME``).
An error caused by an env value names the env var.
API keys are never in the file: a candidate names the env var that holds its key, and no error
echoes the value of a field whose name suggests a secret (see :func:`_is_secret_field`).
"""

from __future__ import annotations

import copy
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .config_sources import DuplicateKeyError, apply_env, kind_of, load_yaml, path_of, yaml_problem
from .env_names import check_env_name, check_http_url
from .errors import ConfigError
from .routing.config import StrategyConfig
from .routing.expressions import Expression, ExpressionError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BreakerConfig(_Strict):
    """Circuit breaker per candidate: open after ``failure_threshold`` failures in ``window_s``."""

    failure_threshold: int = Field(5, ge=1)
    window_s: float = Field(30.0, gt=0)
    cooldown_s: float = Field(10.0, gt=0)


class RateLimitConfig(_Strict):
    """Token-bucket budgets; on exhaustion wait up to ``max_wait_ms`` then fall back."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    max_wait_ms: int = Field(0, ge=0)


class BatchResponseConfig(_Strict):
    """Where the answers sit in a batched reply (issue names ``response.format`` / ``.path`` /
    ``.index.field`` / ``.value.field``); see ``docs/micro-batching.md``."""

    format: Literal["json", "xml", "delimited"] = "json"
    path: str | None = Field(None, description="json: JSONPath to the answers (default $.results); "
                                               "xml: ElementTree XPath to the item elements (default ./item)")
    index_field: str = Field("index", description="json key / xml child tag or @attribute holding the record index")
    value_field: str = Field("value", description="json key / xml child tag, @attribute or '.' holding the answer")
    delimiter: str = Field("\n", min_length=1, description="delimited: between entries")
    field_delimiter: str = Field("|", min_length=1, description="delimited: between index and answer")

    @model_validator(mode="after")
    def _shape(self) -> "BatchResponseConfig":
        if self.format == "json" and self.path is not None and not self.path.startswith("$"):
            raise ValueError(f"path {self.path!r}: a JSONPath starts with '$'")
        if self.format == "delimited" and self.field_delimiter in self.delimiter:
            raise ValueError("field_delimiter must not occur in delimiter")
        return self


class BatchConfig(_Strict):
    """Prompt micro-batching per candidate: ``size`` > 1 folds concurrent calls into one prompt."""

    size: int = Field(1, ge=1, le=1000, description="records per model call; 1 = off")
    timeout_ms: int = Field(50, ge=0, description="flush a partial batch this long after its first record")
    system_prompt: str | None = Field(None, description="placeholders {count} and {format_instructions}; "
                                                        "None = the built-in instructions")
    prompt_template: str = Field('<record index="{index}">\n{content}\n</record>',
                                 description="one record; placeholders {index} and {content}")
    response: BatchResponseConfig = Field(default_factory=BatchResponseConfig)
    on_parse_error: Literal["individual", "error"] = "individual"
    on_missing: Literal["individual", "error"] = "individual"
    max_retries: int = Field(1, ge=0, le=20, description="retries of the batched call itself")
    request_timeout_ms: int | None = Field(None, ge=1, description="per batched call; None = the candidate's")

    @field_validator("prompt_template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        for name in ("{index}", "{content}"):
            if name not in v:
                raise ValueError(f"prompt_template needs the placeholder {name}")
        return v


class BatchAPIConfig(_Strict):
    """OpenAI-style Batch API (``/v1/files`` + ``/v1/batches``) for a candidate with ``mode: batch``.

    Not prompt micro-batching (that is ``batch``, :class:`BatchConfig`); see ``docs/batch-api.md``."""

    max_records: int = Field(1000, ge=1, le=50_000, description="records per batch job")
    max_wait_ms: int = Field(5000, ge=0, description="submit a partial job this long after its first record")
    poll_interval_ms: int = Field(2000, ge=1, description="time between status polls of a submitted job")
    discount: float = Field(0.5, ge=0, le=1, description="price multiplier of batch calls (0.5 = half price)")
    completion_window: str = Field("24h", pattern=r"^[1-9][0-9]*[hd]$", description="the provider's window, e.g. 24h")
    endpoint: str = Field("/v1/chat/completions", pattern=r"^/", description="the url of every JSONL line")
    request_timeout_ms: int | None = Field(None, ge=1, description="per files/batches HTTP call; None = the candidate's")


class CandidateConfig(_Strict):
    """One model endpoint speaking OpenAI-compatible chat completions."""

    base_url: str
    model: str
    api_key_env: str | None = Field(None, description="name of the env var holding the API key")
    request_timeout_ms: int = Field(30_000, ge=1)
    max_retries: int = Field(3, ge=0, le=20)
    price_input_per_1k: float = Field(0.0, ge=0)
    price_output_per_1k: float = Field(0.0, ge=0)
    context_window: int | None = Field(None, ge=1)
    fallbacks: list[str] = Field(default_factory=list)
    max_connections: int = Field(256, ge=1)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    mode: Literal["online", "batch"] = Field("online", description="batch = the provider's Batch API (batch_api)")
    batch_api: BatchAPIConfig = Field(default_factory=BatchAPIConfig)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_http_url(v).rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _key_env_is_a_name(cls, v: str | None) -> str | None:
        return check_env_name(v, "key", "OPENAI_API_KEY")

    def api_key(self) -> str | None:
        """The key from the environment (never stored in config objects or logged)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class CacheConfig(_Strict):
    """Sticky decisions per key. ``scope`` picks the key: the Kafka key, a request field, or an
    expression (``scope_expression``, the rules' expression language, e.g. ``get(fields, "tenant", key)``);
    an empty, null or non-scalar field/expression value falls back to the Kafka key. A strategy's own
    ``cache: {enabled, ttl_s}`` overrides ``enabled``/``ttl_s`` for its decisions (docs/strategies.md)."""

    enabled: bool = True
    scope: Literal["key", "field", "expression"] = "key"
    scope_field: str | None = None
    scope_expression: str | None = Field(None, description="scope 'expression': evaluated per request to the "
                                                            "cache key; names as in rules (fields, key, tags, ...)")
    ttl_s: float = Field(3600.0, gt=0)
    dedup_window_s: float = Field(3600.0, ge=0, description="repeats of a request_id inside it are answered from the first answer")
    state_dir: str = "./.state"
    purge_interval_s: float = Field(600.0, gt=0, description="how often expired decisions and dedup entries are deleted")

    @field_validator("scope_expression")
    @classmethod
    def _scope_expression_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                Expression(v)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _field_scope(self) -> "CacheConfig":
        if self.scope == "field" and not self.scope_field:
            raise ValueError("scope 'field' needs scope_field (a key of request.fields)")
        if self.scope == "expression" and not (self.scope_expression or "").strip():
            raise ValueError("scope 'expression' needs scope_expression (e.g. 'get(fields, \"tenant\", key)')")
        return self


class TopicsConfig(_Strict):
    requests: str = "router.requests"
    responses: str = "router.responses"
    audit: str = "router.audit"
    dead_letter: str = "router.dead-letter"
    changelog: str = "router.decisions-changelog"


class KafkaConfig(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "router-stream"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username_env: str | None = None
    sasl_password_env: str | None = None
    ssl_cafile: str | None = None
    session_timeout_ms: int = Field(10_000, ge=1000)
    transaction_timeout_ms: int = Field(60_000, ge=1000)
    max_batch: int = Field(500, ge=1, description="records per partition per transaction")
    max_record_bytes: int = Field(1_000_000, ge=1)
    internal_replication_factor: int = Field(1, ge=1, description="replication of Faust's own internal topics")

    @field_validator("sasl_username_env", "sasl_password_env")
    @classmethod
    def _secret_env_is_a_name(cls, v: str | None) -> str | None:
        return check_env_name(v, "secret", "KAFKA_PASSWORD")


class WorkerConfig(_Strict):
    worker_id: str | None = None
    max_in_flight: int = Field(256, ge=1, description="records being handled at once per worker (routing + model call)")
    batches_in_flight: int = Field(2, ge=1, le=64, description="fetched batches of one partition handled at once; "
                                                                 "they commit in offset order (1 = one at a time)")
    gc_threshold0: int = Field(50_000, ge=0, description="first threshold of Python's cyclic garbage collector "
                                                         "once started (start-up objects are frozen); 0 = leave "
                                                         "the interpreter's defaults")
    metrics_host: str = Field("127.0.0.1", description="bind address of /metrics and /health (0.0.0.0 in a pod)")
    metrics_port: int = Field(6066, ge=1, le=65535)
    default_deadline_ms: int = Field(120_000, ge=1)
    shutdown_grace_s: float = Field(20.0, ge=0)
    standby: bool = Field(False, description="keep warm copies of the state of partitions owned by other workers")
    standby_interval_s: float = Field(2.0, gt=0, description="how often standby copies catch up with the changelog")


class ControlConfig(_Strict):
    """Operator control records (``router-stream state evict``): accepted only with the shared
    secret held by the env var named here, sent in a record header; disabled when unset
    (router_stream/processing/control.py, docs/operations.md)."""

    secret_env: str | None = Field(None, description="name of the env var holding the control secret")

    @field_validator("secret_env")
    @classmethod
    def _secret_env_is_a_name(cls, v: str | None) -> str | None:
        return check_env_name(v, "secret", "ROUTER_STREAM_CONTROL_SECRET")


class RouterConfig(_Strict):
    """The whole configuration file."""

    candidates: dict[str, CandidateConfig]
    default: str
    strategies: list[StrategyConfig] = Field(default_factory=list)
    fallbacks: list[str] = Field(default_factory=list, description="global fallback chain after a candidate's own")
    allow_request_candidate_field: str | None = Field(
        None, description="request.fields key a producer may use to pick a candidate; off when unset")
    cache: CacheConfig = Field(default_factory=CacheConfig)
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)

    @field_validator("candidates")
    @classmethod
    def _some(cls, v: dict[str, CandidateConfig]) -> dict[str, CandidateConfig]:
        if not v:
            raise ValueError("at least one candidate is needed")
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise ValueError(f"candidate name {name!r} must be 1-64 of [A-Za-z0-9_.-]")
        return v

    def unset_secret_envs(self, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
        """``(path, NAME)`` of every ``*_env`` field naming an env var that is not set (or empty):
        not an error (a local endpoint may need no key), but the calls would go out without one
        and fail with 401 much later, so ``check-config`` and a starting worker warn about it."""
        env = os.environ if environ is None else environ
        named = [(f"candidates.{name}.api_key_env", c.api_key_env) for name, c in self.candidates.items()]
        named += [(f"strategies[{i}].api_key_env", getattr(s, "api_key_env", None))
                  for i, s in enumerate(self.strategies)]
        named += [(f"kafka.{f}", getattr(self.kafka, f)) for f in ("sasl_username_env", "sasl_password_env")]
        return [(path, var) for path, var in named if var and not env.get(var)]

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> "RouterConfig":
        """Checks across sections: every candidate reference exists, no candidate falls back to
        itself, strategy names are unique (audit records, metrics and recalibration state are
        keyed by them, so two strategies with one name would mix their numbers). A problem whose
        value came from an env var (``parse_config`` passes them as validation context) names it."""
        names = set(self.candidates)
        env_notes = (info.context or {}).get(_ENV_NOTES, {})
        problems: list[str] = []

        def problem(path: str, text: str) -> None:
            note = _env_note(path, env_notes)
            problems.append(f"{path}: {text}" + (f" ({note})" if note else ""))

        def check(path: str, value: str) -> None:
            if value not in names:
                problem(path, f"{value!r} is not a candidate (known: {', '.join(sorted(names))})")

        check("default", self.default)
        for i, name in enumerate(self.fallbacks):
            check(f"fallbacks[{i}]", name)
        for cname, cand in self.candidates.items():
            for i, name in enumerate(cand.fallbacks):
                if name == cname:
                    problem(f"candidates.{cname}.fallbacks[{i}]", f"{cname!r} cannot fall back to itself; remove it "
                                                                  "(retries on the same candidate are max_retries)")
                else:
                    check(f"candidates.{cname}.fallbacks[{i}]", name)
        first_with_name: dict[str, int] = {}
        for i, strategy in enumerate(self.strategies):
            for sub, name in strategy.referenced_candidates():
                check(f"strategies[{i}]{sub}", name)
            j = first_with_name.setdefault(strategy.name, i)
            if j != i:
                unset = "name" not in strategy.model_fields_set
                default = f" (the default name of a {strategy.type} strategy)" if unset else ""
                problem(f"strategies[{i}].name", f"{strategy.name!r}{default} is already the name of "
                                                 f"strategies[{j}]; give each strategy a unique name")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


# ---------------------------------------------------------------- error messages
_ENV_NOTES = "env_notes"  # validation-context key: {field path: "from env var X" note}
_SECRET_WORDS = frozenset({"key", "apikey", "token", "password", "passwd", "pwd", "secret", "secrets", "auth",
                           "authorization", "credential", "credentials", "bearer", "cookie", "passphrase"})


def _is_secret_field(loc: list[Any]) -> bool:
    """Whether a field on the path is named like a secret (``api_key_env``, ``sasl_password_env``,
    ``token``, ``apiKey``, ...): its value is never echoed in an error. Whole words only, so
    ``keywords`` and ``tokens_per_minute`` still show what was given."""
    for part in loc:
        if isinstance(part, str):
            words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", part).lower())
            if _SECRET_WORDS.intersection(words):
                return True
    return False




def _env_note(path: str, env_notes: dict[str, str]) -> str | None:
    """The note of the env var that set ``path`` or the closest section above it, if any."""
    best = None
    for where, note in env_notes.items():
        if (path == where or path.startswith((where + ".", where + "["))) and (best is None or len(where) > len(best)):
            best = where
    return env_notes[best] if best is not None else None




def _strategy_types() -> list[str]:
    """The ``type:`` values of the strategy union, in its order."""
    union = typing.get_args(StrategyConfig)[0]
    return [typing.get_args(model.model_fields["type"].annotation)[0] for model in typing.get_args(union)]


def _fields_hint(class_name: str | None, loc: list[Any]) -> str:
    """`` (base_url, model, ...)`` for "expected a mapping": the required fields of the expected
    section (its first fields when none is required), so the user sees what goes under it."""
    if len(loc) == 2 and loc[0] == "strategies":
        return " (type, name, ...)"
    model = {cls.__name__: cls for cls in _Strict.__subclasses__()}.get(class_name or "")
    if model is None:
        return ""
    names = [name for name, field in model.model_fields.items() if field.is_required()] or list(model.model_fields)[:3]
    return f" ({', '.join(names)}, ...)"


def _reworded(err: Any, loc: list[Any]) -> tuple[str, str] | None:
    """``(path, message)`` in our words for pydantic errors whose own text means nothing to a config
    author, chosen by error ``type`` (not message text); ``None`` keeps pydantic's message."""
    kind, ctx, path = err["type"], err.get("ctx") or {}, path_of(loc)
    is_strategy = len(loc) == 2 and loc[0] == "strategies"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "type")).strip("'")
        if kind == "union_tag_not_found":
            known = ", ".join(_strategy_types()) if is_strategy else ""
            return f"{path}.{field}", "missing" + (f"; give one of: {known}" if known else "")
        known = str(ctx.get("expected_tags", "")).replace("'", "")
        what = f"strategy {field}" if is_strategy else field
        return f"{path}.{field}", f"unknown {what} {ctx.get('tag')!r} (known: {known})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return path, f"expected a mapping{_fields_hint(ctx.get('class_name'), loc)}, got {kind_of(err.get('input'))}"
    if kind == "list_type":
        return path, f"expected a list, got {kind_of(err.get('input'))}"
    if kind == "extra_forbidden" and _is_secret_field(loc[-1:]):
        return path, ("unknown field; secrets never go in the config file: put the value in an environment "
                      "variable and give that variable's name (e.g. api_key_env: OPENAI_API_KEY)")
    return None


def _shows_input(err: Any, msg: str, loc: list[Any]) -> bool:
    """Whether "(got ...)" adds something: not for missing fields or whole sections, not when the
    message already quotes the input, and never for a secret-named field."""
    if err["type"] == "missing" or "input" not in err or _is_secret_field(loc):
        return False
    value = err["input"]
    if isinstance(value, (dict, list)) or (isinstance(value, str) and "@" in value):
        return False  # a whole section; or maybe user:password@ (a URL with credentials)
    return not (isinstance(value, str) and (repr(value) in msg or f'"{value}"' in msg))


def _format_validation(exc: ValidationError, env_notes: dict[str, str] | None = None) -> str:
    """One ``path: message`` per error, joined by "; ". ``env_notes`` ({path: "from env var X"})
    names the env var behind a value, or behind a section it created."""
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        if len(loc) >= 3 and loc[0] == "strategies" and isinstance(loc[1], int) and isinstance(loc[2], str):
            del loc[2]  # the discriminated union puts the strategy type into the location
        reworded = _reworded(err, loc)
        if reworded is not None:
            path, msg = reworded
            notes = []
        else:
            path, msg = path_of(loc), err["msg"].removeprefix("Value error, ")
            notes = [f"got {err['input']!r}"] if _shows_input(err, msg, loc) else []
        note = _env_note(path, env_notes or {})
        notes += [note] if note else []
        lines.append(f"{path or '<root>'}: {msg}" + (f" ({', '.join(notes)})" if notes else ""))
    return "; ".join(lines)


# ---------------------------------------------------------------- entry points
_NEEDS = "it needs at least 'candidates' and 'default' (see the example in README.md)"


def parse_config(data: Any, environ: dict[str, str] | None = None) -> RouterConfig:
    """Validate a parsed YAML document (plus env overrides); raise :class:`ConfigError`.

    ``data`` is not modified (the overrides go into a deep copy)."""
    if data is None:
        raise ConfigError(f"<root>: the config is empty; {_NEEDS}")
    if not isinstance(data, dict):
        raise ConfigError(f"<root>: the config must be a mapping (key: value lines), got {kind_of(data)}")
    data = copy.deepcopy(data)
    env_notes = apply_env(data, dict(os.environ if environ is None else environ))
    try:
        return RouterConfig.model_validate(data, context={_ENV_NOTES: env_notes})
    except ConfigError:
        raise
    except ValidationError as exc:
        # a ConfigError raised inside a validator arrives wrapped; keep its text
        raise ConfigError(_format_validation(exc, env_notes)) from None


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> RouterConfig:
    """Read and validate the YAML file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = load_yaml(text)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {yaml_problem(exc)}") from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty (or only comments); {_NEEDS}")
    return parse_config(data, environ)
