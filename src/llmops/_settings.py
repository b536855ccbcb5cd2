"""Settings: environment variables ``LLMOPS_*``, an optional ``llmops.yaml``, and defaults.

Precedence, highest first: keyword arguments, environment variables, the YAML file, defaults. Nested fields use a
double underscore in the environment: ``LLMOPS_RAG__TOP_K=6``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from llmops.knowledge._chunking_config import ChunkingConfig

__all__ = [
    "ApiKeyConfig",
    "GatewaySettings",
    "LimitConfig",
    "ModelConfig",
    "OidcSettings",
    "RagConfig",
    "RouterConfig",
    "Settings",
]


class ModelConfig(BaseModel):
    """A model alias the gateway serves: the name clients use, pinned to a provider and an exact upstream model.

    ``provider`` is a plugin name: ``local`` (the bundled llama.cpp model, or an embedding model with
    ``kind: embedding``), ``openai-compatible`` (any ``/v1/chat/completions`` server at ``base_url``) or
    ``anthropic``. Prices are US dollars per million tokens; left unset, they come from the price database
    (genai-prices), and a local model costs nothing.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    provider: str = "local"
    kind: Literal["chat", "embedding"] = "chat"
    model: str = ""
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, description="name of the environment variable holding the API key")
    api_key_file: Path | None = Field(default=None, description="a secrets file holding the API key (e.g. mounted)")
    params: dict[str, Any] = Field(default_factory=dict, description="default temperature, max_tokens, ...")
    fallbacks: list[str] = Field(default_factory=list, description="aliases to try, in order, when this one fails")
    capabilities: list[str] = Field(default_factory=list, description="e.g. tools, json, vision, long-context")
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None
    cached_input_price_per_mtok: float | None = None
    context_window: int = 2048


class RouterConfig(BaseModel):
    """A model name that routes each request to one of ``candidates`` by a policy.

    ``cost``: the cheapest candidate with the capabilities the request needs; ``complexity``: short factual requests
    to ``simple``, the rest to ``complex``; ``weighted``: by ``weights`` (sticky per user); ``latency``: the lowest
    recent time to first token.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    policy: Literal["cost", "complexity", "weighted", "latency"]
    candidates: list[str] = Field(default_factory=list)
    weights: dict[str, float] = Field(default_factory=dict)
    simple: str | None = None
    complex: str | None = None
    require: list[str] = Field(default_factory=list, description="capabilities every choice must have")


class ApiKeyConfig(BaseModel):
    """A key clients send as ``Authorization: Bearer ...``; only its sha256 is configured."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    user: str | None = None
    team: str | None = None
    app: str | None = None
    tags: list[str] = Field(default_factory=list)
    cost_centre: str | None = Field(default=None, description="who is charged for this key's calls (cost reports)")


class LimitConfig(BaseModel):
    """Rate limits and a money budget for one scope: ``key``, ``user``, ``team``, ``app``, ``tag`` or ``global``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    scope: Literal["key", "user", "team", "app", "tag", "global"]
    value: str | None = Field(default=None, description="which key/user/team/app/tag; all of them when unset")
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    budget_usd: float | None = Field(default=None, gt=0, description="hard limit: refused with 429 beyond it")
    soft_budget_usd: float | None = Field(default=None, gt=0, description="alert threshold")
    period: Literal["minute", "hour", "day", "month"] = "day"


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retries: int = Field(default=2, ge=0, le=10, description="retries per upstream on retryable errors")
    backoff_base_s: float = Field(default=0.2, ge=0)
    backoff_max_s: float = Field(default=5.0, ge=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_token_timeout_s: float = Field(default=30.0, gt=0)
    total_timeout_s: float = Field(default=300.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1, description="consecutive failures that open an upstream's circuit")
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    cache: bool = True
    cache_ttl_s: float = Field(default=3600.0, gt=0)
    cache_max_entries: int = Field(default=10_000, ge=1)
    semantic_cache: bool = False
    semantic_cache_threshold: float = Field(default=0.85, gt=0, le=1)
    redis_url: str | None = Field(default=None, description="shared cache and counters across replicas")
    allowed_base_urls: list[str] = Field(default_factory=list, description="base URLs clients may name (SSRF)")
    require_api_key: bool = False
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    limits: list[LimitConfig] = Field(default_factory=list)


class HumanReviewConfig(BaseModel):
    """When an answer is high-stakes enough that a person must approve it before release (EU AI Act Art. 14).

    A held answer is not returned: the caller gets ``status: pending_review`` and a review id, and fetches the
    answer once a reviewer has released it (or learns it was withheld)."""

    model_config = ConfigDict(extra="forbid")

    always: bool = Field(default=False, description="hold every answer of this app")
    on_rails: list[str] = Field(
        default_factory=list, description="hold when one of these output or input rails flags or rewrites (not blocks)"
    )
    on_unsupported_claims: bool = Field(default=False, description="hold answers with a claim the context lacks")
    below_grounding: float | None = Field(
        default=None, ge=0.0, le=1.0, description="hold answers whose grounding score is below this"
    )


class RagConfig(BaseModel):
    """A RAG application: the name clients use as a model, and how it retrieves and answers."""

    name: str = "handbook-rag"
    model: str = "smollm2-135m-instruct"
    prompt: str = "rag-default"
    prompt_label: str = "production"
    prompt_version: int | None = Field(default=None, ge=1, description="pin a version instead of following the label")
    environment: str | None = Field(default=None, description="whose labels to follow; the platform's by default")
    top_k: int = Field(default=4, ge=1, le=50)
    # On the sample handbook with MiniLM, 100 real questions scored 0.25 to 0.81 against their best chunk and ten
    # unrelated ones (capital of France, a poem, a stock price) 0.04 to 0.15.
    min_similarity: float = Field(default=0.2, ge=-1.0, le=1.0)
    # Hybrid retrieves better on the handbook query set (recall@5 1.00 vs 0.99), but the bundled 135M model answers
    # worse from the context it packs; with a capable model, choose hybrid.
    retrieval: Literal["dense", "keyword", "hybrid"] = Field(default="dense", description="how chunks are found")
    filter: dict[str, Any] | None = Field(default=None, description="metadata filter every retrieval applies")
    index_snapshot: int | None = Field(default=None, description="pin an index snapshot; None follows the newest")
    mmr_lambda: float | None = Field(default=None, ge=0.0, le=1.0, description="MMR diversity (1 = relevance only)")
    reranker: str | None = Field(default=None, description="a reranker named in knowledge.rerankers")
    # The bundled 135M model answers best from one or two short chunks; larger models want a larger budget.
    context_token_budget: int = Field(default=320, ge=32)
    max_answer_tokens: int = Field(default=120, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    guardrail_policy: str | None = Field(
        default=None, description="override the route's policy: a name, name@version, or none (unguarded)"
    )
    online_eval_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="share of requests scored online")
    project: str = Field(default="default", description="the project this app, its requests and traces belong to")
    human_review: HumanReviewConfig = Field(
        default_factory=HumanReviewConfig, description="answers a person must release before the caller sees them"
    )


class RerankerConfig(BaseModel):
    """A reranker: ``llama`` (a local GGUF instruct model), ``http`` (a Cohere/Jina/TEI-format /rerank endpoint), or a
    plugin registered under the ``llmops.rerankers`` entry point (built with ``options``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str = Field(description="llama, http, or a plugin's name in the llmops.rerankers entry point group")
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    model_path: Path | None = Field(default=None, description="llama: a GGUF file; the bundled SmolLM2 by default")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for a plugin reranker")


class KnowledgeSettings(BaseModel):
    """Where chunks are indexed and how documents are cut and fetched."""

    model_config = ConfigDict(extra="forbid")

    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    backend: Literal["embedded", "postgres", "memory"] = Field(
        default="embedded", description="embedded: HNSW + tantivy in DATA_DIR/index; postgres: pgvector + full text"
    )
    postgres_url: str | None = Field(default=None, description="PostgreSQL with pgvector, for backend: postgres")
    collection: str = Field(default="chunks", pattern=r"^[a-z][a-z0-9_]{0,40}$")
    url_max_bytes: int = Field(default=20_000_000, ge=1024, description="largest document fetched from a URL")
    url_timeout_s: float = Field(default=20.0, gt=0)
    url_allow_private: bool = Field(
        default=False, description="fetch URLs on private/loopback addresses (an intranet wiki); off: SSRF guard"
    )
    rerankers: list[RerankerConfig] = Field(default_factory=list)
    ingest_workers: int = Field(
        default=0,
        ge=0,
        description="processes that parse, chunk and embed an ingestion run: 0, one per CPU when the run has enough "
        "new documents to pay for starting them (else in-process); 1, always in-process; N, N processes",
    )


class GuardrailSettings(BaseModel):
    """Which guardrail policy guards which route, and how policies are looked up."""

    model_config = ConfigDict(extra="forbid")

    policies: dict[str, str] = Field(
        default_factory=lambda: {"*": "default"},
        description="route (a RAG app or gateway model name, '*' for the rest) -> policy name, or 'none'",
    )
    label: str = Field(default="production", description="the policy label each route follows")
    cache_ttl_s: float = Field(default=10.0, ge=0.0, description="how soon a moved label takes effect")
    workers: int = Field(default=2, ge=1, le=16, description="threads that run model-based rails in parallel")

    def policy_for(self, route: str) -> str | None:
        """The policy name guarding ``route``, or None when it runs unguarded."""
        name = self.policies.get(route, self.policies.get("*", "none"))
        return None if name == "none" else name


class EvaluationSettings(BaseModel):
    """Offline experiments and online scoring (``RagConfig.online_eval_rate`` sets each app's sample rate)."""

    model_config = ConfigDict(extra="forbid")

    online_metrics: list[str] = Field(
        default_factory=lambda: ["faithfulness", "answer_relevance"],
        description="non-LLM metrics run on sampled production answers",
    )
    judge_model: str | None = Field(default=None, description="the judge metrics' model; the first chat model if unset")
    trace_content: bool = Field(
        default=True,
        description="store questions (after the input rails' redaction) and answers on traces: datasets and "
        "online evaluation read them",
    )


class RetentionSettings(BaseModel):
    """How long an app's records are kept (``observability.retention``; ``retention_by_project`` and
    ``retention_by_app`` override it)."""

    model_config = ConfigDict(extra="forbid")

    max_age_days: float | None = Field(default=30.0, gt=0, description="traces older than this are deleted")
    max_traces: int | None = Field(default=1_000_000, ge=1, description="the newest this many traces are kept")
    content_max_age_days: float | None = Field(
        default=None, gt=0, description="questions and answers in traces older than this are cleared (traces stay)"
    )
    feedback_max_age_days: float | None = Field(default=None, gt=0, description="feedback older than this is deleted")


class ObservabilitySettings(BaseModel):
    """Tracing (sampling, export, retention) and semantic drift."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="share of successful traces whose spans are stored; errors, guardrail blocks and thumbs-down "
        "are always kept, and every request keeps its metrics row",
    )
    sampled_out_buffer: int = Field(
        default=5_000, ge=0, description="recent sampled-out traces held in memory, kept if feedback flags them"
    )
    otlp_endpoint: str | None = Field(
        default=None, description="also export spans over OTLP/HTTP to this collector (e.g. http://otel:4318)"
    )
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    retention_by_project: dict[str, RetentionSettings] = Field(default_factory=dict)
    retention_by_app: dict[str, RetentionSettings] = Field(default_factory=dict)
    drift_reference_size: int = Field(default=200, ge=20, description="queries in the reference window")
    drift_window_size: int = Field(default=100, ge=20, description="recent queries compared with the reference")
    drift_alpha: float = Field(default=0.01, gt=0, lt=0.5, description="false-alarm rate of one drift test")
    drift_check_interval_s: float = Field(
        default=300.0, gt=0, description="how often the server tests each app for drift (and rules see a new result)"
    )


class TriggerSettings(BaseModel):
    """The closed loop: rules that watch metrics, drift, feedback and events, and act."""

    model_config = ConfigDict(extra="forbid")

    rules_file: Path | None = Field(default=None, description="a YAML file of trigger rules")
    interval_s: float = Field(default=30.0, gt=0, description="how often the server evaluates the rules")
    webhook_allowlist: list[str] = Field(
        default_factory=list, description="URL prefixes webhook actions may call (nothing else is called)"
    )
    runbooks_file: Path | None = Field(default=None, description="a YAML file of extra runbooks")


class OidcSettings(BaseModel):
    """Sign-in to the web UI through an OpenID Connect provider (Keycloak, Entra ID, Okta, Google, Dex, ...): the
    authorization-code flow with PKCE; the ID token's signature (the provider's JWKS), issuer, audience, expiry and
    nonce are checked. The signed-in user is the principal named by ``username_claim``; the session is an API key of
    theirs in the chosen project, kept in an HttpOnly cookie, revoked at sign-out. Needs ``llmops[oidc]``."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(description="the provider's issuer URL (https; http only on a loopback address)")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = Field(default=None, description="or client_secret_file / the environment")
    client_secret_file: Path | None = Field(default=None, description="a secrets file holding the client secret")
    redirect_url: str | None = Field(
        default=None, description="the callback registered at the provider; defaults to this server's /auth/callback"
    )
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    username_claim: str = Field(default="email", description="the ID-token claim that names the principal")
    auto_create_users: bool = Field(
        default=False, description="add unknown users as principals (without roles) instead of refusing them"
    )
    session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256"], min_length=1)

    @field_validator("issuer")
    @classmethod
    def _https_issuer(cls, issuer: str) -> str:
        url = urlsplit(issuer)
        loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
        if url.scheme != "https" and not (url.scheme == "http" and loopback):
            raise ValueError(f"the OIDC issuer must be an https URL (http only on loopback), not {issuer!r}")
        return issuer.rstrip("/")

    def secret(self) -> str | None:
        if self.client_secret is not None:
            return self.client_secret.get_secret_value()
        if self.client_secret_file is not None:
            return self.client_secret_file.read_text(encoding="utf-8").strip()
        return None


class AuthSettings(BaseModel):
    """Who may call the platform. Off by default for a laptop (bound to 127.0.0.1): requests without a key act as
    the local operator, an admin of every project, named by ``X-LLMOps-User``. With ``required``, every API route
    needs a stored API key (``llmops keys create``) and acts with its owner's roles in its project; with ``oidc``,
    people sign in to the web UI through the organisation's identity provider."""

    model_config = ConfigDict(extra="forbid")

    required: bool = Field(default=False, description="refuse requests without a valid API key (401)")
    default_project: str = Field(default="default", description="the project of objects made before projects")
    oidc: OidcSettings | None = Field(default=None, description="OpenID Connect sign-in for the web UI")

    @model_validator(mode="after")
    def _sign_in_needs_keys(self) -> AuthSettings:
        if self.oidc is not None and not self.required:
            raise ValueError("auth.oidc needs auth.required: true (otherwise nobody has to sign in)")
        return self


class TransparencySettings(BaseModel):
    """What callers are told about AI-generated content (EU AI Act Art. 50)."""

    model_config = ConfigDict(extra="forbid")

    disclosure: str = Field(
        default="This answer was generated by an AI system and may contain errors.",
        description="the notice sent with every generated answer (API field, header and UI)",
    )


def _default_models() -> list[ModelConfig]:
    return [
        ModelConfig(name="smollm2-135m-instruct", provider="local", model="SmolLM2-135M-Instruct.Q4_1"),
        ModelConfig(name="all-minilm-l6-v2", provider="local", kind="embedding", model="all-MiniLM-L6-v2-int8"),
    ]


class Settings(BaseSettings):
    """Everything the platform is built from. See the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_",
        env_nested_delimiter="__",
        yaml_file="llmops.yaml",
        extra="forbid",
    )

    data_dir: Path = Path(".llmops")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to SQLite at DATA_DIR/llmops.db"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    # Decoding is memory-bound and slows down when its threads compete with the server for cores; prompt
    # processing is compute-bound and scales with threads (206 tokens: 1.44 s on 1 thread, 0.72 s on 2, here).
    llm_threads: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2), ge=1)
    llm_batch_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    llm_model_path: Path | None = Field(default=None, description="a GGUF file; defaults to the bundled SmolLM2")
    embedding_threads: int = Field(default=1, ge=1)
    environment: str = Field(default="dev", description="the environment this process serves (its prompt labels)")
    environments: list[str] = Field(default_factory=lambda: ["dev", "staging", "prod"], min_length=1)
    prompt_cache_ttl_s: float = Field(default=10.0, ge=0.0)
    journal_drain: Literal["thread", "process"] = Field(
        default="thread", description="where the journal is drained into the store; `llmops up` uses a process"
    )
    models: list[ModelConfig] = Field(default_factory=_default_models)
    routers: list[RouterConfig] = Field(default_factory=list)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    transparency: TransparencySettings = Field(default_factory=TransparencySettings)
    rag_apps: list[RagConfig] = Field(default_factory=lambda: [RagConfig()])

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_path = os.environ.get("LLMOPS_CONFIG", "llmops.yaml")
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'llmops.db').resolve()}"

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def rag_app(self, name: str) -> RagConfig | None:
        return next((a for a in self.rag_apps if a.name == name), None)
