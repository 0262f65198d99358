"""rules → learned → judge → default on a real broker, over loopback models: the audit trail per request.

Three loopback model servers: ``cheap`` and ``strong`` answer requests (each names itself in its
answer), ``judge`` is the judge strategy's candidate. The judge server answers per prompt from a
script (the request text reaches it JSON-quoted inside the judge's user message), so which judged
request gets a usable verdict and which gets garbage is fixed, whatever the processing order.

The learned strategy uses the packaged artifact with an ``abstain_band`` chosen from the prompts'
offline scores (checked by ``test_prompt_scores_sit_where_the_cases_need_them``): the "learned"
cases score far above or far below the threshold, the "band" cases well inside the band.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

import pytest

from router_stream.routing.strategy_config import BuildContext
from router_stream_dev.harness import produce, request_value
from router_stream_dev.model_server import ModelServer

from .helpers import assert_exactly_once, ids_of, make_config, read, setup_topics, start_worker

pytestmark = pytest.mark.kafka

BAND = 0.04  # |score - threshold| < BAND: the learned strategy abstains
#: every case's score must be this far inside the band, or this far outside it
MARGIN = 0.01


@dataclass(frozen=True)
class Case:
    rid: str
    prompt: str
    decided_by: str  # rules | learned | judge | default
    chosen: str
    tags: tuple[str, ...] = ()
    judge_reply: str | None = None  # what the judge server answers for this prompt (None: never asked)
    side: str = ""  # learned score: "strong" (far above), "weak" (far below), "band" (inside)
    judge_refusal: str = ""  # a fragment of the judge's abstain reason, for the default cases


CASES = [
    # rules decide: the learned score does not matter (one weak-side, one in-band, one strong-side prompt)
    Case("legal-1", "What is the capital of France?", "rules", "strong", tags=("legal",), side="weak"),
    Case(
        "legal-2",
        "Hume claims that moral distinctions are derived from reason. True or false?",
        "rules",
        "strong",
        tags=("legal", "ethics"),
        side="band",
    ),
    Case("legal-3", "Which of the following is true?", "rules", "strong", tags=("legal",), side="strong"),
    # learned decides, strong side
    Case("strong-1", "Which of the following statements is true?", "learned", "strong", side="strong"),
    Case(
        "strong-2",
        "For which of these two scenarios does the main character do something clearly morally "
        "wrong, according to ordinary moral standards in the US as of 2020?",
        "learned",
        "strong",
        side="strong",
    ),
    Case(
        "strong-3",
        "Statement 1 | Every integral domain has a field of quotients. Statement 2 | A polynomial of "
        "degree n over a ring can have at most n zeros.",
        "learned",
        "strong",
        tags=("algebra",),
        side="strong",
    ),
    # learned decides, weak side
    Case("weak-1", "What is the sum of 3 and 5?", "learned", "cheap", side="weak"),
    Case("weak-2", "What is 2+2?", "learned", "cheap", side="weak"),
    Case("weak-3", "What is the capital of Australia?", "learned", "cheap", tags=("geo",), side="weak"),
    # in the band: the judge decides
    Case(
        "judged-1",
        "Hume claims that moral distinctions are derived from reason. True or false?",
        "judge",
        "strong",
        judge_reply="strong",
        side="band",
    ),
    Case(
        "judged-2",
        "Prove that there are infinitely many primes.",
        "judge",
        "strong",
        judge_reply="**Strong**.\nBecause it needs a proof.",
        side="band",
    ),
    Case(
        "judged-3",
        "Identify the conclusion of the following argument.",
        "judge",
        "cheap",
        judge_reply="cheap",
        side="band",
    ),
    Case(
        "judged-4",
        "Statement 1 | Every group of order 4 is abelian. Statement 2 | Z_4 is cyclic.",
        "judge",
        "strong",
        judge_reply='"strong"',
        side="band",
    ),
    # in the band, and the judge's answer is unusable: the default decides
    Case(
        "fallback-1",
        "Translate into predicate logic: all dogs bark.",
        "default",
        "cheap",
        judge_reply="gpt-4",
        side="band",
        judge_refusal="'gpt-4' names no allowed candidate",
    ),
    Case(
        "fallback-2",
        "Which philosopher wrote the Critique of Pure Reason?",
        "default",
        "cheap",
        judge_reply="  \n ",
        side="band",
        judge_refusal="judge reply is empty",
    ),
    Case(
        "fallback-3",
        "Thanks, see you tomorrow!",
        "default",
        "cheap",
        judge_reply="judge",
        side="band",
        judge_refusal="'judge' names no allowed candidate",
    ),
    Case(
        "fallback-4",
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3)) over Q.",
        "default",
        "cheap",
        judge_reply="strong " * 40,
        side="band",
        judge_refusal="judge reply is too long",
    ),
]

STRATEGIES = [
    {"type": "rules", "name": "rules", "rules": [{"when": '"legal" in tags', "then": "strong"}]},
    {"type": "learned", "name": "learned", "weak": "cheap", "strong": "strong", "abstain_band": BAND},
    {
        "type": "judge",
        "name": "judge",
        "candidate": "judge",
        "allowed": {"cheap": "short factual answers", "strong": "reasoning, proofs, long documents"},
        "timeout_ms": 5000,
    },
]


class ScriptedJudgeServer(ModelServer):
    """A loopback model server whose answer depends on which scripted prompt the judge quotes."""

    def __init__(self, replies: dict[str, str], **kw) -> None:
        super().__init__(name="judge", answer_for=self._reply, **kw)
        self.replies = replies
        self.asked: list[str] = []  # the scripted prompts the judge was asked about, in call order
        self._asked_lock = threading.Lock()

    def _reply(self, prompt: str) -> str:
        hits = [p for p in self.replies if json.dumps(p, ensure_ascii=False) in prompt]
        with self._asked_lock:
            self.asked.extend(hits or ["<unscripted>"])
        return self.replies[hits[0]] if len(hits) == 1 else "unscripted-prompt"


def _learned_scores() -> tuple[float, dict[str, float]]:
    from router_stream.routing.learned import LearnedConfig

    strategy = LearnedConfig(type="learned", weak="cheap", strong="strong", abstain_band=BAND).build(
        BuildContext()
    )
    prompts = sorted({c.prompt for c in CASES})
    scores = strategy._router.scores(prompts)
    return strategy.threshold, {p: float(s) for p, s in zip(prompts, scores)}


def test_prompt_scores_sit_where_the_cases_need_them():
    """Precondition of the broker test: if the packaged artifact changes, this says which prompt moved."""
    threshold, scores = _learned_scores()
    wrong = []
    for c in CASES:
        d = scores[c.prompt] - threshold
        ok = {"strong": d >= BAND + MARGIN, "weak": d <= -(BAND + MARGIN), "band": abs(d) <= BAND - MARGIN}[
            c.side
        ]
        if not ok:
            wrong.append(
                f"{c.rid}: score {scores[c.prompt]:.4f} (threshold {threshold:.4f}, "
                f"diff {d:+.4f}) is not clearly on the {c.side!r} side of band ±{BAND}"
            )
    assert not wrong, "pick other prompts or another band:\n" + "\n".join(wrong)


@dataclass
class _Problems:
    """Mismatches per request id, reported together with that request's verdict trail."""

    by_rid: dict[str, list[str]] = field(default_factory=dict)
    trails: dict[str, str] = field(default_factory=dict)

    def check(self, cond: bool, rid: str, what: str, audit: dict | None = None) -> None:
        if not cond:
            self.by_rid.setdefault(rid, []).append(what)
            if audit is not None:
                self.trails[rid] = "; ".join(
                    f"{v['strategy']} {v['outcome']} {v.get('candidate') or ''} ({v.get('reason')})"
                    for v in audit["verdicts"]
                )

    def report(self) -> str:
        lines = [
            f"{sum(map(len, self.by_rid.values()))} audit/response mismatch(es) in {len(self.by_rid)} request(s):"
        ]
        for rid, items in self.by_rid.items():
            lines += [f"  {rid}: {item}" for item in items]
            if rid in self.trails:
                lines.append(f"  {rid} verdicts: {self.trails[rid]}")
        return "\n".join(lines)


def _expected_trail(c: Case) -> list[tuple[str, str, str | None]]:
    """(strategy, outcome, candidate) per verdict, in pipeline order."""
    trail = []
    for name in ("rules", "learned", "judge"):
        if name == c.decided_by:
            return [*trail, (name, "chose", c.chosen)]
        trail.append((name, "abstained", None))
    return trail  # default: everyone abstained


@pytest.fixture
def servers():
    s = {
        "cheap": ModelServer(name="cheap", latency_ms=2),
        "strong": ModelServer(name="strong", latency_ms=5),
        "judge": ScriptedJudgeServer(
            {c.prompt: c.judge_reply for c in CASES if c.judge_reply is not None}, latency_ms=2
        ),
    }
    for srv in s.values():
        srv.start_in_thread()
    yield s
    for srv in s.values():
        srv.stop()


def test_rules_learned_judge_default_audit_trail_per_request(kafka_bootstrap, servers, prefix, tmp_path):
    threshold, scores = _learned_scores()
    config = make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in servers.items()},
        default="cheap",
        strategies=STRATEGIES,
        extra={"cache": {"enabled": False}},
    )
    setup_topics(config, partitions=2)
    worker = start_worker(tmp_path, config)
    try:
        assert worker.health()["candidates_reachable"] == {"cheap": True, "strong": True, "judge": True}
        records = [(c.rid.encode(), request_value(c.rid, c.prompt, tags=list(c.tags))) for c in CASES]
        asyncio.run(produce(kafka_bootstrap, config["topics"]["requests"], records))
        responses = read(config, "responses", expect=len(CASES), timeout=40)
        audits = read(config, "audit", expect=len(CASES), timeout=20)
        assert worker.alive, worker.tail()
    finally:
        worker.terminate()

    expected_ids = {c.rid for c in CASES}
    assert_exactly_once(ids_of(responses), expected_ids, "responses")
    assert_exactly_once(ids_of(audits), expected_ids, "audit")
    audit_by = {a["request_id"]: a for a in (json.loads(r.value) for r in audits)}
    resp_by = {b["request_id"]: b for b in (json.loads(r.value) for r in responses)}

    p = _Problems()
    for c in CASES:
        a, r = audit_by[c.rid], resp_by[c.rid]
        p.check(
            a["decided_by"] == c.decided_by,
            c.rid,
            f"decided_by {a['decided_by']!r}, expected {c.decided_by!r}",
            a,
        )
        p.check(
            a["chosen"] == c.chosen and a["served_by"] == c.chosen,
            c.rid,
            f"chosen/served_by {a['chosen']!r}/{a['served_by']!r}, expected {c.chosen!r}",
            a,
        )
        p.check(a["cache_hit"] is False, c.rid, "cache_hit with the decision cache disabled", a)
        trail = [(v["strategy"], v["outcome"], v.get("candidate")) for v in a["verdicts"]]
        p.check(
            trail == _expected_trail(c), c.rid, f"verdict trail {trail}, expected {_expected_trail(c)}", a
        )
        p.check(
            [x["outcome"] for x in a["attempts"]] == ["ok"] and a["attempts"][0]["candidate"] == c.chosen,
            c.rid,
            f"attempts {a['attempts']}, expected one ok call to {c.chosen!r}",
            a,
        )
        # the response really came from the chosen loopback server (it names itself in the answer)
        p.check(
            r.get("candidate") == c.chosen
            and (r.get("output") or "").startswith(f"[{c.chosen}] answer to: "),
            c.rid,
            f"response from {r.get('candidate')!r}: {r.get('output')!r} (error {r.get('error')!r}), "
            f"expected an answer of [{c.chosen}]",
        )
        verdicts = {v["strategy"]: v for v in a["verdicts"]}

        if "rules" in verdicts and c.decided_by != "rules":
            p.check(
                verdicts["rules"]["reason"] == "no rule matched",
                c.rid,
                f"rules abstain reason {verdicts['rules']['reason']!r}",
                a,
            )
        if c.decided_by == "rules":
            p.check(
                verdicts["rules"]["detail"] == {"rule": 0}
                and "rule 0 matched" in (verdicts["rules"]["reason"] or ""),
                c.rid,
                "rules verdict detail/reason",
                a,
            )

        learned = verdicts.get("learned")
        score = f"{scores[c.prompt]:.4f}"
        if learned is not None and learned["outcome"] == "chose":
            d = learned["detail"]
            p.check(
                d.get("score") == pytest.approx(scores[c.prompt], abs=1e-5)
                and d.get("threshold") == pytest.approx(threshold)
                and str(d.get("artifact", "")).startswith("tfidf"),
                c.rid,
                f"learned detail {d}, expected score {scores[c.prompt]:.6f} threshold {threshold:.6f}",
                a,
            )
            op = ">=" if c.chosen == "strong" else "<"
            p.check(
                learned["reason"] == f"learned score {score} {op} {threshold:.4f}",
                c.rid,
                f"learned reason {learned['reason']!r}",
                a,
            )
        elif learned is not None:
            p.check(
                learned["reason"] == f"score {score} within ±{BAND} of threshold {threshold:.4f}",
                c.rid,
                f"learned abstain reason {learned['reason']!r}, expected the score {score} and the band",
                a,
            )

        judge = verdicts.get("judge")
        if judge is not None and judge["outcome"] == "chose":
            d = judge["detail"]
            p.check(
                judge["reason"] == f"judge 'judge' chose {c.chosen!r}"
                and d.get("judge") == "judge"
                and d.get("offered") == ["cheap", "strong"]
                and d.get("judge_tokens", 0) > 0,
                c.rid,
                f"judge verdict {judge['reason']!r} {d}",
                a,
            )
        elif judge is not None:
            p.check(
                c.judge_refusal and c.judge_refusal in (judge["reason"] or ""),
                c.rid,
                f"judge abstain reason {judge['reason']!r}, expected to mention {c.judge_refusal!r}",
                a,
            )
    if p.by_rid:
        pytest.fail(p.report(), pytrace=False)

    # the judge was asked exactly once about each in-band, untagged prompt, and about nothing else
    judged = sorted(c.prompt for c in CASES if c.judge_reply is not None)
    assert sorted(servers["judge"].asked) == judged, f"judge asked about {servers['judge'].asked}"
    assert servers["judge"].stats()["calls"] == len(judged)
    # every request was served by exactly one call on its chosen server (no retries, nothing extra)
    for name in ("cheap", "strong"):
        want = sum(c.chosen == name for c in CASES)
        assert servers[name].stats()["calls"] == want, (
            f"{name}: {servers[name].stats()['calls']} calls, expected {want}"
        )
