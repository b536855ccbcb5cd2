"""Lineage: everything that made one answer, read back from its request id, and the answer re-run with the same inputs.

`Lineage.explain` joins what the platform already records about a request: its trace (the root span and one span per
stage), its ``request_metrics`` row, the gateway's call ledger, the prompt registry (the version, its author and the
label move, change request and approvals that put it in service), the chunks table (what was retrieved, from which
document), online evaluation scores and feedback. A piece that is not there is stated, not guessed: a sampled-out
trace is explained from its metrics row and the ledger, with ``spans_sampled_out`` set.

`Lineage.replay` asks a RAG request's recorded question again with the prompt version, index snapshot, model alias,
generation and retrieval parameters and guardrail policy version the original used, and diffs the two answers.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from opentelemetry import trace
from sqlalchemy import select

from llmops._settings import RagConfig
from llmops.gateway import Gateway
from llmops.gateway._tables import GatewayCallRow
from llmops.governance._replay import NotReplayableError, _compare, _replay_plan, _Uncached
from llmops.guardrails import Guardrails
from llmops.knowledge import KnowledgeBase, MetadataFilter
from llmops.knowledge._tables import ChunkRow, DocumentRow, IndexSnapshotRow
from llmops.loop import FeedbackStore
from llmops.observability import TraceNotFoundError, TraceReader
from llmops.observability._tables import RequestMetricRow
from llmops.prompts import PromptNotFoundError, PromptRegistry
from llmops.prompts._registry import HistoryEntry
from llmops.rag import RagAnswer, RagPipeline, new_request_id
from llmops.store import AuditHook, Store

__all__ = ["Lineage", "NotReplayableError"]

PREVIEW_CHARS = 200
# A ledger row written without the request id (RAG and guarded calls today) is matched to the request's model call by
# time, alias and token counts; the row is written while the call's span is open, so a second either side is ample.
_LEDGER_SLACK = timedelta(seconds=1)


class Lineage:
    """Explains and replays answers.

    >>> lineage = Lineage(platform.store, platform.traces, platform.prompts, platform.feedback)  # doctest: +SKIP
    >>> why = lineage.explain("req_5f0c...")                                                      # doctest: +SKIP
    >>> why["prompt"]["label_move"]["moved_by"], why["retrieval"]["snapshot"]  # doctest: +SKIP
    ('ana', 12)
    """

    def __init__(
        self,
        store: Store,
        traces: TraceReader,
        prompts: PromptRegistry,
        feedback: FeedbackStore,
        *,
        rag_apps: Mapping[str, RagConfig] | None = None,
        audit: AuditHook | None = None,
    ) -> None:
        """``rag_apps`` (by name) tells which environment's labels each app follows, and is what `replay` re-runs
        by default; ``audit`` is told of every replay (it calls the model again, at a cost)."""
        self._store = store
        self._traces = traces
        self._prompts = prompts
        self._feedback = feedback
        self._rag_apps = dict(rag_apps or {})
        self._audit = audit

    # ---- explain ----------------------------------------------------------------------------------------------

    def explain(self, request_id: str) -> dict[str, Any]:
        """The complete chain behind one answer, JSON-ready. ``request_id`` may also be a trace id.

        Every section is present (empty when there is nothing); ``missing`` lists what could not be known and why.
        Raises `LookupError` when nothing at all is stored for the request.
        """
        stored = self._trace(request_id)
        metrics = self._metrics_row(stored["request_id"] if stored else request_id)
        rid = stored["request_id"] if stored else metrics["request_id"] if metrics else request_id
        if stored is None and metrics is None and not self._ledger_by_request(rid):
            raise LookupError(
                f"no request {request_id!r}: no trace, metrics row or gateway call is stored for it "
                "(an unknown id, or deleted by retention)"
            )
        return _Explanation(self, rid, stored, metrics).build()

    def _trace(self, request_id: str) -> dict[str, Any] | None:
        try:
            return self._traces.get(request_id)
        except TraceNotFoundError:
            return None  # the reader drained the journal before giving up: metrics and ledger rows are stored too

    def _metrics_row(self, request_id: str) -> dict[str, Any] | None:
        with self._store.session() as session:
            row = session.get(RequestMetricRow, request_id)
            if row is None:
                row = session.scalars(select(RequestMetricRow).where(RequestMetricRow.trace_id == request_id)).first()
            if row is None:
                return None
            return {c.name: _plain(getattr(row, c.name)) for c in RequestMetricRow.__table__.columns}

    def _ledger_by_request(self, request_id: str) -> list[dict[str, Any]]:
        query = select(GatewayCallRow).where(GatewayCallRow.request_id == request_id).order_by(GatewayCallRow.at)
        with self._store.session() as session:
            return [_call(row, "request_id") for row in session.scalars(query)]

    def _ledger_unattributed(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        query = (
            select(GatewayCallRow)
            .where(
                GatewayCallRow.request_id == "",
                GatewayCallRow.at >= start - _LEDGER_SLACK,
                GatewayCallRow.at <= end + _LEDGER_SLACK,
            )
            .order_by(GatewayCallRow.at)
        )
        with self._store.session() as session:
            return [_call(row, "time_and_tokens") for row in session.scalars(query)]

    def _chunks(self, ids: Sequence[str], snapshot: int | None) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        query = (
            select(
                ChunkRow.id, ChunkRow.document_id, ChunkRow.ordinal, ChunkRow.text, ChunkRow.token_count,
                ChunkRow.heading, ChunkRow.page, ChunkRow.meta, ChunkRow.snapshot_from, ChunkRow.snapshot_until,
                DocumentRow.source, DocumentRow.title, DocumentRow.meta, DocumentRow.content_hash,
            )
            .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
            .where(ChunkRow.id.in_(list(ids)))
        )  # fmt: skip
        found: dict[str, dict[str, Any]] = {}
        with self._store.session() as session:
            for row in session.execute(query):
                (chunk_id, document_id, ordinal, text, tokens, heading, page, chunk_meta, since, until,
                 source, title, document_meta, document_hash) = row  # fmt: skip
                found[chunk_id] = {
                    "document_id": document_id,
                    "source": source,
                    "title": title,
                    "heading": heading,
                    "page": page,
                    "ordinal": ordinal,
                    "tokens": tokens,
                    "preview": text[:PREVIEW_CHARS],
                    "metadata": _plain({**(document_meta or {}), **(chunk_meta or {})}),
                    "document_content_hash": document_hash,
                    "in_snapshot": None if snapshot is None else since <= snapshot < until,
                }
        return found

    def _snapshot(self, snapshot: int | None) -> dict[str, Any] | None:
        if snapshot is None:
            return None
        with self._store.session() as session:
            row = session.get(IndexSnapshotRow, snapshot)
            if row is None:
                return None
            return {
                "id": row.id,
                "created_at": _iso(row.created_at),
                "finished_at": _iso(row.finished_at),
                "kind": row.kind,
                "status": row.status,
                "parent_id": row.parent_id,
                "documents": row.documents,
                "chunks": row.chunks,
                "embedding_model": row.embedding_model,
                "chunking_config_id": row.chunking_config_id,
            }

    def _prompt(self, name: str, version: int, label: str | None, app: str | None, at: datetime) -> dict[str, Any]:
        """The version, and the label move (with its change request and approvals) that had it in service at ``at``."""
        section: dict[str, Any] = {"name": name, "version": version, "label": label}
        try:
            found = self._prompts.get_version(name, version)
        except PromptNotFoundError:
            section["found"] = False
            return section
        section.update(
            found=True,
            author=found.author,
            commit_message=found.commit_message,
            content_hash=found.content_hash,
            created_at=_iso(found.created_at),
            stage=self._prompts.stage(name, version),
            params=_plain(found.params),
            tags=list(found.tags),
        )
        config = self._rag_apps.get(app or "")
        environment = (config.environment or self._prompts.default_environment) if config else None
        label = label or (config.prompt_label if config else None)  # not on a sampled-out trace: the app's
        section["label"] = label
        move = _label_move(self._prompts.history(name), version, label, environment, at)
        preferred = self._prompts.default_environment
        if isinstance(move, list):  # the environment is unknown: the label in the default environment first
            move = next((m for m in move if m.environment == preferred), move[-1] if move else None)
        section["label_move"] = self._move(name, move, version) if move else None
        return section

    def _move(self, name: str, entry: HistoryEntry, version: int) -> dict[str, Any]:
        move: dict[str, Any] = {
            "environment": entry.environment,
            "label": entry.label,
            "kind": entry.kind,
            "from_version": entry.from_version,
            "moved_by": entry.actor,
            "moved_at": _iso(entry.at),
            "reason": entry.detail,
            "change_request": self._change_request(entry.change_request_id, name, version),
        }
        if entry.kind == "rollback":  # a rollback restores a state approved before: show that approval too
            earlier = [
                h
                for h in self._prompts.history(name)
                if h.kind == "move" and h.id < entry.id and h.environment == entry.environment
                and h.label == entry.label and h.to_version == version
            ]  # fmt: skip
            if earlier:
                first = earlier[-1]
                move["originally_moved_by"] = first.actor
                move["originally_moved_at"] = _iso(first.at)
                move["original_change_request"] = self._change_request(first.change_request_id, name, version)
        return move

    def _change_request(self, change_request_id: int | None, name: str, version: int) -> dict[str, Any] | None:
        if change_request_id is None:
            return None
        approvals = self._prompts.approvals
        try:
            request = approvals.get_request(change_request_id)
        except LookupError:
            return {"id": change_request_id, "found": False}
        policy = next((p for p in approvals.policies() if p.id == request.policy_id), None)
        reviews = [{**r, "at": _iso(r["at"])} for r in request.reviews]
        section: dict[str, Any] = {
            "id": request.id,
            "found": True,
            "requested_by": request.requested_by,
            "reason": request.reason,
            "status": request.status,
            "created_at": _iso(request.created_at),
            "decided_at": _iso(request.decided_at),
            "approved_by": [r["reviewer"] for r in reviews if r["decision"] == "approve"],
            "reviews": reviews,
            "policy": None,
        }
        if policy is not None:
            section["policy"] = {
                "name": policy.name,
                "required_approvals": policy.required_approvals,
                "required_check": policy.required_check,
                "description": policy.describe(),
            }
            if policy.required_check:
                section["policy"]["check_passed"] = approvals.check_passed(name, version, policy.required_check)
        return section

    # ---- replay -----------------------------------------------------------------------------------------------

    async def replay(
        self,
        request_id: str,
        *,
        knowledge: KnowledgeBase,
        gateway: Gateway,
        guardrails: Guardrails,
        tracer: trace.Tracer,
        rag_apps: Mapping[str, RagConfig] | None = None,
        by: str | None = None,
        record_content: bool = True,
        document_scope: Callable[[str], MetadataFilter] | None = None,
    ) -> dict[str, Any]:
        """Re-run a RAG request with what the original used, and compare (``document_scope``: the filter that keeps
        an app's retrieval in its project, by project, as the live app has it).

        Pinned from the original's trace: the prompt version, the index snapshot, the model alias with its
        temperature and max tokens, top-k, similarity floor and retrieval mode, and the guardrail policy version.
        The app's other settings (filter, MMR, reranker, context budget) come from ``rag_apps`` (the constructor's
        by default). The gateway's response cache is bypassed, so the model answers again. The replay is a request
        of its own (new request id, trace and metrics row). Raises `LookupError` for an unknown request and
        `NotReplayableError` when the original cannot be re-run (a gateway call, a sampled-out trace, no recorded
        question, an app or model no longer configured).
        """
        original = await asyncio.to_thread(self.explain, request_id)
        apps = dict(rag_apps) if rag_apps is not None else self._rag_apps
        config, question, pins = _replay_plan(original, apps, gateway)
        captured: dict[str, str] = {}

        def on_answer(_answer: RagAnswer, _question: str, model_answer: str) -> None:
            captured["model_answer"] = model_answer

        pipeline = RagPipeline(
            config.model_copy(update=pins),
            knowledge=knowledge,
            prompts=self._prompts,
            gateway=cast(Gateway, _Uncached(gateway)),
            guardrails=guardrails,
            tracer=tracer,
            record_content=record_content,
            on_answer=on_answer,
            document_scope=functools.partial(document_scope, config.project) if document_scope else None,
        )
        answer = await pipeline.ask(question, request_id=new_request_id())
        # Compared as stored: the model's words (pseudonyms not restored) with personal data scrubbed.
        text = await asyncio.to_thread(guardrails.scrub, captured.get("model_answer", ""))
        again = await asyncio.to_thread(self.explain, answer.request_id)
        result = _compare(original, again, answer, text, pins)
        if self._audit is not None:
            self._audit(
                by or "unknown",
                "request.replay",
                "request",
                original["request_id"],
                details={
                    "replay_request_id": answer.request_id,
                    "same_answer": result["diff"]["same_answer"],
                    "pinned": _plain(pins),
                },
            )
        return result


class _Explanation:
    """One `Lineage.explain` call: the stored pieces, and the sections built from them."""

    def __init__(
        self, lineage: Lineage, request_id: str, stored: dict[str, Any] | None, metrics: dict[str, Any] | None
    ) -> None:
        self.lineage = lineage
        self.request_id = request_id
        self.stored = stored
        self.metrics = metrics or {}
        self.spans: list[dict[str, Any]] = stored["spans"] if stored else []
        self.root: dict[str, Any] = stored["attributes"] if stored else {}
        self.missing: list[str] = []

    def span(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.spans if s["name"] == name), None)

    def build(self) -> dict[str, Any]:
        stored, metrics = self.stored, self.metrics
        sampled_out = stored is None and bool(metrics)
        if sampled_out:
            self.missing.append(
                "the trace's spans were sampled out (observability.sample_rate): the question and answer, retrieved "
                "chunks, guardrail decisions and model parameters were not kept; explained from the metrics row "
                "and the gateway ledger"
            )
        elif stored is None:
            self.missing.append("no trace and no metrics row (deleted by retention?): explained from the ledger")
        elif not metrics:
            self.missing.append("no request_metrics row (deleted by retention?)")
        started, ended = self.window()
        model_calls = self.model_calls()
        ledger = self.ledger(model_calls, started, ended)
        root_span = self.spans[0] if self.spans else None
        name = stored["name"] if stored else None
        kind = (name.split(" ", 1)[0] if name else None) or metrics.get("kind") or ("chat" if ledger else None)
        app = self.root.get("llmops.rag.app") or metrics.get("app")
        explanation: dict[str, Any] = {
            "request_id": self.request_id,
            "trace_id": stored["trace_id"] if stored else metrics.get("trace_id"),
            "name": name,
            "kind": kind,
            "app": app,
            "created_at": _iso(started),
            "duration_ms": stored["duration_ms"] if stored else metrics.get("duration_ms"),
            "status": stored["status"] if stored else metrics.get("status") or _ledger_status(ledger),
            "error": root_span["status_message"] if root_span and root_span["status"] == "error" else None,
            "spans_sampled_out": sampled_out,
            "question": self.root.get("llmops.rag.question"),
            "answer": self.root.get("llmops.rag.answer"),
            "abstained": bool(self.root.get("llmops.rag.abstained") or metrics.get("abstained")),
            "blocked": bool(self.root.get("llmops.guardrails.blocked_by") or metrics.get("blocked")),
            "blocked_by": self.root.get("llmops.guardrails.blocked_by"),
            "caller": self.caller(model_calls, ledger),
            "prompt": self.prompt(app, ended),
            "retrieval": self.retrieval(),
            "guardrails": self.guardrails(),
            "model": self.model(model_calls, ledger),
            "usage": self.usage(model_calls, ledger),
            "gateway_calls": ledger,
            "online_scores": stored.get("online_scores", {}) if stored else {},
            "feedback": [f.to_dict() for f in self.lineage._feedback.find(request_id=self.request_id, limit=1000)],
            "metrics": metrics or None,
            "stages": [
                {"name": s["name"], "depth": s["depth"], "duration_ms": s["duration_ms"], "status": s["status"]}
                for s in self.spans
            ],
            "missing": self.missing,
        }
        if stored is not None and kind == "rag" and "llmops.rag.question" not in self.root:
            self.missing.append("the question and answer were not recorded (evaluation.trace_content was off, or "
                                "an input rail blocked the request first)")  # fmt: skip
        return explanation

    def window(self) -> tuple[datetime, datetime]:
        if self.stored is not None:
            started = datetime.fromisoformat(self.stored["created_at"])
            duration = self.stored["duration_ms"]
        elif self.metrics:
            started = datetime.fromisoformat(self.metrics["created_at"])
            duration = self.metrics["duration_ms"]
        else:
            calls = self.lineage._ledger_by_request(self.request_id)
            started = datetime.fromisoformat(calls[0]["at"])
            duration = sum(c["latency_ms"] for c in calls)
        started = _aware(started)
        return started, started + timedelta(milliseconds=duration or 0.0)

    def metrics_rails(self) -> list[str]:
        return list(self.metrics.get("rails") or [])

    # -- sections --

    def caller(self, model_calls: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {"user": None, "team": None, "app": None, "key_name": None, "tags": []}
        for call in ledger:
            for key in found:
                found[key] = found[key] or call.get(key)
        for call in model_calls:
            for key in ("user", "team", "app"):
                found[key] = found[key] or call.get(key)
        found["user"] = found["user"] or self.metrics.get("user")
        found["team"] = found["team"] or self.metrics.get("team")
        if not (found["user"] or found["team"] or found["key_name"]):
            self.missing.append("no user, team or API key is recorded for this request")
        return found

    def prompt(self, app: str | None, at: datetime) -> dict[str, Any] | None:
        render = self.span("render_prompt")
        render_attrs = render["attributes"] if render else {}
        name = self.root.get("llmops.prompt.name") or render_attrs.get("gen_ai.prompt.name")
        name = name or self.metrics.get("prompt_name")
        version = self.root.get("llmops.prompt.version") or render_attrs.get("llmops.prompt.version")
        version = version or self.metrics.get("prompt_version")
        if not name or not isinstance(version, int):
            return None
        section = self.lineage._prompt(str(name), version, render_attrs.get("llmops.prompt.label"), app, at)
        if not section.get("found"):
            self.missing.append(f"prompt {name} v{version} is not in the registry")
        elif section.get("label_move") is None:
            self.missing.append(
                f"no label pointed at {name} v{version} when the request was served: the app pinned the version "
                "(prompt_version) or an experiment chose it"
            )
        experiment = self.root.get("llmops.prompt.experiment")
        if experiment is not None:
            section["experiment"] = {"id": experiment, "variant": self.root.get("llmops.prompt.variant")}
        return section

    def retrieval(self) -> dict[str, Any]:
        span = self.span("retrieve")
        attrs = span["attributes"] if span else {}
        snapshot = _snapshot(attrs.get("llmops.index.snapshot", self.root.get("llmops.index.snapshot")))
        if snapshot is None:
            snapshot = self.metrics.get("index_snapshot")
        ids = [str(i) for i in attrs.get("llmops.retrieval.chunk_ids") or []]
        scores = list(attrs.get("llmops.retrieval.scores") or [])
        rows = self.lineage._chunks(ids, snapshot)
        dropped = set()
        context_span = self.span("guardrails.context")
        if context_span is not None:
            dropped = {int(i) for i in context_span["attributes"].get("llmops.guardrails.dropped_chunks") or []}
        cited = set(self.root.get("llmops.citations") or [])
        chunks = []
        for rank, chunk_id in enumerate(ids, start=1):
            row = rows.get(chunk_id)
            chunks.append(
                {
                    "rank": rank,
                    "chunk_id": chunk_id,
                    "score": scores[rank - 1] if rank - 1 < len(scores) else None,
                    "cited": chunk_id in cited,
                    "dropped_by_guardrails": rank - 1 in dropped,
                    "found": row is not None,
                    **(row or {}),
                }
            )
        absent = [c["chunk_id"] for c in chunks if not c["found"]]
        if absent:
            self.missing.append(f"{len(absent)} retrieved chunk(s) are no longer in the store: {', '.join(absent)}")
        pack = self.span("pack_context")
        info = self.lineage._snapshot(snapshot)
        if snapshot is not None and info is None:
            self.missing.append(f"index snapshot {snapshot} is no longer in the store")
        return {
            "snapshot": snapshot,
            "snapshot_info": info,
            "mode": attrs.get("llmops.retrieval.mode"),
            "top_k": attrs.get("llmops.retrieval.top_k"),
            "min_similarity": attrs.get("llmops.retrieval.min_similarity"),
            "hits": attrs.get("llmops.retrieval.hits", len(ids) if span else None),
            "top_score": scores[0] if scores else self.metrics.get("top_score"),
            "duration_ms": span["duration_ms"] if span else self.metrics.get("retrieval_ms"),
            "context_chunks": pack["attributes"].get("llmops.context.chunks") if pack else None,
            "cited": [c for c in self.root.get("llmops.citations") or []],
            "chunks": chunks,
        }

    def guardrails(self) -> dict[str, Any]:
        stages = []
        decisions = []
        for span in self.spans:
            if not span["name"].startswith("guardrails."):
                continue
            attrs = span["attributes"]
            stage = span["name"].split(".", 1)[1]
            stages.append(
                {
                    "stage": stage,
                    "policy": attrs.get("llmops.guardrails.policy"),
                    "allowed": attrs.get("llmops.guardrails.allowed"),
                    "rails": list(attrs.get("llmops.guardrails.rails") or []),
                    "triggered": list(attrs.get("llmops.guardrails.triggered") or []),
                    "blocked_by": attrs.get("llmops.guardrails.blocked_by"),
                    "action": attrs.get("llmops.guardrails.action"),
                    "dropped_chunks": list(attrs.get("llmops.guardrails.dropped_chunks") or []),
                    "reask": bool(attrs.get("llmops.guardrails.reask")),
                    "duration_ms": span["duration_ms"],
                }
            )
            for event in span["events"]:
                if event["name"] != "guardrail.decision":
                    continue
                a = event["attributes"]
                decisions.append(
                    {
                        "stage": a.get("llmops.guardrail.stage", stage),
                        "rail": a.get("llmops.guardrail.rail"),
                        "action": a.get("llmops.guardrail.action"),
                        "score": a.get("llmops.guardrail.score"),
                        "reason": a.get("llmops.guardrail.reason"),
                        "kinds": list(a.get("llmops.guardrail.kinds") or []),
                        "policy": a.get("llmops.guardrail.policy"),
                        "latency_ms": a.get("llmops.guardrail.latency_ms"),
                    }
                )
        policies = [s["policy"] for s in stages if s["policy"]]
        claims: Any = None
        for span in self.spans:
            raw = span["attributes"].get("llmops.guardrails.grounding_claims")
            if isinstance(raw, str):
                try:
                    claims = json.loads(raw)
                except ValueError:
                    claims = None
        grounding = self.root.get("llmops.guardrails.grounding_score", self.metrics.get("grounding_score"))
        return {
            "policy": next((p for p in policies if p != "none"), policies[0] if policies else None),
            "blocked_by": self.root.get("llmops.guardrails.blocked_by"),
            "stages": stages,
            "decisions": decisions,
            "rails_acted": sorted({r for s in stages for r in s["triggered"]}) if stages else self.metrics_rails(),
            "grounding_score": grounding,
            "grounding_claims": claims or [],
        }

    def model_calls(self) -> list[dict[str, Any]]:
        calls = []
        for span in self.spans:
            a = span["attributes"]
            if a.get("gen_ai.operation.name") != "chat":
                continue
            alias = a.get("gen_ai.request.model")
            calls.append(
                {
                    "alias": alias,
                    "served_by": a.get("llmops.served_by") or alias,
                    "upstream_model": a.get("llmops.upstream.model"),
                    "provider": a.get("gen_ai.provider.name"),
                    "response_model": a.get("gen_ai.response.model"),
                    "finish_reasons": list(a.get("gen_ai.response.finish_reasons") or []),
                    "parameters": {
                        "temperature": a.get("gen_ai.request.temperature"),
                        "top_p": a.get("gen_ai.request.top_p"),
                        "max_tokens": a.get("gen_ai.request.max_tokens"),
                    },
                    "route": {
                        "policy": a.get("llmops.route.policy", "alias"),
                        "model": a.get("llmops.route.model", alias),
                        "reason": a.get("llmops.route.reason", "requested"),
                    },
                    "cache_hit": a.get("llmops.cache.hit"),
                    "retries": a.get("llmops.retries", 0),
                    "fallbacks": list(a.get("llmops.fallbacks") or []),
                    "cancelled": bool(a.get("llmops.cancelled")),
                    "input_tokens": a.get("gen_ai.usage.input_tokens"),
                    "output_tokens": a.get("gen_ai.usage.output_tokens"),
                    "cost_usd": a.get("llmops.cost_usd"),
                    "ttft_ms": a.get("llmops.ttft_ms"),
                    "user": a.get("llmops.caller.user"),
                    "team": a.get("llmops.caller.team"),
                    "app": a.get("llmops.caller.app"),
                    "status": span["status"],
                    "error": span["status_message"],
                    "start_offset_ms": span["start_offset_ms"],
                    "duration_ms": span["duration_ms"],
                }
            )
        return calls

    def ledger(self, model_calls: list[dict[str, Any]], started: datetime, ended: datetime) -> list[dict[str, Any]]:
        """The request's ledger rows; rows written without a request id are matched to its model calls."""
        calls = self.lineage._ledger_by_request(self.request_id)
        if calls:
            return calls
        wanted = [(c["alias"], c["input_tokens"], c["output_tokens"]) for c in model_calls if c["status"] == "ok"] or (
            [(None, self.metrics.get("input_tokens"), self.metrics.get("output_tokens"))]
            if self.stored is None and self.metrics.get("model")
            else []
        )
        if not wanted:
            return []
        candidates = self.lineage._ledger_unattributed(started, ended)
        matched: list[dict[str, Any]] = []
        for alias, input_tokens, output_tokens in wanted:
            fits = [
                c for c in candidates
                if c["status"] == "ok" and c["input_tokens"] == input_tokens and c["output_tokens"] == output_tokens
                and (c["model"] == alias if alias else self.metrics.get("model") in (c["model"], c["served_by"]))
                and c not in matched
            ]  # fmt: skip
            if len(fits) == 1:
                matched.append(fits[0])
            elif len(fits) > 1:
                self.missing.append(
                    f"{len(fits)} gateway calls without a request id fit a model call of this request (same time, "
                    "model and tokens): none is shown"
                )
        if len(matched) < len(wanted):
            self.missing.append("the gateway ledger has no row for some model call of this request")
        if matched:
            self.missing.append(
                "the ledger rows carry no request id (RAG and guarded calls do not pass it to the gateway): "
                "matched to this request's model calls by time, model and token counts"
            )
        return matched

    def model(self, model_calls: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> dict[str, Any]:
        last = model_calls[-1] if model_calls else {}
        booked = ledger[-1] if ledger else {}
        return {
            "alias": last.get("alias") or booked.get("model") or self.metrics.get("model"),
            "served_by": last.get("served_by") or booked.get("served_by") or self.metrics.get("model"),
            "upstream_model": last.get("upstream_model") or booked.get("upstream_model"),
            "provider": booked.get("provider") or last.get("provider"),
            "response_model": last.get("response_model"),
            "parameters": last.get("parameters") or {"temperature": None, "top_p": None, "max_tokens": None},
            "finish_reasons": last.get("finish_reasons") or [],
            "calls": model_calls,
        }

    def usage(self, model_calls: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> dict[str, Any]:
        if model_calls:
            input_tokens = sum(int(c["input_tokens"] or 0) for c in model_calls)
            output_tokens = sum(int(c["output_tokens"] or 0) for c in model_calls)
            cost = sum(float(c["cost_usd"] or 0.0) for c in model_calls)
            ttft = model_calls[-1]["ttft_ms"]
            source = "trace"
        elif self.metrics:
            input_tokens, output_tokens = self.metrics["input_tokens"], self.metrics["output_tokens"]
            cost, ttft, source = self.metrics["cost_usd"], self.metrics["ttft_ms"], "metrics"
        else:
            input_tokens = sum(c["input_tokens"] for c in ledger)
            output_tokens = sum(c["output_tokens"] for c in ledger)
            cost, ttft, source = sum(c["cost_usd"] for c in ledger), None, "ledger"
        return {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "cost_usd": cost,
            "ttft_ms": ttft,
            "price_books": sorted({c["price_book"] for c in ledger}),
            "source": source,
        }


# ---- history and values -----------------------------------------------------------------------------------------


def _label_move(
    history: list[HistoryEntry], version: int, label: str | None, environment: str | None, at: datetime
) -> HistoryEntry | list[HistoryEntry] | None:
    """The move that had ``label`` on ``version`` at ``at``: in ``environment`` when known (an entry or None),
    else one per environment where it did (a list, oldest move first)."""
    state: dict[tuple[str | None, str | None], HistoryEntry] = {}
    for entry in history:
        if entry.kind not in ("move", "rollback") or _aware(entry.at) > at:
            continue
        if label is not None and entry.label != label:
            continue
        if environment is not None and entry.environment != environment:
            continue
        state[(entry.environment, entry.label)] = entry  # history is oldest first: the last one is in force
    serving = sorted((e for e in state.values() if e.to_version == version), key=lambda e: e.id)
    if environment is not None:
        return serving[-1] if serving else None
    return serving


def _call(row: GatewayCallRow, matched_by: str) -> dict[str, Any]:
    call = {c.name: _plain(getattr(row, c.name)) for c in GatewayCallRow.__table__.columns}
    call["matched_by"] = matched_by
    return call


def _ledger_status(ledger: list[dict[str, Any]]) -> str | None:
    if not ledger:
        return None
    return "error" if any(c["status"] == "error" for c in ledger) else "ok"


def _snapshot(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _aware(value: datetime) -> datetime:
    """Stored datetimes are UTC; SQLite hands them back without a zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return _aware(value).isoformat() if value is not None else None


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO strings, tuples as lists."""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
