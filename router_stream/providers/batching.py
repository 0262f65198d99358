"""Prompt micro-batching: many concurrent calls to one candidate answered by one model call.

:class:`BatchingClient` is a :class:`~.base.ModelClient` that wraps a candidate's real client
(the dispatcher in :mod:`.resilience` wraps it when ``batch.size > 1``). Concurrent
:meth:`~BatchingClient.complete` calls with the same request params wait in a queue until
``batch.size`` have come or ``batch.timeout_ms`` has passed since the first one (or the next
record would overflow ``context_window``); then ONE chat call carries them all, written and read
back in the text format of :mod:`.micro_batch_format`. ("Batch" in this module is always that
prompt micro-batch, not a Kafka fetch batch or a Batch API job.)

Every waiting call gets its own :class:`~.base.Completion` (the batch's usage split evenly,
``batch={"id", "size", "position", "answered": "batch"}``). Partial failure:

* a record with no entry (missing, bad or duplicated index) is called alone when
  ``on_missing: individual`` (its ``batch`` says ``"answered": "alone", "reason": "missing"``),
  or fails with ``RetryableModelError(kind="batch_missing")`` when ``on_missing: error``;
* an answer that cannot be parsed at all makes every record call alone
  (``on_parse_error: individual``) or fail with ``kind="batch_parse_error"`` (``error``);
* a failed batched call is retried ``batch.max_retries`` times (backoff, ``Retry-After``
  honoured); after that every record gets the error, which the dispatcher retries / falls back
  on per record as for any call (a retry joins a new batch).

Calls that cannot share a prompt (:mod:`.micro_batch_sharing` says which and why) go straight to
the wrapped client, answered whole as by any single call. A batch entry's answer is text: its
``finish_reason`` is ``stop`` when the batched call stopped by itself, else unknown (a ``length``
cut may or may not have hit it). Each caller keeps its own timeout (``call.timeout_s`` counted
from when it joined the queue).

This module queues calls and decides when a batch goes; running it (the call, the answer, the
records answered alone) is :class:`~.micro_batch_run.BatchRunner`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import CandidateConfig
from ..errors import RetryableModelError
from .base import ChatCall, Completion, ModelClient, estimate_tokens
from .micro_batch_format import render_batch, render_record
from .micro_batch_run import BatchRunner, QueuedCall, with_batch
from .micro_batch_sharing import params_key, record_text, unbatchable_reason
from .ratelimit import RateLimiter

__all__ = ["BatchingClient"]


@dataclass(eq=False)
class _Queue:
    params: dict[str, Any]
    items: list[QueuedCall] = field(default_factory=list)
    tokens: int = 0
    timer: asyncio.TimerHandle | None = None


class BatchingClient:
    """:class:`~.base.ModelClient` that folds concurrent calls into batched prompts.

    ``inner`` is the candidate's real client; it is closed by :meth:`aclose` only when
    ``owns_inner`` is true. One instance serves one candidate on one event loop.

    With a ``limiter`` (the candidate's requests-per-minute bucket), every call to ``inner``
    (batched, retried, or a record answered alone) books one request first: the provider counts
    HTTP calls, not records. A wait longer than ``rate_limit.max_wait_ms`` or than the callers'
    time fails the call as ``rate_limited`` (no verdict on the endpoint; the dispatcher moves on
    down the fallback chain). Tokens stay booked per record by the dispatcher.
    """

    def __init__(
        self,
        candidate_name: str,
        cfg: CandidateConfig,
        inner: ModelClient,
        *,
        owns_inner: bool = False,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        limiter: RateLimiter | None = None,
        on_rate_limit_wait: Callable[[float], Any] | None = None,
    ) -> None:
        self.name = candidate_name
        self.cfg = cfg
        self.batch_cfg = cfg.batch
        self.inner = inner
        self.owns_inner = owns_inner
        self._runner = BatchRunner(
            candidate_name,
            cfg,
            inner,
            rng=rng,
            sleep=sleep,
            limiter=limiter,
            on_rate_limit_wait=on_rate_limit_wait,
        )
        self.limiter = self._runner.limiter
        # prompt budget of the fixed parts, for flushing before the context window overflows
        fixed = render_batch(
            self.batch_cfg.system_prompt, self.batch_cfg.prompt_template, self.batch_cfg.response, []
        )
        self._fixed_tokens = sum(estimate_tokens(m["content"]) + 4 for m in fixed)
        self._queues: dict[str, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"BatchingClient(name={self.name!r}, size={self.batch_cfg.size}, inner={self.inner!r})"

    # ---- ModelClient -----------------------------------------------------------------------
    async def complete(self, call: ChatCall) -> Completion:
        content = record_text(call.messages) if unbatchable_reason(call.params) is None else None
        key = params_key(call.params) if content is not None else None
        if content is None or key is None:
            await self._runner.book_call(call.timeout_s)
            return await self.inner.complete(call)
        if self._closed:
            raise RetryableModelError(f"{self.name}: batching client is closed", kind="connection")
        loop = asyncio.get_running_loop()
        timeout_s = max(0.001, call.timeout_s)
        tokens = estimate_tokens(render_record(self.batch_cfg.prompt_template, "000", content))
        item = QueuedCall(
            call=call,
            content=content,
            future=loop.create_future(),
            deadline=loop.time() + timeout_s,
            tokens=tokens,
        )
        self._enqueue(key, call.params, item)
        try:
            async with asyncio.timeout(timeout_s):
                return await item.future
        except TimeoutError:
            if item.future.done() and not item.future.cancelled():
                return item.future.result()
            self._withdraw(key, item)
            exc = RetryableModelError(f"{self.name}: no answer within {timeout_s:.3g}s", kind="timeout")
            raise with_batch(exc, item.batch) from None
        except asyncio.CancelledError:
            self._withdraw(key, item)
            raise

    async def aclose(self) -> None:
        """Fail what waits, stop running batches, then close ``inner`` if this client owns it."""
        self._closed = True
        for key in list(self._queues):
            queue = self._queues.pop(key)
            if queue.timer is not None:
                queue.timer.cancel()
            for item in queue.items:
                if not item.future.done():
                    item.future.set_exception(
                        RetryableModelError(f"{self.name}: batching client closed", kind="connection")
                    )
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.owns_inner:
            await self.inner.aclose()

    # ---- queueing ----------------------------------------------------------------------------
    def _enqueue(self, key: str, params: dict[str, Any], item: QueuedCall) -> None:
        queue = self._queues.get(key)
        window = self.cfg.context_window
        if (
            queue is not None
            and queue.items
            and window is not None
            and self._fixed_tokens + queue.tokens + item.tokens > window
        ):
            self._flush(key, queue)  # this record would overflow the context window: start anew
            queue = None
        if queue is None:
            queue = self._queues[key] = _Queue(params=dict(params))
        queue.items.append(item)
        queue.tokens += item.tokens
        if len(queue.items) >= self.batch_cfg.size:
            self._flush(key, queue)
        elif queue.timer is None:
            loop = asyncio.get_running_loop()
            queue.timer = loop.call_later(self.batch_cfg.timeout_ms / 1000.0, self._flush, key, queue)

    def _withdraw(self, key: str, item: QueuedCall) -> None:
        queue = self._queues.get(key)
        if queue is None or item not in queue.items:
            return
        queue.items.remove(item)
        queue.tokens -= item.tokens
        if not queue.items:
            if queue.timer is not None:
                queue.timer.cancel()
            del self._queues[key]

    def _flush(self, key: str, queue: _Queue) -> None:
        if self._queues.get(key) is not queue:
            return  # a stale timer: this queue was flushed already
        del self._queues[key]
        if queue.timer is not None:
            queue.timer.cancel()
        items = [i for i in queue.items if not i.future.done()]
        if not items:
            return
        task = asyncio.get_running_loop().create_task(self._runner.run(items, queue.params))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
