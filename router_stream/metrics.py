"""Prometheus metrics, one registry per process (names documented in README and dashboard).

Every name here is referenced by ``deploy/grafana/router-stream.json``; a test checks that.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)

REGISTRY = CollectorRegistry(auto_describe=True)


class Children(Generic[M]):
    """``metric.labels(*values)`` remembered per label tuple, for metrics touched per record.

    prometheus_client's ``labels`` takes a lock and re-stringifies the values on every call: at
    a few thousand records a second that was ~4% of the worker's CPU. The label sets here are
    small (candidates, strategies, outcomes), and their children are never removed, so the
    cache cannot grow beyond the metric's own series.
    """

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        try:
            return self._children[values]
        except KeyError:
            child = self._children[values] = self.metric.labels(*values)
            return child


REQUESTS = Counter(
    "router_stream_requests_total",
    "Requests answered, by candidate, deciding strategy and outcome",
    ["candidate", "decided_by", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "router_stream_dead_letters_total",
    "Records sent to the dead-letter topic, by reason",
    ["reason"],
    registry=REGISTRY,
)
CACHE = Counter(
    "router_stream_cache_lookups_total",
    "Sticky-decision lookups, by result (hit/miss/expired/preempted/orphaned)",
    ["result"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "router_stream_duplicate_requests_total", "Repeats of an already answered request_id", registry=REGISTRY
)
STRATEGY = Counter(
    "router_stream_strategy_verdicts_total",
    "Strategy verdicts, by strategy and outcome",
    ["strategy", "outcome"],
    registry=REGISTRY,
)
MODEL_CALLS = Counter(
    "router_stream_model_calls_total",
    "Model call attempts, by candidate and outcome",
    ["candidate", "outcome", "error_kind"],
    registry=REGISTRY,
)
MODEL_LATENCY = Histogram(
    "router_stream_model_latency_seconds",
    "Model call latency, by candidate",
    ["candidate"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TOKENS = Counter(
    "router_stream_tokens_total",
    "Tokens used, by candidate and direction",
    ["candidate", "direction"],
    registry=REGISTRY,
)
COST = Counter(
    "router_stream_cost_usd_total", "Estimated spend in USD, by candidate", ["candidate"], registry=REGISTRY
)
RETRIES = Counter(
    "router_stream_retries_total", "Retried model calls, by candidate", ["candidate"], registry=REGISTRY
)
FALLBACKS = Counter(
    "router_stream_fallbacks_total",
    "Fallbacks from one candidate to the next",
    ["from_candidate", "to_candidate"],
    registry=REGISTRY,
)
BREAKER = Gauge(
    "router_stream_breaker_open",
    "1 while a candidate's circuit breaker is open (0.5 half-open)",
    ["candidate"],
    registry=REGISTRY,
)
RATE_LIMIT_WAIT = Counter(
    "router_stream_rate_limit_wait_seconds_total",
    "Time spent waiting on rate limits",
    ["candidate"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "router_stream_in_flight_requests", "Requests being processed by this worker", registry=REGISTRY
)
TRANSACTIONS = Counter(
    "router_stream_transactions_total",
    "Kafka transactions, by outcome (commit/abort/fenced)",
    ["outcome"],
    registry=REGISTRY,
)
ASSIGNED = Gauge(
    "router_stream_assigned_partitions", "Input partitions assigned to this worker", registry=REGISTRY
)
STANDBY = Gauge(
    "router_stream_standby_partitions",
    "Partitions of other workers kept warm here (worker.standby)",
    registry=REGISTRY,
)
LAG = Gauge(
    "router_stream_consumer_lag",
    "Records behind the end of the requests topic, per partition",
    ["partition"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "router_stream_batch_seconds",
    "Time from fetch to commit of one partition batch",
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

BUDGET_EVENTS = Counter(
    "router_stream_budget_events_total",
    "Budget soft-limit notes, downgrades and rejections, by budget",
    ["budget", "event"],
    registry=REGISTRY,
)
BUDGET_SPEND = Counter(
    "router_stream_budget_spend_usd_total",
    "Spend charged to budgets, by budget (all scopes)",
    ["budget"],
    registry=REGISTRY,
)
#: only for the scope values a budget lists in ``metrics_scopes`` (scope values are unbounded)
BUDGET_SCOPE_SPEND = Gauge(
    "router_stream_budget_scope_spend_usd",
    "Spend of a listed scope in its current window (budgets[].metrics_scopes)",
    ["budget", "scope"],
    registry=REGISTRY,
)
BUDGET_TOTALS_DELAY = Gauge(
    "router_stream_budget_totals_delay_seconds",
    "Spread budgets: age of the last other-"
    "partition spend record when this worker applied it (the enforcement lag)",
    registry=REGISTRY,
)

# the per-record ones, with their children remembered (see Children)
requests = Children(REQUESTS)
dead_letters = Children(DEAD_LETTERS)
cache_lookups = Children(CACHE)
strategy_verdicts = Children(STRATEGY)
model_calls = Children(MODEL_CALLS)
model_latency = Children(MODEL_LATENCY)
tokens = Children(TOKENS)
cost = Children(COST)
budget_events = Children(BUDGET_EVENTS)
budget_spend = Children(BUDGET_SPEND)


class MetricsObserver:
    """Hooks the dispatcher calls; turns them into the metrics above."""

    def on_attempt(self, candidate: str, outcome: str, latency_s: float, error_kind: str | None) -> None:
        model_calls(candidate, outcome, error_kind or "").inc()
        if outcome != "skipped":
            model_latency(candidate).observe(latency_s)

    def on_retry(self, candidate: str) -> None:
        RETRIES.labels(candidate).inc()

    def on_fallback(self, from_: str, to: str) -> None:
        FALLBACKS.labels(from_, to).inc()

    def on_breaker(self, candidate: str, state: str) -> None:
        BREAKER.labels(candidate).set({"open": 1.0, "half_open": 0.5}.get(state, 0.0))

    def on_rate_limit_wait(self, candidate: str, seconds: float) -> None:
        RATE_LIMIT_WAIT.labels(candidate).inc(seconds)
