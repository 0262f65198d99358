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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import CandidateConfig
from ..errors import ConfigError, FatalModelError, ModelError, RetryableModelError
from ..schemas import Usage
from .base import ChatCall, Completion, ModelClient, estimate_tokens
from .json_path import Step, compile_json_path
from .micro_batch_format import (
    DEFAULT_JSON_PATH,
    DEFAULT_XML_PATH,
    BatchParseError,
    check_xml_path,
    parse_batch_answer,
    render_batch,
    render_record,
)
from .micro_batch_sharing import (
    add_usage,
    params_key,
    record_text,
    scaled_params,
    split_usage,
    unbatchable_reason,
)
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

__all__ = ["BatchingClient"]


def _with_batch(exc: ModelError, batch: dict[str, Any] | None) -> ModelError:
    """A copy of ``exc`` for one record, carrying that record's batch info."""
    copy = type(exc)(str(exc), kind=exc.kind, status=exc.status, retry_after=exc.retry_after)
    copy.batch = dict(batch) if batch else None  # type: ignore[attr-defined]
    return copy


@dataclass(eq=False)
class _Item:
    call: ChatCall
    content: str
    future: asyncio.Future[Completion]
    deadline: float  # loop time by which the caller stops waiting
    tokens: int
    batch: dict[str, Any] | None = None


@dataclass(eq=False)
class _Queue:
    params: dict[str, Any]
    items: list[_Item] = field(default_factory=list)
    tokens: int = 0
    timer: asyncio.TimerHandle | None = None


class _AllGone(Exception):
    """Every caller of a batch has given up; nothing to answer."""


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
        self.limiter = limiter if limiter is not None and limiter.requests is not None else None
        self._on_wait = on_rate_limit_wait
        self.cfg = cfg
        self.batch_cfg = cfg.batch
        self.inner = inner
        self.owns_inner = owns_inner
        self._rng = rng or random.Random()
        self._sleep = sleep
        resp = self.batch_cfg.response
        self._json_steps: list[Step] | None = None
        if resp.format == "json":
            try:
                self._json_steps = compile_json_path(resp.path or DEFAULT_JSON_PATH)
            except ValueError as exc:
                raise ConfigError(f"candidates.{candidate_name}.batch.response.path: {exc}") from None
        elif resp.format == "xml":
            try:
                check_xml_path(resp.path or DEFAULT_XML_PATH)
            except ValueError as exc:
                raise ConfigError(
                    f"candidates.{candidate_name}.batch.response.path: "
                    f"{resp.path!r} is not an ElementTree XPath ({exc})"
                ) from None
        # prompt budget of the fixed parts, for flushing before the context window overflows
        fixed = render_batch(self.batch_cfg.system_prompt, self.batch_cfg.prompt_template, resp, [])
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
            await self._book_call(call.timeout_s)
            return await self.inner.complete(call)
        if self._closed:
            raise RetryableModelError(f"{self.name}: batching client is closed", kind="connection")
        loop = asyncio.get_running_loop()
        timeout_s = max(0.001, call.timeout_s)
        tokens = estimate_tokens(render_record(self.batch_cfg.prompt_template, "000", content))
        item = _Item(
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
            raise _with_batch(exc, item.batch) from None
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
    def _enqueue(self, key: str, params: dict[str, Any], item: _Item) -> None:
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

    def _withdraw(self, key: str, item: _Item) -> None:
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
        task = asyncio.get_running_loop().create_task(self._run(items, queue.params))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- one batch ---------------------------------------------------------------------------
    async def _run(self, items: list[_Item], params: dict[str, Any]) -> None:
        try:
            await self._run_batch(items, params)
        except asyncio.CancelledError:  # aclose(): nobody will answer these callers
            for item in items:
                self._fail(
                    item, RetryableModelError(f"{self.name}: batching client closed", kind="connection")
                )
            raise

    async def _run_batch(self, items: list[_Item], params: dict[str, Any]) -> None:
        n = len(items)
        batch_id = uuid.uuid4().hex[:16]
        for pos, item in enumerate(items):
            item.batch = {"id": batch_id, "size": n, "position": pos, "answered": "batch"}
        cfg = self.batch_cfg
        messages = render_batch(
            cfg.system_prompt, cfg.prompt_template, cfg.response, [i.content for i in items]
        )
        try:
            completion = await self._call_batch(items, messages, scaled_params(params, n))
        except _AllGone:
            return
        except ModelError as exc:
            for item in items:
                self._fail(item, exc)
            return
        except Exception as exc:  # a bug in the wrapped client must not leave callers hanging
            log.error("batched call for candidate %s raised %s", self.name, type(exc).__name__, exc_info=True)
            err: ModelError = FatalModelError(
                f"{self.name}: client error ({type(exc).__name__})", kind="internal"
            )
            for item in items:
                self._fail(item, err)
            return
        shares = split_usage(completion.usage, n)
        try:
            parsed = parse_batch_answer(completion.text, cfg.response, n, self._json_steps)
        except BatchParseError as exc:
            log.warning(
                "candidate %s: batch %s (%d records) answer not parseable as %s: %s",
                self.name,
                batch_id,
                n,
                cfg.response.format,
                exc,
            )
            if cfg.on_parse_error == "individual":
                await self._alone(list(zip(items, shares)), "parse_error")
            else:
                err = RetryableModelError(
                    f"{self.name}: batched answer not parseable as {cfg.response.format} ({exc})",
                    kind="batch_parse_error",
                    status=completion.status,
                )
                for item in items:
                    self._fail(item, err)
            return
        missing: list[tuple[_Item, Usage]] = []
        for pos, item in enumerate(items):
            text = parsed.answers.get(pos)
            if text is None:
                missing.append((item, shares[pos]))
            elif not item.future.done():
                item.future.set_result(
                    Completion(
                        text=text,
                        provider_model=completion.provider_model,
                        usage=shares[pos],
                        latency_ms=completion.latency_ms,
                        status=completion.status,
                        batch=dict(item.batch or {}),
                        finish_reason="stop" if completion.finish_reason == "stop" else None,
                        response_id=completion.response_id,
                        system_fingerprint=completion.system_fingerprint,
                        service_tier=completion.service_tier,
                    )
                )
        if not missing:
            return
        log.info(
            "candidate %s: batch %s answered %d of %d records (%d bad entries, duplicates %s)",
            self.name,
            batch_id,
            n - len(missing),
            n,
            parsed.bad,
            parsed.duplicates,
        )
        if cfg.on_missing == "individual":
            await self._alone(missing, "missing")
        else:
            for item, _ in missing:
                position = (item.batch or {}).get("position")
                self._fail(
                    item,
                    RetryableModelError(
                        f"{self.name}: batched answer has no usable entry for record {position}",
                        kind="batch_missing",
                        status=completion.status,
                    ),
                )

    async def _call_batch(
        self, items: list[_Item], messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Completion:
        """The batched call, retried ``batch.max_retries`` times while any caller still waits."""
        loop = asyncio.get_running_loop()
        limit_ms = self.batch_cfg.request_timeout_ms or self.cfg.request_timeout_ms
        retry = 0
        while True:
            live = [i for i in items if not i.future.done()]
            if not live:
                raise _AllGone()
            last = max(i.deadline for i in live)
            timeout_s = min(limit_ms / 1000.0, last - loop.time())
            if timeout_s <= 0:
                raise RetryableModelError(f"{self.name}: no time left for the batched call", kind="timeout")
            try:
                started = loop.time()
                await self._book_call(timeout_s)
                timeout_s = max(0.001, timeout_s - (loop.time() - started))
                return await self.inner.complete(
                    ChatCall(messages=messages, params=params, timeout_s=timeout_s)
                )
            except RetryableModelError as exc:
                if retry >= self.batch_cfg.max_retries:
                    raise
                retry += 1
                ceiling = min(2.0, 0.1 * 2 ** (retry - 1))
                delay = max(self._rng.uniform(ceiling / 2, ceiling), exc.retry_after or 0.0)
                if loop.time() + delay >= last:
                    raise
                log.info(
                    "candidate %s: batched call failed (%s), retry %d in %.2fs",
                    self.name,
                    exc.kind,
                    retry,
                    delay,
                )
                await self._sleep(delay)

    async def _alone(self, members: list[tuple[_Item, Usage]], reason: str) -> None:
        """Answer each record with its own call; its usage includes its share of the batch."""
        await asyncio.gather(*(self._one(item, share, reason) for item, share in members))

    async def _one(self, item: _Item, share: Usage, reason: str) -> None:
        if item.future.done():
            return
        info = {**(item.batch or {}), "answered": "alone", "reason": reason}
        item.batch = info
        loop = asyncio.get_running_loop()
        remaining = item.deadline - loop.time()
        if remaining <= 0:
            return  # the caller has timed out already
        try:
            await self._book_call(remaining)
            remaining = item.deadline - loop.time()
            call = ChatCall(
                messages=item.call.messages, params=item.call.params, timeout_s=max(0.001, remaining)
            )
            completion = await self.inner.complete(call)
        except ModelError as exc:
            self._fail(item, exc)
            return
        except Exception as exc:
            log.error("model client for candidate %s raised %s", self.name, type(exc).__name__, exc_info=True)
            self._fail(
                item, FatalModelError(f"{self.name}: client error ({type(exc).__name__})", kind="internal")
            )
            return
        if not item.future.done():  # the whole answer of its own call, with its share of the batch
            item.future.set_result(
                dataclasses.replace(completion, usage=add_usage(completion.usage, share), batch=dict(info))
            )

    async def _book_call(self, time_left_s: float) -> None:
        """Book one request with the limiter, waiting for the budget if it comes in time."""
        if self.limiter is None:
            return
        max_wait = min(self.cfg.rate_limit.max_wait_ms / 1000.0, max(0.0, time_left_s))
        wait = self.limiter.reserve(0, max_wait, requests=1)
        if wait is None:
            raise FatalModelError(
                f"{self.name}: rate limit budget exhausted "
                f"(requests_per_minute={self.cfg.rate_limit.requests_per_minute})",
                kind="rate_limited",
            )
        if wait > 0:
            if self._on_wait is not None:
                self._on_wait(wait)
            await self._sleep(wait)

    @staticmethod
    def _fail(item: _Item, exc: ModelError) -> None:
        if not item.future.done():
            item.future.set_exception(_with_batch(exc, item.batch))
