"""Budgets without a broker: windows, admission and settlement, downgrade and reject, spread totals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from router_stream.budgets import ChangelogTotals, Ledger, spend_key
from router_stream.budgets.ledger import Entry, split_spend_key
from router_stream.budgets.windows import window_end_ms, window_label, window_start_ms
from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.processing import handler as handler_mod
from router_stream.processing.handler import Handler
from router_stream.processing.partition import Source, StateView
from router_stream.providers.base import Completion
from router_stream.runtime import build_pipeline
from router_stream.schemas import Request, Usage

T0 = int(datetime(2026, 12, 4, 10, 0, tzinfo=UTC).timestamp() * 1000)
LOCAL = "http://127.0.0.1:9/v1"
# prices per 1k tokens: a 100-token prompt + 100 output tokens costs $0.002 on cheap, $0.02 on strong
CANDIDATES = {
    "cheap": {"base_url": LOCAL, "model": "c", "price_input_per_1k": 0.01, "price_output_per_1k": 0.01},
    "strong": {"base_url": LOCAL, "model": "s", "price_input_per_1k": 0.1, "price_output_per_1k": 0.1},
}


def ms(*args: int, tz: str = "UTC") -> int:
    return int(datetime(*args, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


# ---------------------------------------------------------------- windows
def test_calendar_windows_follow_the_zone_and_dst():
    at = ms(2026, 3, 29, 15, 30, tz="Europe/Berlin")  # the day clocks go forward: 23 hours
    start = window_start_ms("day", "Europe/Berlin", at)
    assert start == ms(2026, 3, 29, tz="Europe/Berlin")
    assert window_end_ms("day", "Europe/Berlin", start) - start == 23 * 3_600_000
    assert window_start_ms("month", "UTC", ms(2026, 12, 31, 23, 59)) == ms(2026, 12, 1)
    assert window_end_ms("month", "UTC", ms(2026, 12, 1)) == ms(2027, 1, 1)
    assert window_start_ms("hour", "Asia/Kolkata", ms(2026, 1, 1, 10, 45, tz="Asia/Kolkata")) == ms(
        2026, 1, 1, 10, tz="Asia/Kolkata"
    )
    assert window_start_ms("minute", "UTC", ms(2026, 1, 1, 0, 0, 59)) == ms(2026, 1, 1)
    assert window_label("day", "Europe/Berlin", start) == "day 2026-03-29 (Europe/Berlin)"


# ---------------------------------------------------------------- ledger
def config(budget: dict | list, strategies=None):
    budgets = budget if isinstance(budget, list) else [budget]
    return parse_config(
        {"candidates": CANDIDATES, "default": "cheap", "strategies": strategies or [], "budgets": budgets},
        environ={},
    )


def req(rid="r1", tenant="acme", max_tokens=100, **over) -> Request:
    return Request(
        request_id=rid,
        prompt="x" * 384,
        fields={"tenant": tenant} if tenant else {},
        params={"max_tokens": max_tokens},
        **over,
    )  # 384 chars = 96 + 4 framing = 100 tokens


def ledger(cfg) -> Ledger:
    return Ledger(cfg.budgets, cfg.candidates)


TENANT = {
    "name": "tenant",
    "scope": "field",
    "scope_field": "tenant",
    "window": "day",
    "limit": {"usd": 0.05},
}


def test_admission_reserves_the_estimate_and_settlement_charges_the_actual_cost():
    led, state = ledger(config(TENANT)), StateView(store={})
    adm = led.admit(req(), "strong", None, {}, state, T0, 0)
    assert adm.candidate == "strong" and adm.rejected is None
    entry = Entry.load(state.get(spend_key("tenant", "acme")))
    assert (entry.reserved_usd, entry.reserved_tokens, entry.usd) == (20_000, 200, 0)  # $0.02 reserved
    led.settle(adm, state, 0.0123, 150)
    entry = Entry.load(state.get(spend_key("tenant", "acme")))
    assert (entry.reserved_usd, entry.usd, entry.tokens) == (0, 12_300, 150)
    assert adm.notes[0]["charged_usd"] == 0.0123 and adm.notes[0]["state"] == "ok"
    assert adm.notes[0]["window"] == "day 2026-12-04 (UTC)" and adm.notes[0]["mode"] == "spread"


def test_reject_at_the_hard_limit_names_the_scope_and_window():
    led, state = ledger(config(TENANT)), StateView(store={})
    for i in range(2):  # 2 x $0.02 = $0.04 of $0.05
        led.settle(led.admit(req(f"r{i}"), "strong", None, {}, state, T0, 0), state, 0.02, 200)
    adm = led.admit(req("r3"), "strong", None, {}, state, T0, 0)  # 0.04 + 0.02 > 0.05
    assert adm.rejected == (
        "budget 'tenant' for fields.tenant 'acme': day 2026-12-04 (UTC): hard limit $0.05 "
        "reached (spent $0.04, this request ~$0.02)"
    )
    assert not adm.holds and adm.notes[0]["state"] == "rejected"
    assert Entry.load(state.get(spend_key("tenant", "acme"))).reserved_usd == 0
    # the next day starts from zero
    assert led.admit(req("r4"), "strong", None, {}, state, T0 + 86_400_000, 0).rejected is None
    # another tenant has its own budget
    assert led.admit(req("r5", tenant="globex"), "strong", None, {}, state, T0, 0).rejected is None


def test_downgrade_serves_the_cheaper_candidate_and_rejects_when_even_that_is_over():
    led = ledger(config({**TENANT, "action": "downgrade", "downgrade_to": "cheap"}))
    state = StateView(store={})
    led.settle(led.admit(req("r1"), "strong", None, {}, state, T0, 0), state, 0.04, 200)
    adm = led.admit(
        req("r2"), "strong", None, {}, state, T0, 0
    )  # strong would pass $0.05, cheap ($0.002) not
    assert adm.candidate == "cheap" and adm.rejected is None
    assert adm.notes[0] == {
        "budget": "tenant",
        "state": "downgraded",
        "from": "strong",
        "to": "cheap",
        "reason": "hard limit $0.05 reached (spent $0.04, this request ~$0.02)",
    }
    assert Entry.load(state.get(spend_key("tenant", "acme"))).reserved_usd == 2_000
    led.settle(adm, state, 0.0099, 10)
    adm = led.admit(req("r3"), "cheap", None, {}, state, T0, 0)  # 0.0499 + 0.002 > 0.05
    assert adm.rejected is not None and "hard limit $0.05" in adm.rejected


def test_tokens_limit_soft_note_and_requests_without_the_scope():
    led = ledger(config({**TENANT, "limit": {"tokens": 450}, "soft": {"tokens": 200}}))
    state = StateView(store={})
    first = led.admit(req("r1"), "cheap", None, {}, state, T0, 0)
    assert first.notes[0]["state"] == "ok"
    led.settle(first, state, 0.002, 200)
    second = led.admit(req("r2"), "cheap", None, {}, state, T0, 0)
    assert second.notes[0]["state"] == "soft" and second.rejected is None
    led.settle(second, state, 0.002, 200)
    assert (
        "hard limit 450 tokens reached (spent 400, this request ~200)"
        in led.admit(req("r3"), "cheap", None, {}, state, T0, 0).rejected
    )
    nobody = led.admit(req("r4", tenant=None), "cheap", None, {}, state, T0, 0)
    assert nobody.rejected is None and nobody.notes == [
        {"budget": "tenant", "state": "skipped", "reason": "the request has no fields.tenant"}
    ]


def test_key_scope_and_expression_scope_and_order_tokens():
    led = ledger(
        config(
            [
                {"name": "per-key", "limit": {"usd": 1}},
                {
                    "name": "by-expr",
                    "scope": "expression",
                    "scope_expression": "lower(fields.tenant)",
                    "limit": {"usd": 1},
                },
            ]
        )
    )
    assert led.budgets[0].co_partitioned and not led.budgets[1].co_partitioned
    assert led.order_tokens("user-1", req(tenant="ACME"), {}) == [
        "s\x00per-key\x00user-1",
        "s\x00by-expr\x00acme",
    ]
    assert led.order_tokens(None, req(tenant=None), {}) == []
    assert split_spend_key(spend_key("by-expr", "acme")) == ("by-expr", "acme")


def test_spread_budgets_add_other_partitions_committed_spend():
    totals = ChangelogTotals({}, "changelog")
    key = spend_key("tenant", "acme")
    start = window_start_ms("day", "UTC", T0)
    totals.apply(key, 1, Entry(start, 30_000, 300).dump())
    totals.apply(key, 2, Entry(start - 86_400_000, 99_000, 9).dump())  # yesterday: not counted
    totals.apply(b"k:user", 3, b"{}")  # not a spend key: ignored
    budget = config(TENANT).budgets[0]
    assert totals.total(key, budget, start, exclude_partition=0) == (30_000, 300)
    assert totals.total(key, budget, start, exclude_partition=1) == (0, 0)
    led = Ledger(config(TENANT).budgets, config(TENANT).candidates, totals)
    state = StateView(store={})
    adm = led.admit(req(), "strong", None, {}, state, T0, 0)  # 0.03 elsewhere + 0.02 = 0.05: still within
    assert adm.rejected is None and adm.notes[0]["other_partitions_usd"] == 0.03
    led.settle(adm, state, 0.001, 10)
    assert "hard limit" in led.admit(req("r2"), "strong", None, {}, state, T0, 0).rejected
    totals.apply(key, 1, None)  # a tombstone removes that partition's value
    assert totals.total(key, budget, start, 0) == (0, 0)


@pytest.mark.parametrize(
    "budget,message",
    [
        ({"name": "b", "limit": {}}, "budgets[0].limit: give usd, tokens or both"),
        ({"name": "b", "limit": {"usd": 1}, "action": "downgrade"}, "downgrade_to"),
        (
            {"name": "b", "limit": {"usd": 1}, "action": "downgrade", "downgrade_to": "cheapp"},
            "budgets[0].downgrade_to: 'cheapp' is not a candidate",
        ),
        ({"name": "b", "limit": {"usd": 1}, "time_zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"name": "b", "limit": {"usd": 1}, "soft": {"usd": 2}}, "soft.usd (2) is above limit.usd (1)"),
        ({"name": "b", "limit": {"usd": 1}, "scope": "field"}, "scope 'field' needs scope_field"),
        ({"name": "b", "limit": {"usd": 1}, "window": "week"}, "budgets[0].window"),
    ],
)
def test_config_errors_name_the_field(budget, message):
    with pytest.raises(ConfigError) as exc:
        config(budget)
    assert message in str(exc.value)


def test_two_budgets_with_one_name_are_refused():
    with pytest.raises(ConfigError, match=r"budgets\[1\]\.name: 'b' is already the name of budgets\[0\]"):
        config([{"name": "b", "limit": {"usd": 1}}, {"name": "b", "limit": {"usd": 2}}])


# ---------------------------------------------------------------- in the handler
class FakeDispatcher:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, request, chosen, deadline_at):
        self.calls.append(chosen)
        usage = Usage(prompt_tokens=100, completion_tokens=50, total_tokens=150)
        completion = Completion(text="ok", usage=usage, provider_model=chosen, latency_ms=1.0)
        cost = 0.015 if chosen == "strong" else 0.0015
        return SimpleNamespace(
            completion=completion,
            error=None,
            error_kind=None,
            attempts=[],
            served_by=chosen,
            cost_usd=cost,
            batch=None,
            cascade=None,
        )


async def test_handler_charges_downgrades_and_rejects_with_an_error_response(monkeypatch):
    monkeypatch.setattr(handler_mod, "now_ms", lambda: T0)
    cfg = config(
        {**TENANT, "action": "downgrade", "downgrade_to": "cheap", "limit": {"usd": 0.04}},
        strategies=[{"type": "rules", "rules": [{"when": "true", "then": "strong"}]}],
    )
    dispatcher = FakeDispatcher()
    handler = Handler(cfg, build_pipeline(cfg), dispatcher, "w")
    view = StateView(store={})

    def src(i):
        body = {
            "request_id": f"r{i}",
            "prompt": "x" * 384,
            "fields": {"tenant": "acme"},
            "params": {"max_tokens": 100},
        }
        return Source("t", 0, i, f"conv-{i}".encode(), json.dumps(body).encode())

    outs = [await handler.handle(src(i), view) for i in range(12)]
    assert dispatcher.calls[:2] == [
        "strong",
        "strong",
    ]  # 0.015 each: 0.03 spent, strong's 0.02 would pass 0.04
    assert outs[2].audit.chosen == "strong" and outs[2].audit.budgets[0]["state"] == "downgraded"
    assert outs[2].response.candidate == "cheap" and dispatcher.calls[2] == "cheap"
    rejected = [o for o in outs if o.response.error_kind == "budget_exceeded"]
    assert rejected and all(
        o.audit.budgets[-1]["state"] == "rejected" and o.response.output is None for o in rejected
    )
    assert len(dispatcher.calls) == 8 and len(rejected) == 4  # 2 strong, 6 cheap; a rejection calls no model
    spent = Entry.load(view.get(spend_key("tenant", "acme")))
    charged = sum(o.audit.estimated_cost_usd for o in outs if o.response.error is None)
    assert spent.usd == round(charged * 1_000_000) and spent.reserved_usd == 0
    assert spent.usd <= 40_000 + 20_000  # never past the limit by more than one estimate


def test_check_config_says_which_mode_each_budget_is_in(tmp_path, capsys):
    import yaml

    from router_stream.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "candidates": CANDIDATES,
                "default": "cheap",
                "budgets": [{"name": "per-key", "limit": {"usd": 1}}, TENANT],
            }
        )
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "budget 'per-key': co-partitioned (scope is the Kafka key): exact accounting and exact enforcement"
        in out
    )
    assert "budget 'tenant': spread (scope is fields.tenant): exact accounting; enforcement lags" in out


def test_state_get_reports_the_current_window_spend_summed_over_partitions():
    from router_stream.budgets.report import spend_report

    cfg = config(TENANT)
    start = window_start_ms("day", "UTC", T0)
    values = {
        "tenant": {
            0: Entry(start, 10_000, 100).dump(),
            3: Entry(start, 5_000, 50, 2_000, 20).dump(),
            5: Entry(start - 86_400_000, 99_000, 9).dump(),
            7: None,
        }
    }
    [row] = spend_report(cfg.budgets, values, T0)
    assert (row["spent_usd"], row["spent_tokens"], row["reserved_usd"], row["partitions"]) == (
        0.015,
        150,
        0.002,
        3,
    )
    assert row["window"] == "day 2026-12-04 (UTC)" and row["mode"] == "spread" and row["limit_usd"] == 0.05
    assert spend_report(cfg.budgets, {"tenant": {0: None}}, T0) == []


def test_reset_zeroes_the_spend_and_keeps_reservations_in_flight():
    led, state = ledger(config(TENANT)), StateView(store={})
    led.settle(led.admit(req("r1"), "strong", None, {}, state, T0, 0), state, 0.04, 400)
    parked = led.admit(req("r2"), "cheap", None, {}, state, T0, 0)  # reserved, not settled yet
    note = led.reset("acme", None, state)
    assert note["applied"] and note["reset"] == [
        {
            "budget": "tenant",
            "window_start": window_start_ms("day", "UTC", T0),
            "spent_usd": 0.04,
            "spent_tokens": 400,
        }
    ]
    entry = Entry.load(state.get(spend_key("tenant", "acme")))
    assert (entry.usd, entry.tokens, entry.reserved_usd) == (0, 0, 2_000)
    led.settle(parked, state, 0.001, 10)
    assert Entry.load(state.get(spend_key("tenant", "acme"))).usd == 1_000
    assert led.reset("globex", None, state)["applied"] is False
    assert led.reset("acme", "other-budget", state)["reset"] == []


def test_rolling_window_lets_spend_leave_bucket_by_bucket():
    led = ledger(config({**TENANT, "window": "rolling", "rolling_s": 3600, "limit": {"usd": 0.05}}))
    state, period = StateView(store={}), led.budgets[0].period
    assert period.bucket_ms == 300_000 and period.label(0) == "rolling 3600s (12 buckets of 300s)"
    led.settle(led.admit(req("r1"), "strong", None, {}, state, T0, 0), state, 0.02, 200)
    led.settle(
        led.admit(req("r2"), "strong", None, {}, state, T0 + 1_800_000, 0), state, 0.02, 200
    )  # +30 min
    assert "hard limit" in led.admit(req("r3"), "strong", None, {}, state, T0 + 1_800_000, 0).rejected
    # an hour after the first charge it has left the window; the second still counts
    later = led.admit(req("r4"), "strong", None, {}, state, T0 + 3_600_000, 0)
    assert later.rejected is None and later.notes[0]["spent_usd"] == 0.02
    led.settle(later, state, 0.02, 200)
    entry = Entry.load(state.get(spend_key("tenant", "acme")))
    assert sorted(entry.buckets) == [T0 + 1_800_000, T0 + 3_600_000] and entry.usd == 40_000


def test_rolling_needs_its_length_and_only_rolling_takes_one():
    with pytest.raises(ConfigError, match="window 'rolling' needs rolling_s"):
        config({**TENANT, "window": "rolling"})
    with pytest.raises(ConfigError, match="rolling_s is only used with window: rolling"):
        config({**TENANT, "rolling_s": 3600})


async def test_a_parked_batch_api_request_reserves_and_is_charged_when_its_job_completes(monkeypatch):
    monkeypatch.setattr(handler_mod, "now_ms", lambda: T0)
    data = {
        "candidates": {**CANDIDATES, "bulk": {**CANDIDATES["cheap"], "model": "b", "mode": "batch"}},
        "default": "bulk",
        "budgets": [TENANT],
    }
    cfg = parse_config(data, environ={})
    handler = Handler(cfg, build_pipeline(cfg), FakeDispatcher(), "w")
    view = StateView(store={})
    body = {
        "request_id": "r1",
        "prompt": "x" * 384,
        "fields": {"tenant": "acme"},
        "params": {"max_tokens": 100},
    }
    out = await handler.handle(Source("t", 0, 0, b"k", json.dumps(body).encode()), view)
    assert out.parked
    parked = json.loads(view.get(b"j:r1"))
    assert parked["budget_holds"] == [
        {
            "budget": "tenant",
            "scope": "acme",
            "window": window_start_ms("day", "UTC", T0),
            "estimate_usd": 2_000,
            "estimate_tokens": 200,
        }
    ]
    assert Entry.load(view.get(spend_key("tenant", "acme"))).reserved_usd == 2_000  # committed with the park
    # what processing/batch_jobs.py does when the job's answer arrives
    notes = handler.ledger.settle_parked(parked["budget_holds"], view, 0.0009, 120)
    entry = Entry.load(view.get(spend_key("tenant", "acme")))
    assert (entry.reserved_usd, entry.usd, entry.tokens) == (0, 900, 120)
    assert notes == [
        {
            "budget": "tenant",
            "scope": "acme",
            "state": "ok",
            "charged_usd": 0.0009,
            "charged_tokens": 120,
            "charged_window_start": window_start_ms("day", "UTC", T0),
        }
    ]
