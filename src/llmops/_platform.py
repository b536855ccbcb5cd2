"""The composition root: `Platform` builds every component from `Settings` and hands each its dependencies."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llmops._plugins import load_plugin
from llmops._settings import Settings
from llmops.evaluation import (
    DatasetRegistry,
    Evaluator,
    ExperimentStore,
    MetricDeps,
    OnlineEvaluator,
    ScoringContext,
    TargetDeps,
    build_metric,
    seed_judge_prompts,
)
from llmops.gateway import EmbeddingProvider, Gateway, Ledger, LocalEmbeddingProvider, Provider
from llmops.governance import AccessControl, AuditLog, Lineage
from llmops.governance._costs import CostReport, cost_report
from llmops.governance._erasure import erase_user
from llmops.guardrails import Guardrails, PolicyRegistry, default_policy
from llmops.knowledge import (
    Embedder,
    HttpReranker,
    KnowledgeBase,
    LlamaReranker,
    MiniLMEmbedder,
    Reranker,
    default_parsers,
    fetch_url,
    open_indexes,
)
from llmops.loop import (
    ActionContext,
    FeedbackStore,
    RequestEventsProcessor,
    ReviewQueue,
    Runbook,
    Step,
    TriggerEngine,
    load_actions,
    load_rules,
    load_runbooks,
)
from llmops.observability import (
    DriftMonitor,
    DriftResult,
    MetricsQuery,
    MetricsSpanProcessor,
    PlatformMetrics,
    TraceReader,
    TraceRetention,
    Tracing,
    otlp_span_processor,
)
from llmops.prompts import (
    DEFAULT_RAG_PROMPT,
    DEFAULT_RAG_PROMPT_NAME,
    DEFAULT_RAG_VARIABLES,
    ApprovalRequiredError,
    PromptNotFoundError,
    PromptRegistry,
)
from llmops.rag import AnswerHook, GuardedGateway, RagAnswer, RagPipeline
from llmops.store import Journal, Store

__all__ = ["Platform"]


class Platform:
    """Everything, wired. Tests pass fakes for the expensive parts: ``embedder``, and ``providers`` (by model name).

    >>> platform = Platform(Settings())                       # doctest: +SKIP
    >>> platform.knowledge.ingest(Path("samples/handbook"))    # doctest: +SKIP
    >>> await platform.rag("handbook-rag").ask("How many PTO days do new employees get?")  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        providers: dict[str, Provider] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.settings.resolved_database_url)
        self.store.migrate()

        self.journal = Journal(self.store, self.settings.data_dir / "journal", drain=self.settings.journal_drain)
        self.audit = AuditLog(self.store)
        observability = self.settings.observability
        self.metrics = PlatformMetrics()
        self.tracing = Tracing(
            self.journal, sample_rate=observability.sample_rate, sampled_out_buffer=observability.sampled_out_buffer
        )
        self.tracing.add_processor(MetricsSpanProcessor(self.metrics))
        if observability.otlp_endpoint:
            self.tracing.add_processor(otlp_span_processor(observability.otlp_endpoint, observability.otlp_headers))
        self.traces = TraceReader(self.store, self.journal)
        self.request_metrics = MetricsQuery(self.store, self.journal)
        self.trace_retention = TraceRetention(
            self.store,
            self.journal,
            observability,
            app_projects={app.name: app.project for app in self.settings.rag_apps},
            default_project=self.settings.auth.default_project,
        )

        self.embedder = embedder or MiniLMEmbedder(threads=self.settings.embedding_threads)
        self.knowledge = self._build_knowledge()
        self.access = AccessControl(
            self.store, audit=self.audit.record, default_project=self.settings.auth.default_project
        )
        for app_config in self.settings.rag_apps:
            self.access.projects.ensure(app_config.project, by="llmops")
        self.roles = self.access.roles
        self.prompts = PromptRegistry(
            self.store,
            roles=self.roles.roles_of,
            environments=self.settings.environments,
            default_environment=self.settings.environment,
            cache_ttl=self.settings.prompt_cache_ttl_s,
            audit=self.audit.record,
        )
        self.guardrail_policies = PolicyRegistry(
            self.store,
            environments=self.settings.environments,
            default_environment=self.settings.environment,
            cache_ttl=self.settings.guardrails.cache_ttl_s,
            audit=self.audit.record,
        )
        self.guardrail_policies.ensure(default_policy(), author="llmops")
        self._seed_prompts()
        seed_judge_prompts(self.prompts)

        self.gateway = Gateway(
            self.settings.models,
            providers if providers is not None else self._build_providers(),
            self.tracing.tracer,
            settings=self.settings.gateway,
            routers=self.settings.routers,
            embedders=self._build_embedders(),
            semantic_embed=self.embedder.embed,
            journal=self.journal,
        )
        self.ledger = Ledger(self.store, self.journal.flush)
        self.ledger.save_price_book(self.gateway.prices)
        self.guardrails = Guardrails(
            self.guardrail_policies,
            self.settings.guardrails,
            environment=self.settings.environment,
            embedder=self.embedder,
        )
        self.guarded_gateway = GuardedGateway(self.gateway, self.guardrails, self.tracing.tracer)
        # Offline evaluation embeds through the store's embedding cache: a dataset's questions and references are
        # embedded once, not on every run. The metrics build their grounding checker on it, batched per run.
        self.metric_deps = MetricDeps(
            embedder=self.knowledge.cached_embedder,
            gateway=self.gateway,
            prompts=self.prompts,
            judge_model=self.settings.evaluation.judge_model or next(iter(self.gateway.model_names()), None),
        )
        self.online_eval = self._build_online_eval()
        self.drift = DriftMonitor(
            self.store,
            self.journal,
            self.embedder,
            model_name=self.embedder.name,
            reference_size=observability.drift_reference_size,
            window_size=observability.drift_window_size,
            alpha=observability.drift_alpha,
            scrub=self.guardrails.scrub,
        )
        self._drift_results: dict[str, tuple[float, DriftResult | None]] = {}
        self.reviews = ReviewQueue(self.store, audit=self.audit.record)
        self.rag_apps = {
            app.name: RagPipeline(
                app,
                knowledge=self.knowledge,
                prompts=self.prompts,
                gateway=self.gateway,
                guardrails=self.guardrails,
                tracer=self.tracing.tracer,
                record_content=self.settings.evaluation.trace_content,
                on_answer=self._answer_hook(app.name),
                reviews=self.reviews,
                document_scope=functools.partial(self.access.document_scope, app.project),
            )
            for app in self.settings.rag_apps
        }
        for app in self.settings.rag_apps:
            self.gateway.model(app.model)  # fail at start, not at the first request, on a typo
        self.datasets = DatasetRegistry(self.store)
        self.evaluator = Evaluator(
            self.datasets,
            ExperimentStore(self.store),
            TargetDeps(
                knowledge=self.knowledge,
                prompts=self.prompts,
                gateway=self.gateway,
                guardrails=self.guardrails,
                tracer=self.tracing.tracer,
                rag_apps={app.name: app for app in self.settings.rag_apps},
                embedder_name=self.embedder.name,
                environment=self.settings.environment,
            ),
            self.metric_deps,
        )

        self.feedback = FeedbackStore(self.store, self.journal, keep_trace=self.tracing.store_processor.keep)
        self.lineage = Lineage(
            self.store,
            self.traces,
            self.prompts,
            self.feedback,
            rag_apps={app.name: app for app in self.settings.rag_apps},
            audit=self.audit.record,
        )
        self.actions = load_actions()
        triggers = self.settings.triggers
        self.triggers = TriggerEngine(
            self.store,
            actions=self.actions,
            context=self._action_context,
            metrics=self.request_metrics,
            audit=self.audit.record,
            tracer=self.tracing.tracer,
            roles_of=self.roles.roles_of,
            file_rules=load_rules(triggers.rules_file, self.actions) if triggers.rules_file else None,
            drift_check=self.check_drift,
            pending_changes=self.knowledge.pending_changes,
        )
        self.request_metrics.add_metric("thumbs_down_rate", self.feedback.thumbs_down_rate)
        self.request_metrics.add_metric("negative_feedback", self.feedback.negative_count)
        self.feedback.subscribe(
            lambda f: self.triggers.notify(
                "feedback",
                {"kind": f.kind, "negative": f.negative, "app": f.app, "flag": f.flag, "request_id": f.request_id},
            )
        )
        self.tracing.add_processor(RequestEventsProcessor(self.triggers.notify))
        self.runbooks: dict[str, Runbook] = load_runbooks(triggers.runbooks_file, self.actions)

    def check_drift(self, app: str) -> DriftResult | None:
        """The drift test of ``app``'s newest questions, run at most every ``drift_check_interval_s`` (the
        detector's false-alarm figures assume each test sees fresh questions); in between, the last result."""
        now = time.monotonic()
        last = self._drift_results.get(app)
        if last is not None and now - last[0] < self.settings.observability.drift_check_interval_s:
            return last[1]
        result = self.drift.check(app)
        self._drift_results[app] = (now, result)
        return result

    async def replay(self, request_id: str, *, by: str | None = None) -> dict[str, Any]:
        """Re-run a RAG request with the same prompt version, index snapshot, model, parameters and guardrail
        policy; returns both answers and their differences (see `Lineage.replay`)."""
        return await self.lineage.replay(
            request_id,
            knowledge=self.knowledge,
            gateway=self.gateway,
            guardrails=self.guardrails,
            tracer=self.tracing.tracer,
            by=by,
            record_content=self.settings.evaluation.trace_content,
            document_scope=self.access.document_scope,
        )

    def erase_user(self, user_id: str, *, by: str) -> dict[str, int]:
        """Erase ``user_id``'s content (see `llmops.governance.erase_user`) once the background queues that may
        still carry it (drift observations, online scoring) have reached the store."""
        settle = [self.drift.flush]
        if self.online_eval is not None:
            settle.append(self.online_eval.drain)
        return erase_user(self.store, self.journal, self.audit, user_id, by=by, settle=settle)

    def cost_report(
        self, by: Sequence[str], since: datetime | None = None, until: datetime | None = None
    ) -> CostReport:
        """Spend by ``by`` over the ledger (see `llmops.governance.cost_report`), every acknowledged call included,
        keys attributed to their cost centres (configured and stored keys alike)."""
        return cost_report(
            self.store,
            by=by,
            since=since,
            until=until,
            keys=self.settings.gateway.api_keys,
            centres=self.access.keys.centres(),
            flush=self.journal.flush,
        )

    def apply_retention(self, *, now: datetime | None = None) -> dict[str, int]:
        """Apply every app's retention (its own, its project's or the default): traces by age and count, their
        questions and answers by age, feedback by age. Returns what was deleted or cleared."""
        now = now or datetime.now(UTC)
        done = self.trace_retention.prune(now=now)
        done["feedback"] = 0
        for app in self.trace_retention.apps():
            days = self.trace_retention.policy(app).feedback_max_age_days
            if days is not None:
                done["feedback"] += self.feedback.delete_older(now - timedelta(days=days), app=app)
        return done

    def run_runbook(self, name: str, params: dict[str, Any] | None = None, *, by: str) -> dict[str, Any]:
        """Run the runbook ``name`` now, as ``by``; returns the firing with each step's outcome."""
        runbook = self.runbooks.get(name)
        if runbook is None:
            raise LookupError(f"no runbook {name!r}; runbooks: {', '.join(sorted(self.runbooks))}")
        steps: list[Step] = runbook.resolve(params or {}, self.actions)
        return self.triggers.run(
            f"runbook:{name}", steps, {"params": params or {}}, source="runbook", actor=f"{by} (runbook {name})"
        )

    def _action_context(self, actor: str, firing: dict[str, Any]) -> ActionContext:
        return ActionContext(
            actor=actor,
            prompts=self.prompts,
            guardrail_policies=self.guardrail_policies,
            knowledge=self.knowledge,
            gateway=self.gateway,
            datasets=self.datasets,
            traces=self.traces,
            reviews=self.reviews,
            audit=self.audit.record,
            webhook_allowlist=list(self.settings.triggers.webhook_allowlist),
            negative_feedback=lambda since: self.feedback.negative_request_ids(since=since),
            firing=firing,
        )

    def _answer_hook(self, app: str) -> AnswerHook:
        """What every finished answer of ``app`` feeds: online evaluation (sampled) and the drift monitor."""
        online, drift = self.online_eval, self.drift

        def on_answer(answer: RagAnswer, question: str, model_answer: str) -> None:
            if online is not None:
                online.submit(answer, question, model_answer)
            if question:
                drift.observe(answer.request_id, app, question)

        return on_answer

    def rag(self, name: str | None = None) -> RagPipeline:
        """The RAG app ``name`` (the first configured one by default)."""
        if name is None:
            return next(iter(self.rag_apps.values()))
        try:
            return self.rag_apps[name]
        except KeyError:
            raise LookupError(f"no RAG app {name!r}; configured: {', '.join(self.rag_apps)}") from None

    def served_models(self) -> list[str]:
        """Names clients can use as ``model``: RAG apps first, then the gateway's models."""
        return [*self.rag_apps, *self.gateway.model_names()]

    def _build_online_eval(self) -> OnlineEvaluator | None:
        """Scoring of sampled production answers, when any app samples them."""
        rates = {app.name: app.online_eval_rate for app in self.settings.rag_apps if app.online_eval_rate > 0}
        if not rates:
            return None
        # Production questions and answers are mostly new texts: caching them would cost a write for nothing.
        online = MetricDeps(embedder=self.embedder, gateway=self.gateway, prompts=self.prompts)
        metrics: list[Any] = [build_metric(name, {}, online) for name in self.settings.evaluation.online_metrics]
        return OnlineEvaluator(
            metrics,
            ScoringContext(online, max_texts=10_000),
            self.journal,
            rates,
            observe=self.metrics.observe_online_score,
        )

    def _build_knowledge(self) -> KnowledgeBase:
        config = self.settings.knowledge
        vector, keyword, backend_key = open_indexes(
            config.backend,
            data_dir=self.settings.data_dir,
            model=self.embedder.name,
            dimensions=self.embedder.dimensions,
            collection=config.collection,
            postgres_url=config.postgres_url,
        )

        def fetch(url: str) -> tuple[Path, bytes]:
            fetched = fetch_url(
                url,
                max_bytes=config.url_max_bytes,
                timeout=config.url_timeout_s,
                allow_private=config.url_allow_private,
            )
            return Path(fetched.suggested_name), fetched.data

        rerankers: dict[str, Reranker] = {}
        for spec in config.rerankers:
            if spec.kind == "llama":
                rerankers[spec.name] = LlamaReranker(spec.model_path, threads=self.settings.llm_threads)
            elif spec.kind == "http":
                if not spec.base_url or not spec.model:
                    raise ValueError(f"reranker {spec.name!r}: an http reranker needs base_url and model")
                rerankers[spec.name] = HttpReranker(
                    spec.base_url, spec.model, api_key_env=spec.api_key_env, name=spec.name
                )
            else:
                rerankers[spec.name] = load_plugin("llmops.rerankers", spec.kind)(**spec.options)
        return KnowledgeBase(
            self.store,
            self.embedder,
            config.chunking,
            default_parsers(),
            data_dir=self.settings.data_dir,
            vector=vector,
            keyword=keyword,
            backend_key=backend_key,
            ingest_workers=config.ingest_workers,
            fetch=fetch,
            rerankers=rerankers,
            tracer=self.tracing.tracer,
            audit=self.audit.record,
        )

    def _seed_prompts(self) -> None:
        """The default RAG prompt as version 1, labelled production in every environment that has no such label."""
        try:
            version = self.prompts.latest(DEFAULT_RAG_PROMPT_NAME).version
        except PromptNotFoundError:
            version = self.prompts.create(
                DEFAULT_RAG_PROMPT_NAME,
                DEFAULT_RAG_PROMPT,
                author="llmops",
                variables=DEFAULT_RAG_VARIABLES,
                commit_message="default RAG prompt",
                description="Answer from numbered sources, with citations.",
            ).version
        for environment in self.settings.environments:
            if "production" in self.prompts.labels(DEFAULT_RAG_PROMPT_NAME, environment):
                continue
            try:
                self.prompts.move_label(
                    DEFAULT_RAG_PROMPT_NAME, "production", version, environment=environment, by="llmops", reason="seed"
                )
            except ApprovalRequiredError:
                continue  # a protected label is set through a change request, never by the seed

    def _build_providers(self) -> dict[str, Provider]:
        providers: dict[str, Provider] = {}
        for config in self.settings.models:
            if config.kind != "chat":
                continue
            factory: Any = load_plugin("llmops.providers", config.provider)
            providers[config.name] = factory.from_config(config, self.settings)
        return providers

    def _build_embedders(self) -> dict[str, EmbeddingProvider]:
        embedders: dict[str, EmbeddingProvider] = {}
        for config in self.settings.models:
            if config.kind != "embedding":
                continue
            if config.provider == "local":
                embedders[config.name] = LocalEmbeddingProvider(self.embedder)
            else:
                factory: Any = load_plugin("llmops.providers", config.provider)
                embedders[config.name] = factory.from_config(config, self.settings)
        return embedders

    async def aclose(self) -> None:
        await self.gateway.aclose()
        self.close()

    def close(self) -> None:
        if self.online_eval is not None:
            self.online_eval.close()
        self.drift.close()
        self.guardrails.close()
        self.knowledge.close()
        self.tracing.shutdown()
        self.journal.close()
        self.store.close()
