"""Candidate configuration: one model endpoint (``candidates.NAME`` in the YAML) and the per-candidate
sections it carries (breaker, rate limit, prompt micro-batching, Batch API).

Apart from :mod:`router_stream.config` because these models are what the provider clients read
(``providers/`` imports them) and they change with the providers, not with the Kafka/worker
settings; :class:`CandidateConfig` stays importable from :mod:`router_stream.config`, where the
whole file's model (``RouterConfig``) uses it. Secrets never sit in these objects: a candidate
names the env var that holds its key, and a header/query secret is ``{env: NAME}``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .env_names import check_env_name, check_http_url
from .secret_values import ConfigValue, parse_headers, parse_query


class StrictModel(BaseModel):
    """Unknown keys are an error (a typo would otherwise be silently ignored): the base of every
    config section, here and in :mod:`router_stream.config`."""

    model_config = ConfigDict(extra="forbid")


class BreakerConfig(StrictModel):
    """Circuit breaker per candidate: open after ``failure_threshold`` failures in ``window_s``."""

    failure_threshold: int = Field(5, ge=1)
    window_s: float = Field(30.0, gt=0)
    cooldown_s: float = Field(10.0, gt=0)


class RateLimitConfig(StrictModel):
    """Token-bucket budgets; on exhaustion wait up to ``max_wait_ms`` then fall back."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    max_wait_ms: int = Field(0, ge=0)


class BatchResponseConfig(StrictModel):
    """Where the answers sit in a batched reply (issue names ``response.format`` / ``.path`` /
    ``.index.field`` / ``.value.field``); see ``docs/micro-batching.md``."""

    format: Literal["json", "xml", "delimited"] = "json"
    path: str | None = Field(
        None,
        description="json: JSONPath to the answers (default $.results); "
        "xml: ElementTree XPath to the item elements (default ./item)",
    )
    index_field: str = Field(
        "index", description="json key / xml child tag or @attribute holding the record index"
    )
    value_field: str = Field(
        "value", description="json key / xml child tag, @attribute or '.' holding the answer"
    )
    delimiter: str = Field("\n", min_length=1, description="delimited: between entries")
    field_delimiter: str = Field("|", min_length=1, description="delimited: between index and answer")

    @model_validator(mode="after")
    def _shape(self) -> BatchResponseConfig:
        if self.format == "json" and self.path is not None and not self.path.startswith("$"):
            raise ValueError(f"path {self.path!r}: a JSONPath starts with '$'")
        if self.format == "delimited" and self.field_delimiter in self.delimiter:
            raise ValueError("field_delimiter must not occur in delimiter")
        return self


class BatchConfig(StrictModel):
    """Prompt micro-batching per candidate: ``size`` > 1 folds concurrent calls into one prompt."""

    size: int = Field(1, ge=1, le=1000, description="records per model call; 1 = off")
    timeout_ms: int = Field(50, ge=0, description="flush a partial batch this long after its first record")
    system_prompt: str | None = Field(
        None, description="placeholders {count} and {format_instructions}; None = the built-in instructions"
    )
    prompt_template: str = Field(
        '<record index="{index}">\n{content}\n</record>',
        description="one record; placeholders {index} and {content}",
    )
    response: BatchResponseConfig = Field(default_factory=BatchResponseConfig)
    on_parse_error: Literal["individual", "error"] = "individual"
    on_missing: Literal["individual", "error"] = "individual"
    max_retries: int = Field(1, ge=0, le=20, description="retries of the batched call itself")
    request_timeout_ms: int | None = Field(None, ge=1, description="per batched call; None = the candidate's")

    @field_validator("prompt_template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        for name in ("{index}", "{content}"):
            if name not in v:
                raise ValueError(f"prompt_template needs the placeholder {name}")
        return v


class BatchAPIConfig(StrictModel):
    """OpenAI-style Batch API (``/v1/files`` + ``/v1/batches``) for a candidate with ``mode: batch``.

    Not prompt micro-batching (that is ``batch``, :class:`BatchConfig`); see ``docs/batch-api.md``."""

    max_records: int = Field(1000, ge=1, le=50_000, description="records per batch job")
    max_wait_ms: int = Field(5000, ge=0, description="submit a partial job this long after its first record")
    poll_interval_ms: int = Field(2000, ge=1, description="time between status polls of a submitted job")
    discount: float = Field(0.5, ge=0, le=1, description="price multiplier of batch calls (0.5 = half price)")
    completion_window: str = Field(
        "24h", pattern=r"^[1-9][0-9]*[hd]$", description="the provider's window, e.g. 24h"
    )
    endpoint: str = Field("/v1/chat/completions", pattern=r"^/", description="the url of every JSONL line")
    request_timeout_ms: int | None = Field(
        None, ge=1, description="per files/batches HTTP call; None = the candidate's"
    )


class CandidateConfig(StrictModel):
    """One model endpoint: OpenAI-compatible chat completions (``api: openai``), Azure OpenAI or
    Anthropic's Messages API; requests are OpenAI-shaped and the adapter translates (docs/providers.md)."""

    # a ValidationError's text must not quote a header/query value or a pasted key
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str
    model: str
    api: Literal["openai", "azure-openai", "anthropic"] = Field(
        "openai", description="the provider's HTTP API"
    )
    headers: dict[str, ConfigValue] = Field(
        default_factory=dict, description="extra HTTP headers; a secret as {env: NAME}"
    )
    query: dict[str, ConfigValue] = Field(
        default_factory=dict, description="extra URL query parameters; a secret as {env: NAME}"
    )
    api_version: str | None = Field(
        None,
        description="azure-openai: the api-version parameter (required); "
        "anthropic: the anthropic-version header (default 2023-06-01)",
    )
    deployment: str | None = Field(None, description="azure-openai: the deployment name (default: model)")
    default_max_tokens: int = Field(4096, ge=1, description="anthropic: max_tokens when a request sets none")
    content_parts: Literal["native", "text"] = Field(
        "native",
        description="text: send a message's text-only part list as one string, for servers whose chat "
        "template takes string content only (e.g. llama.cpp with many models); a request "
        "with image, audio or file parts is then unsupported_input (the next candidate serves)",
    )
    api_key_env: str | None = Field(None, description="name of the env var holding the API key")
    request_timeout_ms: int = Field(30_000, ge=1)
    max_retries: int = Field(3, ge=0, le=20)
    price_input_per_1k: float = Field(0.0, ge=0)
    price_output_per_1k: float = Field(0.0, ge=0)
    context_window: int | None = Field(None, ge=1)
    fallbacks: list[str] = Field(default_factory=list)
    max_connections: int = Field(256, ge=1)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    mode: Literal["online", "batch"] = Field(
        "online", description="batch = the provider's Batch API (batch_api)"
    )
    batch_api: BatchAPIConfig = Field(default_factory=BatchAPIConfig)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_http_url(v).rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _key_env_is_a_name(cls, v: str | None) -> str | None:
        return check_env_name(v, "key", "OPENAI_API_KEY")

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, v: Any) -> dict[str, ConfigValue]:
        return parse_headers(v)

    @field_validator("query", mode="before")
    @classmethod
    def _query(cls, v: Any) -> dict[str, ConfigValue]:
        return parse_query(v)

    @model_validator(mode="after")
    def _api_fields(self) -> CandidateConfig:
        """Fields that belong to one ``api`` only, and what each api needs (see docs/providers.md)."""
        set_ = self.model_fields_set
        if self.api == "azure-openai":
            if not self.api_version:
                raise ValueError(
                    "api_version: required with api: azure-openai (the api-version query parameter, "
                    "e.g. 2024-10-21)"
                )
            if "/openai/deployments" in self.base_url:
                raise ValueError(
                    "base_url: with api: azure-openai it is the resource endpoint "
                    "(https://NAME.openai.azure.com); the deployment goes in deployment:"
                )
            if any(name.lower() == "api-version" for name in self.query) or "api-version=" in self.base_url:
                raise ValueError("api-version is set by api_version; remove it from query: and base_url")
        elif "deployment" in set_:
            raise ValueError(
                f"deployment: only used with api: azure-openai (this candidate has api: {self.api})"
            )
        if self.api == "openai" and "api_version" in set_:
            raise ValueError("api_version: only used with api: azure-openai or anthropic")
        if self.api != "anthropic" and "default_max_tokens" in set_:
            raise ValueError(
                f"default_max_tokens: only used with api: anthropic (this candidate has api: {self.api})"
            )
        if self.api != "openai" and self.mode == "batch":
            raise ValueError(
                f"mode: batch uses the OpenAI Batch API; it is not available with api: {self.api}"
            )
        return self

    def api_key(self) -> str | None:
        """The key from the environment (never stored in config objects or logged)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None
