"""Topics as code: create what is missing, report what differs, delete nothing.

The spec (``topics/topics.yaml``) gives each topic role (requests, responses, audit, dead_letter,
changelog) a partition count, replication factor and topic config; names come from the router
config. A differing partition count is reported, never "fixed": changing it moves keys between
partitions and would break sticky decisions.

:func:`apply_topics` first works out a :class:`TopicPlan` (what it will create, how the existing
topics compare) and hands it to the caller to show, before anything changes; a dry run stops
there. It refuses to create topics with replication factor 1 on a cluster of 3 or more brokers
unless the spec file asks for 1 in so many words (:func:`replication_refusal`): the built-in spec
(no ``--spec``) is a laptop's, and one broker down would lose a topic's data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError

from .config import RouterConfig
from .errors import ConfigError, KafkaUnavailable
from .kafka_settings import client_settings

ROLES = ("requests", "responses", "audit", "dead_letter", "changelog")

DEFAULT_SPEC: dict[str, Any] = {
    "defaults": {"partitions": 12, "replication_factor": 1},
    "topics": {
        role: {
            "config": {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000", "segment.ms": "3600000"}
        }
        if role == "changelog"
        else {}
        for role in ROLES
    },
}


@dataclass(frozen=True)
class TopicSpec:
    role: str
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]
    #: the spec file wrote this replication factor (not the built-in default): asked for, not assumed
    replication_explicit: bool = False

    def describe(self) -> str:
        """``12 partitions, replication factor 1, config cleanup.policy=compact``."""
        extra = f", config {', '.join(f'{k}={v}' for k, v in self.config.items())}" if self.config else ""
        return f"{self.partitions} partitions, replication factor {self.replication_factor}{extra}"


def load_spec(
    path: str | Path | None, config: RouterConfig, partitions: int | None = None
) -> list[TopicSpec]:
    """The topic specs for ``config``; ``partitions`` overrides the spec's default count."""
    raw = DEFAULT_SPEC if path is None else yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a topics spec must be a mapping")
    defaults = raw.get("defaults", {})
    out = []
    for role in ROLES:
        entry = (raw.get("topics") or {}).get(role) or {}
        unknown = set(entry) - {"partitions", "replication_factor", "config"}
        if unknown:
            raise ConfigError(f"topics.{role}: unknown keys {sorted(unknown)}")
        n = partitions or entry.get("partitions") or defaults.get("partitions", 12)
        if role in ("requests", "changelog") and partitions is None:
            n = (raw.get("topics", {}).get("requests") or {}).get("partitions") or defaults.get(
                "partitions", 12
            )
        out.append(
            TopicSpec(
                role,
                getattr(config.topics, role),
                int(n),
                int(entry.get("replication_factor") or defaults.get("replication_factor", 1)),
                {str(k): str(v) for k, v in (entry.get("config") or {}).items()},
                replication_explicit=path is not None
                and ("replication_factor" in entry or "replication_factor" in defaults),
            )
        )
    return out


def builtin_spec_note(specs: list[TopicSpec]) -> str:
    """What a plan made from the built-in spec means: said whenever ``--spec`` is left out."""
    n = specs[0].partitions if specs else DEFAULT_SPEC["defaults"]["partitions"]
    return (
        f"built-in dev spec (no --spec): {n} partitions, replication factor 1 for every topic: right for a "
        "laptop, wrong on a cluster (there: --spec deploy/k8s/topics.yaml, replication factor 3)"
    )


def replication_refusal(to_create: list[TopicSpec], brokers: int) -> str | None:
    """Why creating ``to_create`` on a cluster of ``brokers`` brokers is refused, or None.

    Replication factor 1 on a cluster of 3 or more brokers is almost always the built-in laptop
    spec run against production by mistake: each topic would live on one broker and be lost with
    it. Refused unless the spec file wrote ``replication_factor: 1`` itself."""
    assumed = [s.name for s in to_create if s.replication_factor == 1 and not s.replication_explicit]
    if brokers < 3 or not assumed:
        return None
    return (
        f"topics apply: refusing to create {', '.join(assumed)} with replication factor 1 on a cluster of "
        f"{brokers} brokers (one broker down would lose them); pass --spec with replication_factor: 3 "
        "(e.g. deploy/k8s/topics.yaml), or write replication_factor: 1 in your spec if you mean it"
    )


@dataclass(frozen=True)
class TopicPlan:
    """What ``topics apply`` will do, worked out before it does anything."""

    brokers: int
    create: list[TopicSpec]
    #: one line per existing topic (``ok``/``differs``/``ERROR``), and an ``ERROR`` when requests
    #: and changelog would have different partition counts: nothing of that is changed
    checks: list[str]

    def lines(self) -> list[str]:
        return [f"create {s.name} ({s.role}): {s.describe()}" for s in self.create] + self.checks


#: Kafka's TOPIC_ALREADY_EXISTS: another run created it between our listing and our create
_TOPIC_ALREADY_EXISTS = 36


async def apply_topics(
    config: RouterConfig,
    specs: list[TopicSpec],
    *,
    dry_run: bool = False,
    on_plan: Callable[[TopicPlan], None] | None = None,
) -> list[str]:
    """Create missing topics; return one line per topic saying what was done or what differs.

    The plan goes to ``on_plan`` before anything is created; with ``dry_run`` nothing is, and
    the plan's lines are returned. Raises :class:`ConfigError` (before creating anything) when
    :func:`replication_refusal` refuses the plan, :class:`KafkaUnavailable` when no broker answers.

    A line starting ``ERROR`` means the topics are not fit to run on (the CLI exits 1): a topic
    the broker refused to create (its reason given), a changelog that is not compacted (sticky
    decisions and dedup state would be deleted by retention), or requests and changelog with
    different partition counts. Existing topics are found by listing, not by describing them by
    name: a metadata request for a missing topic makes a broker with
    ``auto.create.topics.enable=true`` (Kafka's default) create it with its own defaults.
    """
    admin = AIOKafkaAdminClient(**client_settings(config.kafka))
    try:
        await admin.start()
    except KafkaConnectionError:
        await admin.close()
        raise KafkaUnavailable(
            f"cannot reach Kafka at {config.kafka.bootstrap_servers} (kafka.bootstrap_servers; "
            "is the broker up, and is this the address it advertises?)"
        ) from None
    try:
        plan = await _plan(admin, specs)
        if on_plan is not None:
            on_plan(plan)
        refusal = replication_refusal(plan.create, plan.brokers)
        if refusal is not None:
            raise ConfigError(refusal)
        if dry_run:
            return plan.lines()
        return await _create(admin, plan.create) + plan.checks
    finally:
        await admin.close()


async def _plan(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> TopicPlan:
    """List and describe (read only) to see what exists and how it compares with ``specs``."""
    brokers = len((await admin.describe_cluster()).get("brokers") or ())
    listed = set(await admin.list_topics())
    wanted = [s.name for s in specs if s.name in listed]
    existing = await admin.describe_topics(wanted) if wanted else []
    by_name = {t["topic"]: t for t in existing if t.get("error_code", 0) == 0}
    checks = []
    present = [s for s in specs if s.name in by_name]
    if present:
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in present]
        )
        actual_cfg: dict[str, dict[str, str]] = {}
        for resp in configs:
            for res in resp.resources:
                actual_cfg[res[3]] = {c[0]: c[1] for c in res[4]}
        checks = [_compare(s, by_name[s.name], actual_cfg.get(s.name, {})) for s in present]
    req = next(s for s in specs if s.role == "requests")
    cl = next(s for s in specs if s.role == "changelog")
    n_req = len(by_name[req.name]["partitions"]) if req.name in by_name else req.partitions
    n_cl = len(by_name[cl.name]["partitions"]) if cl.name in by_name else cl.partitions
    if n_req != n_cl:
        checks.append(f"ERROR {cl.name} has {n_cl} partitions but {req.name} has {n_req}: they must match")
    return TopicPlan(brokers, [s for s in specs if s.name not in by_name], checks)


async def _create(admin: AIOKafkaAdminClient, missing: list[TopicSpec]) -> list[str]:
    """Create ``missing``; one line each: created, created meanwhile by someone else, or ERROR."""
    if not missing:
        return []
    response = await admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.config) for s in missing]
    )
    errors = {e[0]: (e[1], e[2] if len(e) > 2 else None) for e in response.topic_errors}
    report = []
    for s in missing:
        code, message = errors.get(s.name, (0, None))
        if code == 0:
            report.append(
                f"created {s.name} ({s.role}): {s.partitions} partitions, rf {s.replication_factor}"
            )
        elif code == _TOPIC_ALREADY_EXISTS:
            report.append(
                f"exists {s.name} ({s.role}): created meanwhile by someone else; run again to compare"
            )
        else:
            why = kafka_errors.for_code(code).__name__
            report.append(
                f"ERROR {s.name} ({s.role}): not created: {why}" + (f": {message}" if message else "")
            )
    return report


def _compare(spec: TopicSpec, described: dict[str, Any], actual: dict[str, str]) -> str:
    """One report line for an existing topic: ``ok``, ``differs`` (nothing is changed), or
    ``ERROR`` for a changelog that is not compacted."""
    diffs = []
    n = len(described["partitions"])
    if n != spec.partitions:
        diffs.append(f"partitions {n} (spec {spec.partitions}; not changed)")
    rf = min((len(p.get("replicas", ())) for p in described["partitions"]), default=0)
    if rf != spec.replication_factor:
        diffs.append(f"replication factor {rf} (spec {spec.replication_factor}; not changed)")
    for k, v in spec.config.items():
        have = actual.get(k)
        if have != v:
            diffs.append(f"{k}={have} (spec {v}; not changed)")
    if spec.role == "changelog" and "compact" not in (actual.get("cleanup.policy") or ""):
        return (
            f"ERROR {spec.name} (changelog) has cleanup.policy={actual.get('cleanup.policy')}: retention would "
            "delete sticky decisions and dedup state; set cleanup.policy=compact (kafka-configs --alter)"
            + (f"; also differs: {', '.join(diffs)}" if diffs else "")
        )
    return f"differs {spec.name}: " + ", ".join(diffs) if diffs else f"ok {spec.name}"
