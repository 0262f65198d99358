"""The Batch API emulator over HTTP: OpenAI's ``/v1/files`` and ``/v1/batches`` routes.

Only the translation between requests and :class:`~.batch_api_server.BatchAPIEmulator`'s methods
lives here (parse and check the body, answer OpenAI-shaped errors); the files, the jobs, their
clock and the counters stay with the emulator, so its Python API and its HTTP API cannot drift
apart. Every route goes through the emulator's gate first: counted, a scripted failure from
``fail_next``, or a 401 when the server has an API key and the request does not carry it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .batch_api_jobs import ENDPOINTS, WINDOW_S
from .loopback_http import openai_error, status_error

if TYPE_CHECKING:  # pragma: no cover
    from .batch_api_server import BatchAPIEmulator

__all__ = ["add_batch_api_routes"]

Handler = Callable[[web.Request], Awaitable[web.Response]]


def add_batch_api_routes(app: web.Application, emulator: BatchAPIEmulator) -> None:
    """Serve ``emulator``'s files and batches on ``app`` (the admin route is added by the emulator)."""
    routes = _Routes(emulator)
    app.router.add_post("/v1/files", routes.gated(routes.upload))
    app.router.add_get("/v1/files/{file_id}", routes.gated(routes.file))
    app.router.add_get("/v1/files/{file_id}/content", routes.gated(routes.file_content))
    app.router.add_delete("/v1/files/{file_id}", routes.gated(routes.file_delete))
    app.router.add_post("/v1/batches", routes.gated(routes.create))
    app.router.add_get("/v1/batches", routes.gated(routes.list))
    app.router.add_get("/v1/batches/{batch_id}", routes.gated(routes.get))
    app.router.add_post("/v1/batches/{batch_id}/cancel", routes.gated(routes.cancel))


class _Routes:
    """The handlers of one emulator."""

    def __init__(self, emulator: BatchAPIEmulator) -> None:
        self.em = emulator

    def gated(self, handler: Handler) -> Handler:
        """``handler`` behind the gate: every files/batches request is counted and checked."""

        async def gated(request: web.Request) -> web.Response:
            denied = self.gate(request)
            return denied if denied is not None else await handler(request)

        return gated

    def gate(self, request: web.Request) -> web.Response | None:
        """Count the request; answer a scripted failure or a 401; None = go on."""
        auth = request.headers.get("Authorization")
        scripted = self.em.count_request(auth)
        if scripted is not None:
            return status_error(scripted, retry_after="1")
        api_key = self.em.api_key
        if api_key is not None and auth != f"Bearer {api_key}":
            return openai_error(401, "invalid API key", "invalid_request_error")
        return None

    async def upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return openai_error(400, "expected multipart/form-data", "invalid_request_error")
        form = await request.post()
        purpose = form.get("purpose")
        upload = form.get("file")
        if purpose != "batch":
            return openai_error(400, "purpose must be 'batch'", "invalid_request_error")
        if not isinstance(upload, web.FileField):  # None, a text field, or bytes
            return openai_error(400, "'file' must be a file part", "invalid_request_error")
        f = self.em.upload(upload.filename or "upload.jsonl", upload.file.read())
        return web.json_response(f.obj())

    async def file(self, request: web.Request) -> web.Response:
        f = self.em.stored_file(request.match_info["file_id"])
        return web.json_response(f.obj()) if f else openai_error(404, "no such file", "invalid_request_error")

    async def file_content(self, request: web.Request) -> web.Response:
        f = self.em.stored_file(request.match_info["file_id"])
        if f is None:
            return openai_error(404, "no such file", "invalid_request_error")
        return web.Response(body=f.data, content_type="application/octet-stream")

    async def file_delete(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if not self.em.delete_file(file_id):
            return openai_error(404, "no such file", "invalid_request_error")
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return openai_error(400, "body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return openai_error(400, "expected a JSON object", "invalid_request_error")
        endpoint = body.get("endpoint")
        window = body.get("completion_window")
        metadata = body.get("metadata") or {}
        if endpoint not in ENDPOINTS:
            return openai_error(
                400, f"endpoint must be one of {', '.join(ENDPOINTS)}", "invalid_request_error"
            )
        if window not in WINDOW_S:
            return openai_error(400, "completion_window must be '24h'", "invalid_request_error")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            return openai_error(400, "metadata must map strings to strings", "invalid_request_error")
        job = self.em.create_job(str(body.get("input_file_id")), endpoint, window, dict(metadata))
        if job is None:
            return openai_error(400, "input_file_id is not an uploaded batch file", "invalid_request_error")
        return web.json_response(job)

    async def list(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(100, int(request.query.get("limit", "20"))))
        except ValueError:
            return openai_error(400, "limit must be an integer", "invalid_request_error")
        data, has_more = self.em.list_jobs(limit)
        return web.json_response({"object": "list", "data": data, "has_more": has_more})

    async def get(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.em.job(request.match_info["batch_id"]))
        except KeyError:
            return openai_error(404, "no such batch", "invalid_request_error")

    async def cancel(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.em.cancel(request.match_info["batch_id"]))
        except KeyError:
            return openai_error(404, "no such batch", "invalid_request_error")
        except ValueError as exc:  # already terminal
            return openai_error(400, str(exc), "invalid_request_error")
