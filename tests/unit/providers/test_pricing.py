"""One cost formula (providers/pricing.py): every place that prices a call agrees with it."""

from __future__ import annotations

import pytest

from router_stream.budgets import Ledger
from router_stream.config import CandidateConfig, parse_config
from router_stream.providers.base import estimate_prompt_tokens
from router_stream.providers.batch_api import BatchAPIClient
from router_stream.providers.pricing import FREE, Prices, cost_usd
from router_stream.schemas import Request, Usage

LOCAL = "http://127.0.0.1:9/v1"


def test_the_formula_prices_per_1k_tokens_and_applies_the_discount():
    cfg = CandidateConfig(base_url=LOCAL, model="m", price_input_per_1k=1.0, price_output_per_1k=2.0)
    assert cost_usd(cfg, 1000, 500) == pytest.approx(2.0)
    assert cost_usd(cfg, 1000, 500, discount=0.5) == pytest.approx(1.0)
    assert cost_usd(Prices(0.5, 0.25), 2000, 4000) == pytest.approx(2.0)
    assert cost_usd(FREE, 10**6, 10**6) == 0.0


async def test_the_batch_api_client_bills_its_discount_through_the_formula():
    cfg = CandidateConfig(
        base_url=LOCAL,
        model="m",
        price_input_per_1k=0.3,
        price_output_per_1k=0.7,
        batch_api={"discount": 0.4},
    )
    client = BatchAPIClient("m", cfg)
    try:
        usage = Usage(prompt_tokens=123, completion_tokens=45, total_tokens=168)
        assert client.cost_usd(usage) == cost_usd(cfg, 123, 45, discount=0.4)
        assert client.cost_usd(usage) == pytest.approx(0.4 * (123 * 0.3 + 45 * 0.7) / 1000)
    finally:
        await client.aclose()


def test_a_budget_estimate_is_the_formula_on_the_estimated_tokens():
    config = parse_config(
        {
            "candidates": {
                "cheap": {
                    "base_url": LOCAL,
                    "model": "c",
                    "price_input_per_1k": 0.03,
                    "price_output_per_1k": 0.07,
                }
            },
            "default": "cheap",
            "budgets": [{"name": "b", "scope": "key", "window": "day", "limit": {"usd": 1}}],
        },
        environ={},
    )
    ledger = Ledger(config.budgets, config.candidates)
    request = Request.model_validate({"request_id": "r", "prompt": "price me " * 40, "max_tokens": 77})
    micro_usd, tokens = ledger.estimate("cheap", request, config.budgets[0])
    prompt = estimate_prompt_tokens(request.chat_messages())
    assert tokens == prompt + 77
    assert micro_usd == round(cost_usd(config.candidates["cheap"], prompt, 77) * 1_000_000)
