"""The runtime: candidate endpoints probed for readiness, and the README's every-strategy pipeline builds."""

from __future__ import annotations

from router_stream_dev.model_server import ModelServer


async def test_tcp_reachability_of_candidate_endpoints():
    from router_stream.runtime import tcp_reachable
    from router_stream_dev.harness import free_port

    async with ModelServer(name="up") as up:
        assert await tcp_reachable(up.base_url) is True
    assert await tcp_reachable(f"http://127.0.0.1:{free_port()}/v1") is False


def test_readme_pipeline_of_every_strategy_type_builds():
    """The README's one-pipeline example must stay a valid config that builds every strategy."""
    import re
    from pathlib import Path

    import yaml

    from router_stream.config import RouterConfig
    from router_stream.routing.registry import StrategyConfig
    from router_stream.runtime import build_pipeline

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index("Every strategy type in one pipeline")
    block = re.search(r"```yaml\n(.*?)```", text[start:], re.S).group(1)
    data = yaml.safe_load(block)
    data["candidates"] = {
        name: {
            "base_url": "http://127.0.0.1:9/v1",
            "model": name,
            "price_input_per_1k": p,
            "price_output_per_1k": 3 * p,
        }
        for name, p in (("cheap", 0.0005), ("strong", 0.01))
    }
    pipeline = build_pipeline(RouterConfig.model_validate(data))
    types = {s["type"] for s in data["strategies"]}
    from typing import get_args

    union = get_args(StrategyConfig)[0]  # Annotated[Union[...], Field] -> Union of the config classes
    known = {get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(union)}
    assert types == known, f"README example lacks {known - types}"
    assert len(pipeline.strategies) == len(data["strategies"])
