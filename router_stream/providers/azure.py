"""``api: azure-openai``: Azure OpenAI's deployment endpoints.

Azure speaks OpenAI's chat-completions body and answer; what differs is the address and the key:

* ``POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}``
  where ``base_url`` is the resource endpoint (``https://NAME.openai.azure.com``), ``deployment``
  defaults to ``model`` and ``api_version`` is required (e.g. ``2024-10-21``);
* the key goes in an ``api-key`` header (from ``api_key_env``); a Microsoft Entra token instead
  goes in ``headers: {Authorization: {env: AZURE_TOKEN}}`` (with the value ``Bearer <token>``);
* the body has no ``model``: the deployment in the URL picks the model, and Azure's reference
  request body does not take one.

Errors map as OpenAI's (:func:`~.dialect.openai_status_error`), except a 400 whose error code
is ``content_filter`` (Azure's content filter refused the prompt): kind ``content_filter``, fatal,
so the chain moves on without retrying the same prompt on the same deployment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from ..config import CandidateConfig
from ..errors import FatalModelError, ModelError
from .dialect import OpenAIDialect, WireRequest, error_code, openai_status_error


class AzureOpenAIDialect(OpenAIDialect):
    """See the module doc."""

    api = "azure-openai"

    def __init__(self, name: str, cfg: CandidateConfig) -> None:
        deployment = quote(cfg.deployment or cfg.model, safe="")
        super().__init__(
            name,
            cfg,
            f"/openai/deployments/{deployment}/chat/completions",
            (("api-version", cfg.api_version or ""),),
        )

    def auth_headers(self) -> list[tuple[str, str]]:
        key = self.cfg.api_key()
        return [("api-key", key)] if key else []

    def request(self, body: dict[str, Any]) -> WireRequest:
        return WireRequest(self.url(), self.headers(), {k: v for k, v in body.items() if k != "model"})

    def status_error(self, resp: httpx.Response) -> ModelError:
        if resp.status_code == 400 and error_code(resp)[1] == "content_filter":
            return FatalModelError(
                f"{self.name}: HTTP 400 from model endpoint (Azure content filter refused the prompt)",
                kind="content_filter",
                status=400,
            )
        return openai_status_error(self.name, resp)
