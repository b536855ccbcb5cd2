"""The EU AI Act evidence pack: the platform's own records, arranged by the duties of Regulation (EU) 2024/1689
they support, as one JSON document (`evidence_pack`) and its Markdown rendering (`render_evidence_markdown`).

| section | what it holds | duties |
|---|---|---|
| model_inventory | model aliases (provider, exact upstream model, prices), routers, RAG apps, spend | Art. 11, 13 |
| prompt_inventory | every prompt, its versions and authors, labels per environment, who moved them last | Art. 11, 12 |
| knowledge | registered sources and index snapshots | Art. 10, 11 |
| change_history | the audit log summarised, its chain verified, the latest entries | Art. 12 |
| record_keeping | what is logged for each request (traces, metrics rows, ledger), sampling, export | Art. 12 |
| transparency | each application's model, prompt, citations, abstention, guardrails, AI notice | Art. 13, 50 |
| human_oversight | roles, protected labels, change requests, held rules, reviews, held answers, keys | Art. 14 |
| guardrails | the policy version in force on every route, with its rails and thresholds | Art. 9, 15 |
| evaluation | datasets, the latest experiments with scores and recorded gate outcomes, online scores | Art. 9, 15 |
| incidents | errors, guardrail blocks, PII findings, trigger firings, drift, negative feedback, reviews | Art. 72, 73 |
| retention | how long each kind of record is kept, against the six-month floor of Art. 19(1) and 26(6) | Art. 19, 26 |
| maturity | the maturity assessment (`assess_maturity`) | |

Counts over requests cover what retention has kept (pruning deletes a request's trace and metrics row together).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select

import llmops
from llmops._settings import HumanReviewConfig
from llmops.evaluation._tables import DatasetDraftRow, DatasetVersionRow, EvalExperimentRow, OnlineScoreRow
from llmops.gateway._tables import GatewayCallRow
from llmops.governance._maturity import RouteBinding, assess_maturity, route_bindings
from llmops.governance._tables import ApiKeyRow, AuditEntryRow, RoleGrantRow
from llmops.guardrails._tables import PolicyLabelRow, PolicyVersionRow
from llmops.knowledge._tables import DocumentRow, IndexSnapshotRow, SourceRow
from llmops.loop._tables import ActionRunRow, FeedbackRow, ReviewItemRow, TriggerFiringRow
from llmops.observability._tables import DriftReportRow, RequestMetricRow, TraceRow
from llmops.prompts._tables import (
    ChangeRequestRow,
    LabelHistoryRow,
    PromptCheckRow,
    PromptLabelRow,
    PromptPolicyRow,
    PromptReviewRow,
    PromptRow,
    PromptStageRow,
    PromptVersionRow,
)

if TYPE_CHECKING:
    from llmops._platform import Platform

__all__ = ["DISCLAIMER", "DUTIES", "SIX_MONTHS_DAYS", "evidence_pack"]

DISCLAIMER = (
    "This pack assembles evidence from the platform's own records to support documentation, logging and oversight "
    "duties under Regulation (EU) 2024/1689 (the AI Act). It is evidence, not legal advice and not a conformity "
    "assessment: whether a system is high-risk, whether you act as provider or deployer, and which duties apply are "
    "for you and your counsel to determine."
)

#: The duties each section supports: (article, duty, section ids).
DUTIES: list[tuple[str, str, list[str]]] = [
    ("Art. 9", "Risk management system", ["guardrails", "evaluation", "incidents"]),
    ("Art. 10", "Data and data governance", ["knowledge", "evaluation"]),
    ("Art. 11, Annex IV", "Technical documentation", ["model_inventory", "prompt_inventory", "knowledge"]),
    ("Art. 12", "Record-keeping: automatic logging and traceability", ["record_keeping", "change_history"]),
    ("Art. 13", "Transparency and information to deployers", ["transparency", "model_inventory"]),
    ("Art. 14", "Human oversight", ["human_oversight"]),
    ("Art. 15", "Accuracy, robustness and cybersecurity", ["evaluation", "guardrails"]),
    ("Art. 19, Art. 26(6)", "Keeping the automatically generated logs", ["retention"]),
    ("Art. 26(5), Art. 72, Art. 73", "Monitoring, post-market monitoring, serious incidents", ["incidents"]),
]
SIX_MONTHS_DAYS = 183  # Art. 19(1) and 26(6): logs kept "for a period ... of at least six months"
_RECENT_AUDIT = 25
_RECENT_EXPERIMENTS = 10
_RECENT_FIRINGS = 50


def evidence_pack(platform: Platform) -> dict[str, Any]:
    """The evidence pack of ``platform`` now, as one JSON-able dict (read only)."""
    platform.journal.flush()  # requests, calls and scores go through the journal: include what was acknowledged
    bindings = route_bindings(platform)
    return {
        "title": "EU AI Act evidence pack",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform_version": llmops.__version__,
        "environment": platform.settings.environment,
        "environments": list(platform.settings.environments),
        "disclaimer": DISCLAIMER,
        "duties": [{"article": a, "duty": d, "sections": s} for a, d, s in DUTIES],
        "model_inventory": _model_inventory(platform),
        "prompt_inventory": _prompt_inventory(platform),
        "knowledge": _knowledge(platform),
        "change_history": _change_history(platform),
        "record_keeping": _record_keeping(platform),
        "transparency": _transparency(platform, bindings),
        "human_oversight": _human_oversight(platform),
        "guardrails": _guardrails(platform, bindings),
        "evaluation": _evaluation(platform),
        "incidents": _incidents(platform),
        "retention": _retention(platform),
        "maturity": assess_maturity(platform).to_dict(),
    }


# ---- sections -------------------------------------------------------------------------------------------------


def _model_inventory(p: Platform) -> dict[str, Any]:
    with p.store.session() as s:
        usage = s.execute(
            select(
                GatewayCallRow.served_by,
                func.count(),
                func.coalesce(func.sum(GatewayCallRow.cost_usd), 0.0),
                func.sum(case((GatewayCallRow.status == "error", 1), else_=0)),
            ).group_by(GatewayCallRow.served_by)
        ).all()
    spend = {
        alias: {"calls": int(n), "cost_usd": float(cost), "errors": int(err or 0)} for alias, n, cost, err in usage
    }
    models = []
    for m in p.settings.models:
        price = p.gateway.prices.price(m.name) if m.kind == "chat" else None
        models.append(
            {
                "alias": m.name,
                "kind": m.kind,
                "provider": m.provider,
                "upstream_model": m.model,
                "base_url": m.base_url,
                "fallbacks": list(m.fallbacks),
                "capabilities": list(m.capabilities),
                "context_window": m.context_window,
                "price_per_mtok": None
                if price is None
                else {
                    "input": price.input_per_mtok,
                    "output": price.output_per_mtok,
                    "cached_input": price.cached_input_per_mtok,
                    "source": price.source,
                },
                "usage": spend.get(m.name, {"calls": 0, "cost_usd": 0.0, "errors": 0}),
            }
        )
    return {
        "price_book": p.gateway.prices.version,
        "models": models,
        "routers": [r.model_dump(mode="json", exclude_defaults=True) for r in p.settings.routers],
        "rag_apps": [
            {
                "name": a.name,
                "model": a.model,
                "prompt": a.prompt,
                "prompt_label": a.prompt_label,
                "prompt_version": a.prompt_version,
                "retrieval": a.retrieval,
                "top_k": a.top_k,
                "min_similarity": a.min_similarity,
                "reranker": a.reranker,
                "index_snapshot": a.index_snapshot,
                "online_eval_rate": a.online_eval_rate,
            }
            for a in p.settings.rag_apps
        ],
    }


def _prompt_inventory(p: Platform) -> list[dict[str, Any]]:
    with p.store.session() as s:
        prompts = s.execute(select(PromptRow.name, PromptRow.description).order_by(PromptRow.name)).all()
        versions = s.scalars(select(PromptVersionRow).order_by(PromptVersionRow.prompt_name, PromptVersionRow.version))
        by_prompt: dict[str, list[dict[str, Any]]] = {}
        for v in versions:
            by_prompt.setdefault(v.prompt_name, []).append(
                {
                    "version": v.version,
                    "author": v.author,
                    "created_at": _iso(v.created_at),
                    "commit_message": v.commit_message,
                    "content_hash": v.content_hash,
                    "tags": list(v.tags or []),
                }
            )
        labels: dict[str, list[dict[str, Any]]] = {}
        for row in s.scalars(select(PromptLabelRow).order_by(PromptLabelRow.environment, PromptLabelRow.label)):
            labels.setdefault(row.prompt_name, []).append(
                {
                    "environment": row.environment,
                    "label": row.label,
                    "version": row.version,
                    "moved_by": row.updated_by,
                    "moved_at": _iso(row.updated_at),
                }
            )
        moves = Counter(
            s.scalars(select(LabelHistoryRow.prompt_name).where(LabelHistoryRow.kind.in_(("move", "rollback"))))
        )
        stages = {
            (name, version): stage
            for name, version, stage in s.execute(
                select(PromptStageRow.prompt_name, PromptStageRow.version, PromptStageRow.stage)
            )
        }
    inventory = []
    for name, description in prompts:
        entries = by_prompt.get(name, [])
        authors = Counter(e["author"] for e in entries)
        for entry in entries:
            entry["labels"] = [
                f"{x['environment']}/{x['label']}" for x in labels.get(name, []) if x["version"] == entry["version"]
            ]
            entry["stage"] = stages.get((name, entry["version"]), "draft")
        inventory.append(
            {
                "name": name,
                "description": description,
                # The registry has no owner field: a prompt's owners are the people who wrote its versions.
                "owners": [author for author, _ in authors.most_common()],
                "versions": entries,
                "labels": labels.get(name, []),
                "label_moves": moves.get(name, 0),
            }
        )
    return inventory


def _knowledge(p: Platform) -> dict[str, Any]:
    with p.store.session() as s:
        sources = [
            {"location": r.location, "kind": r.kind, "registered_at": _iso(r.created_at)}
            for r in s.scalars(select(SourceRow).order_by(SourceRow.id))
        ]
        snapshots = [
            {
                "id": r.id,
                "kind": r.kind,
                "status": r.status,
                "created_at": _iso(r.created_at),
                "documents": r.documents,
                "chunks": r.chunks,
                "embedding_model": r.embedding_model,
                "chunking_config": r.chunking_config_id,
            }
            for r in s.scalars(select(IndexSnapshotRow).order_by(IndexSnapshotRow.id.desc()).limit(20))
        ]
        documents = _count(s, DocumentRow)
    return {
        "sources": sources,
        "documents": documents,
        "snapshots": snapshots,
        "pinned": {a.name: a.index_snapshot for a in p.settings.rag_apps if a.index_snapshot is not None},
    }


def _change_history(p: Platform) -> dict[str, Any]:
    with p.store.session() as s:
        by_action = dict(s.execute(select(AuditEntryRow.action, func.count()).group_by(AuditEntryRow.action)).all())
        by_actor = dict(s.execute(select(AuditEntryRow.actor, func.count()).group_by(AuditEntryRow.actor)).all())
        span = s.execute(select(func.min(AuditEntryRow.at), func.max(AuditEntryRow.at))).one()
        recent = s.scalars(select(AuditEntryRow).order_by(AuditEntryRow.seq.desc()).limit(_RECENT_AUDIT)).all()
        recent_entries = [
            {
                "seq": r.seq,
                "at": _iso(r.at),
                "actor": r.actor,
                "action": r.action,
                "object": f"{r.object_type}:{r.object_id}",
            }
            for r in recent
        ]
        label_moves = _count(s, LabelHistoryRow, LabelHistoryRow.kind.in_(("move", "rollback")))
    verification = p.audit.verify()
    return {
        "audit_log": {
            "entries": sum(int(n) for n in by_action.values()),
            "first_at": _iso(span[0]) if span[0] else None,
            "last_at": _iso(span[1]) if span[1] else None,
            "by_action": {str(k): int(v) for k, v in sorted(by_action.items())},
            "by_actor": {str(k): int(v) for k, v in sorted(by_actor.items())},
            "verification": verification.to_dict(),
            "recent": recent_entries,
        },
        "prompt_label_moves": label_moves,
    }


def _record_keeping(p: Platform) -> dict[str, Any]:
    observability = p.settings.observability
    with p.store.session() as s:
        requests = s.execute(
            select(func.count(), func.min(RequestMetricRow.created_at), func.max(RequestMetricRow.created_at))
        ).one()
        kinds = dict(s.execute(select(RequestMetricRow.kind, func.count()).group_by(RequestMetricRow.kind)).all())
        traces = _count(s, TraceRow)
        calls = _count(s, GatewayCallRow)
        audit = _count(s, AuditEntryRow)
        feedback = _count(s, FeedbackRow)
    return {
        "requests_logged": int(requests[0]),
        "requests_by_kind": {str(k): int(v) for k, v in sorted(kinds.items())},
        "first_request_at": _iso(requests[1]) if requests[1] else None,
        "last_request_at": _iso(requests[2]) if requests[2] else None,
        "traces_stored": traces,
        "gateway_calls": calls,
        "audit_entries": audit,
        "feedback": feedback,
        "sample_rate": observability.sample_rate,
        "always_kept": "errors, guardrail blocks and thumbs-down traces, whatever the sample rate",
        "otlp_export": observability.otlp_endpoint,
        "question_and_answer_on_traces": p.settings.evaluation.trace_content,
        "personal_data": "questions and answers on traces and drift observations are scrubbed of personal data",
        "per_request_record": "one metrics row per request (app, prompt version, model, index snapshot, user, team, "
        "status, latency, tokens, cost, grounding, guardrail triggers); sampled requests keep every span",
    }


def _transparency(p: Platform, bindings: list[RouteBinding]) -> dict[str, Any]:
    policies = {b.route: _binding_name(b) for b in bindings}
    apps = []
    for a in p.settings.rag_apps:
        try:
            version: int | None = (
                a.prompt_version or p.prompts.resolve(a.prompt, label=a.prompt_label, environment=a.environment).version
            )
        except LookupError:
            version = None
        model = p.settings.model(a.model)
        apps.append(
            {
                "name": a.name,
                "model": a.model,
                "upstream_model": model.model if model else None,
                "provider": model.provider if model else None,
                "prompt": f"{a.prompt} v{version}" if version else f"{a.prompt} ({a.prompt_label}: unset)",
                "guardrail_policy": policies.get(a.name),
                "citations": "answers cite numbered sources mapped to documents",
                "abstention": f"no source above similarity {a.min_similarity:g}: answers 'I don't know' without "
                "calling the model",
                "project": a.project,
                "human_review": _review_conditions(a.human_review),
            }
        )
    return {
        "applications": apps,
        "served_models": p.served_models(),
        "ai_disclosure": p.settings.transparency.disclosure,
        "each_answer_carries": [
            "request_id",
            "citations",
            "usage",
            "cost_usd",
            "guardrail decision when one acted",
            "ai_disclosure (field and X-LLMOps-AI-Generated header)",
        ],
    }


def _review_conditions(review: HumanReviewConfig) -> str:
    """When an app's answers wait for a person, in words ("never" when they do not)."""
    when = [
        *(["always"] if review.always else []),
        *([f"a rail flags or rewrites: {', '.join(review.on_rails)}"] if review.on_rails else []),
        *(["an unsupported claim"] if review.on_unsupported_claims else []),
        *([f"grounding below {review.below_grounding:g}"] if review.below_grounding is not None else []),
    ]
    return "; ".join(when) or "never"


def _human_oversight(p: Platform) -> dict[str, Any]:
    with p.store.session() as s:
        grants = [
            {"user": r.user, "role": r.role, "project": r.project, "granted_by": r.granted_by,
             "granted_at": _iso(r.granted_at)}
            for r in s.scalars(select(RoleGrantRow).order_by(RoleGrantRow.user, RoleGrantRow.role))
        ]  # fmt: skip
        held_answers = Counter(
            status for status, details in s.execute(select(ReviewItemRow.status, ReviewItemRow.details))
            if isinstance(details, dict) and "held_answer" in details
        )  # fmt: skip
        keys = Counter("revoked" if revoked else "active" for (revoked,) in s.execute(select(ApiKeyRow.revoked_at)))
        policies = [
            {
                "name": r.name,
                "prompt": r.prompt_name,
                "environment": r.environment,
                "label": r.label,
                "required_approvals": r.required_approvals,
                "required_check": r.required_check,
                "created_by": r.created_by,
            }
            for r in s.scalars(select(PromptPolicyRow).order_by(PromptPolicyRow.id))
        ]
        requests = Counter(s.scalars(select(ChangeRequestRow.status)))
        reviewers: dict[int, list[str]] = {}
        for cr_id, reviewer, decision in s.execute(
            select(PromptReviewRow.change_request_id, PromptReviewRow.reviewer, PromptReviewRow.decision)
        ):
            reviewers.setdefault(cr_id, []).append(f"{reviewer} ({decision})")
        recent_requests = [
            {
                "id": r.id,
                "prompt": r.prompt_name,
                "target": f"{r.environment}/{r.label} v{r.from_version} -> v{r.to_version}",
                "requested_by": r.requested_by,
                "status": r.status,
                "reviews": reviewers.get(r.id, []),
            }
            for r in s.scalars(select(ChangeRequestRow).order_by(ChangeRequestRow.id.desc()).limit(20))
        ]
        held = _count(s, TriggerFiringRow, TriggerFiringRow.status == "pending_approval")
        decided = s.execute(
            select(ActionRunRow.action, ActionRunRow.status, ActionRunRow.decided_by).where(
                ActionRunRow.decided_by.is_not(None)
            )
        ).all()
        reviews = Counter(s.scalars(select(ReviewItemRow.status)))
        drafts = _count(s, DatasetDraftRow, DatasetDraftRow.status == "pending")
    rules = []
    for rule in p.triggers.rules():
        steps = [name for name, _ in rule.steps()]
        rules.append(
            {
                "name": rule.name,
                "when": rule.when.describe(),
                "actions": steps,
                "changes_production": any(bool(getattr(p.actions.get(a), "changes_production", True)) for a in steps),
                "approval": rule.approval,
                "enabled": rule.enabled,
            }
        )
    return {
        "roles": grants,
        "approvers": sorted({g["user"] for g in grants if g["role"] in ("approver", "admin")}),
        "protected_labels": policies,
        "change_requests": {"by_status": dict(requests), "recent": recent_requests},
        "trigger_rules": rules,
        "firings_waiting_for_approval": held,
        "automated_actions_decided_by_people": [{"action": a, "status": st, "decided_by": by} for a, st, by in decided],
        "review_queue": dict(reviews),
        "answers_held_for_review": dict(held_answers),
        "dataset_drafts_waiting_for_review": drafts,
        "access_control": {
            "keys_required": p.settings.auth.required,
            "projects": [x["name"] for x in p.access.projects.list()],
            "api_keys": dict(keys),
        },
    }


def _guardrails(p: Platform, bindings: list[RouteBinding]) -> dict[str, Any]:
    with p.store.session() as s:
        versions = Counter(s.scalars(select(PolicyVersionRow.name)))
        authors: dict[str, set[str]] = {}
        for name, author in s.execute(select(PolicyVersionRow.name, PolicyVersionRow.author)):
            authors.setdefault(name, set()).add(author)
        labels = [
            {
                "policy": r.name,
                "environment": r.environment,
                "label": r.label,
                "version": r.version,
                "moved_by": r.updated_by,
                "moved_at": _iso(r.updated_at),
            }
            for r in s.scalars(select(PolicyLabelRow).order_by(PolicyLabelRow.name, PolicyLabelRow.environment))
        ]
    return {
        "label_followed": p.settings.guardrails.label,
        "environment": p.settings.environment,
        "routes": [b.to_dict() for b in bindings],
        "policies": [
            {"name": name, "versions": n, "authors": sorted(authors.get(name, set()))}
            for name, n in sorted(versions.items())
        ],
        "labels": labels,
    }


def _evaluation(p: Platform) -> dict[str, Any]:
    with p.store.session() as s:
        datasets = [
            {
                "dataset": r.dataset,
                "version": r.version,
                "items": r.items,
                "origin": r.origin,
                "author": r.author,
                "created_at": _iso(r.created_at),
            }
            for r in s.scalars(select(DatasetVersionRow).order_by(DatasetVersionRow.dataset, DatasetVersionRow.version))
        ]
        ids = list(
            s.scalars(
                select(EvalExperimentRow.id).order_by(EvalExperimentRow.created_at.desc()).limit(_RECENT_EXPERIMENTS)
            )
        )
        checks = [
            {
                "prompt": r.prompt_name,
                "version": r.version,
                "check": r.name,
                "passed": r.passed,
                "recorded_by": r.recorded_by,
                "at": _iso(r.at),
            }
            for r in s.scalars(select(PromptCheckRow).order_by(PromptCheckRow.id))
        ]
        online = s.execute(
            select(OnlineScoreRow.app, OnlineScoreRow.metric, func.count(), func.avg(OnlineScoreRow.value)).group_by(
                OnlineScoreRow.app, OnlineScoreRow.metric
            )
        ).all()
    experiments = []
    for experiment_id in ids:
        record = p.evaluator.experiments.get(experiment_id)
        prompt = record.config.get("prompt") or {}
        gate = [
            c for c in checks if prompt and c["prompt"] == prompt.get("name") and c["version"] == prompt.get("version")
        ]
        experiments.append(
            {
                "id": record.id,
                "name": record.name,
                "dataset": f"{record.dataset} v{record.dataset_version}",
                "status": record.status,
                "created_at": _iso(record.created_at),
                "pinned": {
                    "prompt": f"{prompt.get('name')} v{prompt.get('version')}" if prompt else None,
                    "model": (record.config.get("model") or {}).get("name"),
                    "index_snapshot": record.config.get("index_snapshot"),
                    "guardrail_policy": record.config.get("guardrail_policy"),
                },
                "metrics": {
                    m: {"mean": summary.mean, "scored": summary.scored, "errors": summary.errors}
                    for m in record.metrics()
                    for summary in [record.summary(m)]
                },
                "items": len(record.items),
                "errors": sum(1 for i in record.items if i.error),
                "gate": gate[-1] if gate else None,
            }
        )
    return {
        "datasets": datasets,
        "experiments": experiments,
        "gate_results": checks,
        "online_scores": [
            {"app": app, "metric": metric, "count": int(n), "mean": float(mean) if mean is not None else None}
            for app, metric, n, mean in online
        ],
        "online_sampling": {a.name: a.online_eval_rate for a in p.settings.rag_apps},
    }


def _incidents(p: Platform) -> dict[str, Any]:
    with p.store.session() as s:
        by_app = s.execute(
            select(
                RequestMetricRow.app,
                func.count(),
                func.sum(case((RequestMetricRow.status == "error", 1), else_=0)),
                func.sum(case((RequestMetricRow.blocked.is_(True), 1), else_=0)),
                func.coalesce(func.sum(RequestMetricRow.guardrail_triggers), 0),
                func.coalesce(func.sum(RequestMetricRow.pii_incidents), 0),
            ).group_by(RequestMetricRow.app)
        ).all()
        firings = s.scalars(
            select(TriggerFiringRow).order_by(TriggerFiringRow.created_at.desc()).limit(_RECENT_FIRINGS)
        ).all()
        runs: dict[str, list[str]] = {}
        if firings:
            for run in s.scalars(
                select(ActionRunRow)
                .where(ActionRunRow.firing_id.in_([f.id for f in firings]))
                .order_by(ActionRunRow.position)
            ):
                runs.setdefault(run.firing_id, []).append(f"{run.action}: {run.status}")
        recent_firings = [
            {
                "id": f.id,
                "rule": f.rule,
                "source": f.source,
                "at": _iso(f.created_at),
                "status": f.status,
                "actor": f.actor,
                "actions": runs.get(f.id, []),
            }
            for f in firings
        ]
        firing_status = Counter(s.scalars(select(TriggerFiringRow.status)))
        drift = s.execute(select(func.count(), func.sum(case((DriftReportRow.drifted.is_(True), 1), else_=0)))).one()
        feedback = s.execute(
            select(FeedbackRow.kind, func.count())
            .where(
                (FeedbackRow.kind.in_(("correction", "flag")))
                | ((FeedbackRow.kind == "thumbs") & (FeedbackRow.value == 0))
                | ((FeedbackRow.kind == "rating") & (FeedbackRow.value <= 2))
            )
            .group_by(FeedbackRow.kind)
        ).all()
        open_items = [
            {"id": r.id, "title": r.title, "opened_at": _iso(r.created_at)}
            for r in s.scalars(select(ReviewItemRow).where(ReviewItemRow.status == "open").order_by(ReviewItemRow.id))
        ]
        items = Counter(s.scalars(select(ReviewItemRow.status)))
    apps: list[dict[str, Any]] = [
        {
            "app": app or "(gateway and other requests)",
            "requests": int(n),
            "errors": int(errors or 0),
            "blocked": int(blocked or 0),
            "guardrail_triggers": int(triggers),
            "pii_incidents": int(pii),
        }
        for app, n, errors, blocked, triggers, pii in by_app
    ]
    keys = ("requests", "errors", "blocked", "guardrail_triggers", "pii_incidents")
    totals = {key: sum(int(a[key]) for a in apps) for key in keys}
    return {
        "requests": totals,
        "by_app": apps,
        "trigger_firings": {"by_status": dict(firing_status), "recent": recent_firings},
        "drift_tests": {"run": int(drift[0]), "drifted": int(drift[1] or 0)},
        "negative_feedback": {str(kind): int(n) for kind, n in feedback},
        "review_items": {"by_status": dict(items), "open": open_items},
    }


def _retention(p: Platform) -> dict[str, Any]:
    observability = p.settings.observability
    scopes = {"default": observability.retention, **observability.retention_by_app}
    traces = {
        name: {
            "max_age_days": r.max_age_days,
            "max_traces": r.max_traces,
            "meets_six_months": r.max_age_days is None or r.max_age_days >= SIX_MONTHS_DAYS,
        }
        for name, r in scopes.items()
    }
    short = [name for name, t in traces.items() if not t["meets_six_months"]]
    findings = []
    if short:
        findings.append(
            f"traces and request metrics of {', '.join(short)} are deleted before six months "
            f"({SIX_MONTHS_DAYS} days): Art. 19(1) and 26(6) ask high-risk systems' logs to be kept at least six "
            "months; raise observability.retention max_age_days if they apply to you"
        )
    if any(r.max_traces is not None for r in scopes.values()):
        findings.append("a max_traces limit can delete requests younger than six months on a busy app")
    return {
        "traces_and_request_metrics": traces,
        "audit_log": "kept without limit: append-only and hash-chained (`llmops audit verify`)",
        "gateway_call_ledger": "kept without limit",
        "evaluation_results_and_datasets": "kept without limit (versions are immutable)",
        "prompt_and_policy_history": "kept without limit (versions are immutable; label history is append-only)",
        "feedback_and_trigger_firings": "kept without limit",
        "findings": findings,
    }


# ---- helpers --------------------------------------------------------------------------------------------------


def _binding_name(b: RouteBinding) -> str:
    if b.policy is None:
        return "none (unguarded)"
    return f"{b.policy} v{b.version}" if b.version is not None else f"{b.policy} (missing)"


def _count(session: Any, table: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _iso(moment: datetime) -> str:
    """UTC ISO 8601 (SQLite hands back naive datetimes, stored as UTC)."""
    aware = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.isoformat(timespec="seconds")
