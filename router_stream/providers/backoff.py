"""How long to wait before retrying a model call: exponential backoff with "equal jitter".

One pure function, apart from the dispatch loop (:mod:`.resilience`) that sleeps on it, so the
policy can be read and tested alone.
"""

from __future__ import annotations

import random

__all__ = ["backoff_s"]


def backoff_s(
    retry: int, initial_s: float, max_s: float, rng: random.Random, retry_after: float | None = None
) -> float:
    """The wait before retry number ``retry`` (1 = the first retry).

    Exponential with "equal jitter" (uniform in [ceiling / 2, ceiling], ceiling doubling from
    ``initial_s`` up to ``max_s``) so that callers failing together do not retry together; never
    shorter than the endpoint's ``Retry-After``.
    """
    ceiling = min(max_s, initial_s * (2 ** (retry - 1)))
    delay = rng.uniform(ceiling / 2, ceiling)
    if retry_after is not None and retry_after > delay:
        delay = float(retry_after)
    return delay
