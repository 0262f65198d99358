"""Running one prompt micro-batch: the batched model call (retried while any caller still waits),
reading its answer back, and answering each waiting record: from its entry, alone (a missing
entry, an unparseable answer) or with the error.

:class:`BatchRunner` is the half of :class:`~.batching.BatchingClient` that talks to the
candidate's real client; the client itself only queues calls and decides when a batch is full.
Every call to the real client (batched, retried, or a record answered alone) books one request
with the candidate's requests-per-minute limiter first: the provider counts HTTP calls, not
records. The partial-failure rules are in :mod:`.batching`'s docstring.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import CandidateConfig
from ..errors import ConfigError, FatalModelError, ModelError, RetryableModelError
from ..schemas import Usage
from .base import ChatCall, Completion, ModelClient
from .json_path import Step, compile_json_path
from .micro_batch_format import (
    DEFAULT_JSON_PATH,
    DEFAULT_XML_PATH,
    BatchParseError,
    check_xml_path,
    parse_batch_answer,
    render_batch,
)
from .micro_batch_sharing import add_usage, scaled_params, split_usage
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)


def with_batch(exc: ModelError, batch: dict[str, Any] | None) -> ModelError:
    """A copy of ``exc`` for one record, carrying that record's batch info."""
    copy = type(exc)(str(exc), kind=exc.kind, status=exc.status, retry_after=exc.retry_after)
    copy.batch = dict(batch) if batch else None  # type: ignore[attr-defined]
    return copy


@dataclass(eq=False)
class QueuedCall:
    """One caller waiting for a batch: its call, its record text, the future it awaits."""

    call: ChatCall
    content: str
    future: asyncio.Future[Completion]
    deadline: float  # loop time by which the caller stops waiting
    tokens: int
    batch: dict[str, Any] | None = None


class _AllGone(Exception):
    """Every caller of a batch has given up; nothing to answer."""


class BatchRunner:
    """Runs the batches of one candidate against its real client ``inner`` (see the module doc).

    A ``limiter`` wait longer than ``rate_limit.max_wait_ms`` or than the callers' time fails the
    call as ``rate_limited`` (no verdict on the endpoint; the dispatcher moves on down the
    fallback chain). Raises :class:`ConfigError` at construction for a bad ``batch.response.path``.
    """

    def __init__(
        self,
        candidate_name: str,
        cfg: CandidateConfig,
        inner: ModelClient,
        *,
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

    async def run(self, items: list[QueuedCall], params: dict[str, Any]) -> None:
        """Answer every caller of one batch (``params`` are the calls' shared request params)."""
        try:
            await self._run_batch(items, params)
        except asyncio.CancelledError:  # aclose(): nobody will answer these callers
            for item in items:
                self._fail(
                    item, RetryableModelError(f"{self.name}: batching client closed", kind="connection")
                )
            raise

    async def _run_batch(self, items: list[QueuedCall], params: dict[str, Any]) -> None:
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
        missing: list[tuple[QueuedCall, Usage]] = []
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
        self, items: list[QueuedCall], messages: list[dict[str, Any]], params: dict[str, Any]
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
                await self.book_call(timeout_s)
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

    async def _alone(self, members: list[tuple[QueuedCall, Usage]], reason: str) -> None:
        """Answer each record with its own call; its usage includes its share of the batch."""
        await asyncio.gather(*(self._one(item, share, reason) for item, share in members))

    async def _one(self, item: QueuedCall, share: Usage, reason: str) -> None:
        if item.future.done():
            return
        info = {**(item.batch or {}), "answered": "alone", "reason": reason}
        item.batch = info
        loop = asyncio.get_running_loop()
        remaining = item.deadline - loop.time()
        if remaining <= 0:
            return  # the caller has timed out already
        try:
            await self.book_call(remaining)
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

    async def book_call(self, time_left_s: float) -> None:
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
    def _fail(item: QueuedCall, exc: ModelError) -> None:
        if not item.future.done():
            item.future.set_exception(with_batch(exc, item.batch))
