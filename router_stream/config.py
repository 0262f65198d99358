"""Configuration: one YAML file validated by pydantic, with environment overrides.

Load with :func:`load_config`. A bad config raises one :class:`ConfigError` holding every
problem at once (field types and cross-section references together), one line each, naming the
path of the bad field and the bad value, in the shape
``strategies[0].rules[2].then: 'smartt' is not a candidate; did you mean 'smart'? (known: cheap, smart)``,
so a user can fix the file in one go without reading our code. The wording lives in
:mod:`router_stream.config_errors`, the cross-section checks in :mod:`router_stream.config_checks`,
the per-candidate models (:class:`CandidateConfig` and its sections) in
:mod:`router_stream.config_candidates`.

Environment overrides (highest precedence): ``ROUTER_STREAM_BOOTSTRAP_SERVERS`` (or
``KAFKA_BOOTSTRAP_SERVERS``), ``ROUTER_STREAM_GROUP_ID``, ``ROUTER_STREAM_WORKER_ID``,
``ROUTER_STREAM_METRICS_PORT``, and any dotted path with ``ROUTER_STREAM__`` and ``__`` as
separator, e.g. ``ROUTER_STREAM__CANDIDATES__CHEAP__BASE_URL=http://...`` (the words match
existing keys case-insensitively, a number indexes a list: ``ROUTER_STREAM__STRATEGIES__0__NAME``).
An error caused by an env value names the env var.
API keys are never in the file: a candidate names the env var that holds its key, and no error
echoes the value of a field whose name suggests a secret, or a value that looks like one.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .budgets.limits import BudgetConfig, check_names_unique
from .config_candidates import CandidateConfig as CandidateConfig  # part of RouterConfig's shape
from .config_candidates import StrictModel
from .config_checks import never_run_warnings, partial_reference_problems, reference_problems
from .config_errors import ENV_NOTES, did_you_mean, format_validation
from .config_sources import DuplicateKeyError, apply_env, kind_of, load_yaml, yaml_problem
from .env_names import check_env_name
from .errors import ConfigError
from .routing.expressions import check_expression, scope_problem
from .routing.registry import StrategyConfig
from .secret_values import env_refs


class CacheConfig(StrictModel):
    """Sticky decisions per key. ``scope`` picks the key: the Kafka key, a request field, or an
    expression (``scope_expression``, the rules' expression language, e.g. ``get(fields, "tenant", key)``);
    an empty, null or non-scalar field/expression value falls back to the Kafka key. A strategy's own
    ``cache: {enabled, ttl_s}`` overrides ``enabled``/``ttl_s`` for its decisions (docs/strategies.md)."""

    enabled: bool = True
    scope: Literal["key", "field", "expression"] = "key"
    scope_field: str | None = None
    scope_expression: str | None = Field(
        None,
        description="scope 'expression': evaluated per request to the "
        "cache key; names as in rules (fields, key, tags, ...)",
    )
    ttl_s: float = Field(3600.0, gt=0)
    dedup_window_s: float = Field(
        3600.0, ge=0, description="repeats of a request_id inside it are answered from the first answer"
    )
    state_dir: str = "./.state"
    purge_interval_s: float = Field(
        600.0, gt=0, description="how often expired decisions and dedup entries are deleted"
    )

    @field_validator("scope_expression")
    @classmethod
    def _scope_expression_compiles(cls, v: str | None) -> str | None:
        return check_expression(v)

    @model_validator(mode="after")
    def _field_scope(self) -> CacheConfig:
        problem = scope_problem(self.scope, self.scope_field, self.scope_expression)
        if problem is not None:
            raise ValueError(problem)
        return self


class TopicsConfig(StrictModel):
    requests: str = "router.requests"
    responses: str = "router.responses"
    audit: str = "router.audit"
    dead_letter: str = "router.dead-letter"
    changelog: str = "router.decisions-changelog"


class KafkaConfig(StrictModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "router-stream"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username_env: str | None = None
    sasl_password_env: str | None = None
    ssl_cafile: str | None = None
    session_timeout_ms: int = Field(10_000, ge=1000)
    static_membership: bool = Field(
        True,
        description="with worker.worker_id set, join the group as a static member with that id: "
        "a restarted worker gets its partitions back without a rebalance (ids must be unique)",
    )
    transaction_timeout_ms: int = Field(60_000, ge=1000)
    max_batch: int = Field(500, ge=1, description="records per partition per transaction")
    max_record_bytes: int = Field(1_000_000, ge=1)
    internal_replication_factor: int | None = Field(
        None,
        ge=1,
        description="retired: the worker creates no Faust topics any more; accepted so existing "
        "configs load, with a warning (RouterConfig.retired_field_warnings)",
    )

    @field_validator("sasl_username_env", "sasl_password_env")
    @classmethod
    def _secret_env_is_a_name(cls, v: str | None) -> str | None:
        return check_env_name(v, "secret", "KAFKA_PASSWORD")


class WorkerConfig(StrictModel):
    worker_id: str | None = None
    max_in_flight: int = Field(
        256, ge=1, description="records being handled at once per worker (routing + model call)"
    )
    batches_in_flight: int = Field(
        2,
        ge=1,
        le=64,
        description="fetched batches of one partition handled at once; "
        "they commit in offset order (1 = one at a time)",
    )
    gc_threshold0: int = Field(
        50_000,
        ge=0,
        description="first threshold of Python's cyclic garbage collector "
        "once started (start-up objects are frozen); 0 = leave "
        "the interpreter's defaults",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="bind address of /metrics and /health (0.0.0.0 in a pod)"
    )
    metrics_port: int = Field(6066, ge=1, le=65535)
    default_deadline_ms: int = Field(120_000, ge=1)
    shutdown_grace_s: float = Field(20.0, ge=0)
    standby: bool = Field(
        False, description="keep warm copies of the state of partitions owned by other workers"
    )
    standby_interval_s: float = Field(
        2.0, gt=0, description="how often standby copies catch up with the changelog"
    )


class ControlConfig(StrictModel):
    """Operator control records (``router-stream state evict``): accepted only with the shared
    secret held by the env var named here, sent in a record header; disabled when unset
    (router_stream/processing/control.py, docs/operations.md)."""

    secret_env: str | None = Field(None, description="name of the env var holding the control secret")

    @field_validator("secret_env")
    @classmethod
    def _secret_env_is_a_name(cls, v: str | None) -> str | None:
        return check_env_name(v, "secret", "ROUTER_STREAM_CONTROL_SECRET")


class RouterConfig(StrictModel):
    """The whole configuration file."""

    candidates: dict[str, CandidateConfig]
    default: str
    strategies: list[StrategyConfig] = Field(default_factory=list)
    fallbacks: list[str] = Field(
        default_factory=list, description="global fallback chain after a candidate's own"
    )
    allow_request_candidate_field: str | None = Field(
        None, description="request.fields key a producer may use to pick a candidate; off when unset"
    )
    cache: CacheConfig = Field(default_factory=CacheConfig)
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    budgets: list[BudgetConfig] = Field(
        default_factory=list, description="per-scope spend limits (docs/budgets.md)"
    )
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
        named += [
            (f"candidates.{name}.{section}.{key}", var)
            for name, c in self.candidates.items()
            for section in ("headers", "query")
            for key, var in env_refs(getattr(c, section))
        ]
        named += [
            (f"strategies[{i}].api_key_env", getattr(s, "api_key_env", None))
            for i, s in enumerate(self.strategies)
        ]
        named += [(f"kafka.{f}", getattr(self.kafka, f)) for f in ("sasl_username_env", "sasl_password_env")]
        return [(path, var) for path, var in named if var and not env.get(var)]

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> RouterConfig:
        """Checks across sections (:mod:`router_stream.config_checks`): every candidate reference
        exists, no candidate falls back to itself, strategy names are unique. A problem whose
        value came from an env var (``parse_config`` passes them as validation context) names it."""
        problems = reference_problems(
            self.candidates,
            default=self.default,
            fallbacks=self.fallbacks,
            candidate_fallbacks={name: c.fallbacks for name, c in self.candidates.items()},
            strategies=self.strategies,
            env_notes=(info.context or {}).get(ENV_NOTES, {}),
        )
        known = ", ".join(sorted(self.candidates))
        for i, budget in enumerate(self.budgets):
            target = budget.downgrade_to
            if target is not None and target not in self.candidates:
                problems.append(
                    f"budgets[{i}].downgrade_to: {target!r} is not a candidate"
                    f"{did_you_mean(target, sorted(self.candidates))} (known: {known})"
                )
        problems.extend(check_names_unique(self.budgets))
        if problems:
            raise ConfigError("\n".join(problems))
        return self

    def retired_field_warnings(self) -> list[str]:
        """``path: text`` warnings about fields that are accepted but no longer do anything."""
        if self.kafka.internal_replication_factor is None:
            return []
        return [
            "kafka.internal_replication_factor: no longer used (the worker creates no Faust topics; "
            "topics apply sets replication for the router's topics); remove it"
        ]

    def never_run_warnings(self) -> list[str]:
        """``path: text`` warnings about strategies that can never run (placed after one that
        always decides); ``check-config`` prints them and a starting worker too."""
        return never_run_warnings(self.strategies)


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
        return RouterConfig.model_validate(data, context={ENV_NOTES: env_notes})
    except ValidationError as exc:
        # one pass: the field errors, and the references among the parts that did validate
        # (pydantic skips the cross-section validator when any field fails)
        lines = format_validation(exc, RouterConfig, env_notes) + partial_reference_problems(data, env_notes)
    except ConfigError as exc:  # every field parsed; the cross-section checks found problems
        lines = str(exc).splitlines()
    lines.sort(key=lambda line: _position(data, line.split(": ", 1)[0]))  # top to bottom, as the file reads
    raise ConfigError("\n".join(lines))


def _position(data: Any, path: str) -> tuple[int, ...]:
    """Where ``path`` (``strategies[1].rules[0].then``) sits in the document: the index of each
    step among its siblings; a step that is not there (a missing field) sorts after them."""
    node, position = data, []
    for step in re.findall(r"\[\d+\]|[^.\[\]]+", path):
        if step.startswith("["):
            index = int(step[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
            position.append(index)
        else:
            keys = [str(k) for k in node] if isinstance(node, dict) else []
            position.append(keys.index(step) if step in keys else len(keys))
            node = node.get(step) if isinstance(node, dict) else None
    return tuple(position)


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
