"""The maturity assessment: where the platform stands on the six dimensions of the LLMOps maturity model, computed
from its own records (the store's tables, the settings in force, the audit chain), never from a questionnaire.

Each dimension has criteria for level 1 (in use) and level 2 (under control). A dimension is at level 1 when every
level-1 criterion holds and at level 2 when every level-1 and level-2 criterion holds; otherwise it is at level 0.
What a fresh install writes by itself (the seeded prompts, policy and label moves, all by the actor ``llmops``) never
counts as use; "people" below are every other actor, including a trigger rule acting on someone's behalf. Every
criterion reports what was found, counted, whether or not it holds; the unmet criteria of the next level are the next
steps, each with the command that gets there.

| dimension | level | what the records must show (every row of the level, and of the levels below) |
|---|---|---|
| prompt_management | 0 | only the seeded prompts (``rag-default``, the judge rubrics), labels moved only by the seed |
| | 1 | a prompt version written by a person in the registry |
| | 1 | a label moved by a person |
| | 2 | a prompt policy protecting a label, and a change request applied after approval |
| | 2 | a rollback by a person, or an A/B or canary experiment |
| rag_pipeline | 0 | nothing ingested |
| | 1 | a registered source ingested into a ready snapshot that holds documents |
| | 2 | re-ingested: two or more ready ingestion snapshots |
| | 2 | retrieval scored in a finished experiment (recall@k, precision@k, MRR, nDCG, context precision/recall) |
| | 2 | retrieval tuned or pinned (hybrid/keyword, reranker, MMR, filter, pinned snapshot) or a snapshot rollback |
| guardrails | 0 | the seeded ``default`` policy only, or a route unguarded |
| | 1 | every served route (RAG apps, gateway models) bound to a policy that exists |
| | 1 | a policy written by a person in force on a route |
| | 1 | guarded requests recorded (request metrics of RAG and chat requests) |
| | 2 | a person's policy iterated: two or more versions, or a label rolled back |
| | 2 | every policy in force checks answers against their sources (a grounding or citations output rail) |
| | 2 | a trigger rule on a guardrail signal (`GUARDRAIL_SIGNALS`, guardrail_block events) or tightening a rail |
| evaluation | 0 | no dataset, no experiment |
| | 1 | a dataset version |
| | 1 | a finished experiment |
| | 2 | a gate result recorded on a prompt version (``llmops prompts check``) |
| | 2 | online evaluation sampling an app, with scores stored |
| | 2 | candidates from production (traces, feedback) or generation reviewed |
| cost_management | 0 | no call in the ledger |
| | 1 | calls in the ledger with their cost and price book |
| | 1 | every chat model priced (configured, genai-prices, or local and free) |
| | 1 | calls attributed to a user, team, app or key |
| | 2 | a hard money budget (``gateway.limits`` with ``budget_usd``) |
| | 2 | spend watched: a rule on cost or tokens, a rule that throttles, or the cost-spike runbook run |
| governance | 0 | no role granted; only the seed's entries in the audit log |
| | 1 | a role granted |
| | 1 | audit entries by people |
| | 2 | the audit chain verifies intact |
| | 2 | a prompt policy, and a change request applied after approval (four eyes on production) |
| | 2 | trigger rules that change production wait for an approver: at least one, none without |
| | 2 | review items closed, none open for over 7 days |
| | 2 | trace retention bounded by age or count, by default and for every app override |

``eval retrieval`` reports are not stored, and neither are gate outcomes of ``llmops eval run --gate`` by themselves:
only what the store holds counts (a gate outcome counts once recorded on the prompt version it tested, with
``llmops prompts check``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select

from llmops.evaluation._tables import DatasetDraftRow, DatasetVersionRow, EvalExperimentRow, OnlineScoreRow
from llmops.gateway._tables import CallRepricingRow, GatewayCallRow
from llmops.governance._tables import AuditEntryRow, RoleGrantRow
from llmops.guardrails._tables import PolicyHistoryRow, PolicyVersionRow
from llmops.knowledge._tables import DocumentRow, IndexSnapshotRow, SnapshotChangeRow, SourceRow
from llmops.loop._tables import ReviewItemRow, TriggerFiringRow
from llmops.observability._tables import RequestMetricRow
from llmops.prompts._tables import (
    ChangeRequestRow,
    ExperimentRow,
    LabelHistoryRow,
    PromptCheckRow,
    PromptPolicyRow,
    PromptVersionRow,
)

if TYPE_CHECKING:
    from llmops._platform import Platform
    from llmops.loop import TriggerRule

__all__ = [
    "DIMENSIONS",
    "SEED_ACTOR",
    "Criterion",
    "DimensionAssessment",
    "MaturityReport",
    "RouteBinding",
    "assess_maturity",
    "route_bindings",
]

#: Who the platform's own seeding acts as: its versions and label moves are not use.
SEED_ACTOR = "llmops"
DIMENSIONS = ("prompt_management", "rag_pipeline", "guardrails", "evaluation", "cost_management", "governance")
RETRIEVAL_METRICS = frozenset(
    {"recall_at_k", "precision_at_k", "mrr", "ndcg_at_k", "context_precision", "context_recall"}
)
GUARDRAIL_SIGNALS = frozenset(
    {"blocked_rate", "guardrail_trigger_rate", "pii_incidents", "grounding_score", "hallucination_rate"}
)
COST_SIGNALS = frozenset({"cost_usd", "cost_per_request_usd", "input_tokens", "output_tokens"})
REVIEW_MAX_AGE = timedelta(days=7)


@dataclass(frozen=True)
class Criterion:
    """One check of one level: what was found (``evidence``) and what to do when it does not hold."""

    level: int
    met: bool
    evidence: str
    next_step: str

    def line(self) -> str:
        return f"L{self.level} {'met' if self.met else 'not met'}: {self.evidence}"


@dataclass(frozen=True)
class DimensionAssessment:
    name: str
    level: int
    evidence: list[str]
    next_steps: list[str]
    criteria: list[Criterion] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def of(cls, name: str, criteria: Sequence[Criterion]) -> DimensionAssessment:
        level = 0
        for candidate in (1, 2):
            if all(c.met for c in criteria if c.level <= candidate):
                level = candidate
            else:
                break
        next_steps = [c.next_step for c in criteria if c.level == level + 1 and not c.met]
        return cls(name, level, [c.line() for c in criteria], next_steps, list(criteria))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "evidence": self.evidence, "next_steps": self.next_steps}


@dataclass(frozen=True)
class MaturityReport:
    dimensions: list[DimensionAssessment]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)

    def level(self, name: str) -> int:
        return self.dimension(name).level

    def dimension(self, name: str) -> DimensionAssessment:
        for dimension in self.dimensions:
            if dimension.name == name:
                return dimension
        raise LookupError(f"no dimension {name!r}; dimensions: {', '.join(DIMENSIONS)}")

    def to_dict(self) -> dict[str, Any]:
        """``{"dimensions": [{"name", "level", "evidence", "next_steps"}, ...]}``, the six dimensions in order."""
        return {"dimensions": [d.to_dict() for d in self.dimensions]}

    def to_markdown(self) -> str:
        lines = [
            "# LLMOps maturity",
            "",
            f"Computed from the platform's records at {self.generated_at.isoformat(timespec='seconds')}.",
            "",
            "| dimension | level |",
            "|---|---|",
            *(f"| {d.name} | {d.level} |" for d in self.dimensions),
        ]
        for d in self.dimensions:
            lines += ["", f"## {d.name}: level {d.level}", "", "Evidence:", ""]
            lines += [f"- {e}" for e in d.evidence]
            lines += ["", "Next steps:" if d.next_steps else "Next steps: none, the top level is reached.", ""]
            lines += [f"- {s}" for s in d.next_steps]
        return "\n".join(lines).rstrip() + "\n"


def assess_maturity(platform: Platform) -> MaturityReport:
    """Assess the six dimensions from ``platform``'s store and settings (read only)."""
    platform.journal.flush()  # calls, metrics and scores go through the journal: count what was acknowledged
    rules = platform.triggers.rules()
    return MaturityReport(
        [
            DimensionAssessment.of("prompt_management", _prompt_management(platform)),
            DimensionAssessment.of("rag_pipeline", _rag_pipeline(platform)),
            DimensionAssessment.of("guardrails", _guardrails(platform, rules)),
            DimensionAssessment.of("evaluation", _evaluation(platform)),
            DimensionAssessment.of("cost_management", _cost_management(platform, rules)),
            DimensionAssessment.of("governance", _governance(platform, rules)),
        ]
    )


# ---- prompt management ----------------------------------------------------------------------------------------


def _prompt_management(p: Platform) -> list[Criterion]:
    with p.store.session() as s:
        versions = s.execute(select(PromptVersionRow.prompt_name, PromptVersionRow.author)).all()
        moves = s.execute(
            select(LabelHistoryRow.kind, LabelHistoryRow.label, LabelHistoryRow.actor).where(
                LabelHistoryRow.kind.in_(("move", "rollback"))
            )
        ).all()
        policies = _count(s, PromptPolicyRow)
        requests = Counter(s.scalars(select(ChangeRequestRow.status)).all())
        experiments = Counter(s.scalars(select(ExperimentRow.status)).all())
    by_people = [(name, author) for name, author in versions if author != SEED_ACTOR]
    people_moves = [(kind, label, actor) for kind, label, actor in moves if actor != SEED_ACTOR]
    rollbacks = sum(1 for kind, _, _ in people_moves if kind == "rollback")
    per_label = Counter(label for _, label, _ in people_moves)
    busiest = ", ".join(
        f"{label} moved {_n(count, 'time')} by {_n(len({a for _, lb, a in people_moves if lb == label}), 'person')}"
        for label, count in per_label.most_common(3)
    )
    return [
        Criterion(
            1,
            bool(by_people),
            f"{_n(len(versions), 'prompt version')} across {_n(len({n for n, _ in versions}), 'prompt')}; "
            f"{len(by_people)} written by people"
            + (
                f" ({_names(a for _, a in by_people)}) across {_n(len({n for n, _ in by_people}), 'prompt')}"
                if by_people
                else ", the rest seeded by llmops"
            ),
            "Author prompts in the registry: `LLMOPS_USER=you llmops prompts push prompts/` (each changed YAML file "
            "becomes a new version).",
        ),
        Criterion(
            1,
            bool(people_moves),
            f"{_n(len(people_moves), 'label move')} by people"
            + (f" ({_names(a for _, _, a in people_moves)}): {busiest}" if people_moves else "; only the seed's")
            + f"; {_n(len(moves) - len(people_moves), 'move')} by the seed",
            "Release through labels: `llmops prompts label NAME production VERSION --env staging`.",
        ),
        Criterion(
            2,
            policies > 0 and requests["applied"] > 0,
            f"{_n(policies, 'prompt policy', 'prompt policies')} protecting labels; change requests: "
            f"{_counts(requests) or 'none'}",
            "Protect production and release through approvals: `llmops prompts policy prod production --approvals 1 "
            "--check eval-gate`, then `llmops prompts request NAME production VERSION --env prod` and "
            "`LLMOPS_USER=approver llmops prompts approve REQUEST_ID`.",
        ),
        Criterion(
            2,
            rollbacks > 0 or sum(experiments.values()) > 0,
            f"{_n(rollbacks, 'rollback')} by people; {_n(sum(experiments.values()), 'A/B or canary experiment')}"
            + (f" ({_counts(experiments)})" if experiments else ""),
            "Exercise controlled release: `llmops prompts experiment start NAME --variant 1=0.9 --variant 2=0.1` "
            "(a canary), or `llmops prompts rollback NAME --env staging` to rehearse a rollback.",
        ),
    ]


# ---- RAG pipeline ---------------------------------------------------------------------------------------------


def _rag_pipeline(p: Platform) -> list[Criterion]:
    with p.store.session() as s:
        sources = _count(s, SourceRow)
        documents = _count(s, DocumentRow)
        snapshots = s.execute(
            select(IndexSnapshotRow.id, IndexSnapshotRow.kind, IndexSnapshotRow.documents, IndexSnapshotRow.chunks)
            .where(IndexSnapshotRow.status == "ready")
            .order_by(IndexSnapshotRow.id)
        ).all()
        changes = Counter(s.scalars(select(SnapshotChangeRow.change)).all())
        experiments = s.execute(
            select(EvalExperimentRow.metrics).where(EvalExperimentRow.status == "finished")
        ).scalars()
        retrieval = Counter(kind for metrics in experiments for kind in _metric_kinds(metrics) & RETRIEVAL_METRICS)
    ingests = [row for row in snapshots if row.kind == "ingest"]
    rollbacks = len(snapshots) - len(ingests)
    newest = snapshots[-1] if snapshots else None
    tuned = [f"{app.name}: {', '.join(t)}" for app in p.settings.rag_apps if (t := _retrieval_tuning(app))]
    return [
        Criterion(
            1,
            sources > 0 and newest is not None and newest.documents > 0,
            f"{_n(sources, 'source')} registered, {_n(documents, 'document')} stored, "
            f"{_n(len(snapshots), 'ready snapshot')}"
            + (
                f"; the newest (#{newest.id}) holds {newest.documents} documents in {newest.chunks} chunks"
                if newest
                else ""
            ),
            "Register and ingest your documents: `llmops ingest path/to/docs`.",
        ),
        Criterion(
            2,
            len(ingests) >= 2,
            f"{_n(len(ingests), 'ingestion snapshot')}; documents added {changes['added']}, changed "
            f"{changes['changed']}, removed {changes['removed']} across them",
            "Re-ingest when documents change (only the changes are processed): `llmops ingest`, or a trigger rule "
            "`when: {source_changed: path/to/docs}` with the `reindex` action (`llmops triggers add triggers.yaml`).",
        ),
        Criterion(
            2,
            bool(retrieval),
            "retrieval scored in stored experiments: "
            + (", ".join(f"{k} in {_n(v, 'experiment')}" for k, v in sorted(retrieval.items())) or "none")
            + " (`llmops eval retrieval` reports are not stored)",
            "Score retrieval in a stored experiment: `llmops eval run CONFIG.yaml` with metrics such as "
            "`recall_at_k`, `mrr` or `context_recall` on examples that name their `sources`.",
        ),
        Criterion(
            2,
            bool(tuned) or rollbacks > 0,
            "retrieval configured beyond the defaults: "
            + ("; ".join(tuned) if tuned else "no app (dense, no reranker, no MMR, no filter, newest snapshot)")
            + f"; {_n(rollbacks, 'snapshot rollback')}",
            "Tune retrieval on the evaluation's evidence: set `retrieval: hybrid`, a `reranker` or `mmr_lambda` on "
            "the app in llmops.yaml (rag_apps), or pin `index_snapshot`; `llmops index rollback N` restores a "
            "snapshot.",
        ),
    ]


def _retrieval_tuning(app: Any) -> list[str]:
    found = []
    if app.retrieval != "dense":
        found.append(f"{app.retrieval} retrieval")
    if app.reranker:
        found.append(f"reranker {app.reranker}")
    if app.mmr_lambda is not None:
        found.append(f"MMR {app.mmr_lambda:g}")
    if app.filter:
        found.append("a metadata filter")
    if app.index_snapshot is not None:
        found.append(f"pinned snapshot #{app.index_snapshot}")
    return found


# ---- guardrails -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteBinding:
    """The guardrail policy a served route runs under, as the platform resolves it now."""

    route: str
    policy: str | None  # None: the route runs unguarded
    version: int | None = None
    author: str | None = None
    rails: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # stage -> rails with their settings
    problem: str | None = None  # the binding names a policy or label that does not exist

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "policy": self.policy,
            "version": self.version,
            "author": self.author,
            "rails": self.rails,
            "problem": self.problem,
        }


def route_bindings(p: Platform) -> list[RouteBinding]:
    """Every served route (RAG apps, then gateway models) with the policy version guarding it."""
    settings = p.settings.guardrails
    overrides = {app.name: app.guardrail_policy for app in p.settings.rag_apps}
    bindings = []
    for route in p.served_models():
        name = overrides.get(route) or settings.policy_for(route)
        if name is None or name == "none":
            bindings.append(RouteBinding(route, None))
            continue
        try:
            if "@" in name:
                base, _, number = name.partition("@")
                found = p.guardrail_policies.get_version(base, int(number))
            else:
                found = p.guardrail_policies.get(name, label=settings.label, environment=p.settings.environment)
        except (LookupError, ValueError) as exc:
            bindings.append(RouteBinding(route, name, problem=str(exc)))
            continue
        rails = {
            stage: [spec.model_dump(mode="json", exclude_defaults=True) for spec in specs]
            for stage, specs in (("input", found.policy.input), ("output", found.policy.output))
        }
        bindings.append(RouteBinding(route, found.name, found.version, found.author, rails))
    return bindings


def _guardrails(p: Platform, rules: list[TriggerRule]) -> list[Criterion]:
    bindings = route_bindings(p)
    unguarded = [b.route for b in bindings if b.policy is None or b.problem]
    own = [b for b in bindings if b.author is not None and b.author != SEED_ACTOR]
    in_force = {(b.policy, b.version): b for b in bindings if b.version is not None}
    unchecked = sorted(
        f"{name} v{version}"
        for (name, version), b in in_force.items()
        if not any(r.get("rail") in ("grounding", "citations") for r in b.rails.get("output", []))
    )
    with p.store.session() as s:
        versions = s.execute(select(PolicyVersionRow.name, PolicyVersionRow.author)).all()
        history = s.execute(select(PolicyHistoryRow.kind, PolicyHistoryRow.actor)).all()
        requests = s.execute(
            select(func.count(), func.coalesce(func.sum(RequestMetricRow.guardrail_triggers), 0))
            .select_from(RequestMetricRow)
            .where(RequestMetricRow.kind.in_(("rag", "chat")))
        ).one()
        blocked = _count(s, RequestMetricRow, RequestMetricRow.blocked.is_(True))
    people_versions = Counter(name for name, author in versions if author != SEED_ACTOR)
    people_changes = Counter(kind for kind, actor in history if actor != SEED_ACTOR)
    iterated = [name for name, n in people_versions.items() if n >= 2]
    watching = [r.name for r in rules if _watches(r, GUARDRAIL_SIGNALS, events={"guardrail_block"}, act="tighten")]
    return [
        Criterion(
            1,
            bool(bindings) and not unguarded,
            f"{_n(len(bindings), 'served route')}: " + ", ".join(f"{b.route} → {_binding(b)}" for b in bindings),
            f"Bind every route to a policy in llmops.yaml (guardrails.policies); unguarded now: "
            f"{', '.join(unguarded) or 'none'}.",
        ),
        Criterion(
            1,
            bool(own),
            "policies written by people in force: "
            + (
                ", ".join(f"{b.policy} v{b.version} by {b.author} on {b.route}" for b in own)
                or "none (only the seeded default)"
            ),
            "Write a policy for your application and bind it: `llmops guardrails push policies/support.yaml "
            '--label production --env ENV`, then `guardrails: {policies: {"APP": support}}` in llmops.yaml.',
        ),
        Criterion(
            1,
            int(requests[0]) > 0,
            f"{_n(int(requests[0]), 'RAG or chat request')} recorded on the routes above; rails acted "
            f"{int(requests[1])} times, {_n(blocked, 'request')} blocked",
            "Serve traffic through the guarded routes (`llmops up`, then /api/ask or /v1/chat/completions): every "
            "decision is recorded on the trace and counted.",
        ),
        Criterion(
            2,
            bool(iterated) or people_changes["rollback"] > 0,
            f"policy versions by people: {_counts(people_versions) or 'none'}; label moves by people "
            f"{people_changes['move']}, rollbacks {people_changes['rollback']}",
            "Iterate policies under labels: push a revised version (`llmops guardrails push policies/ -m why`), "
            "move the label (`llmops guardrails label NAME VERSION --env ENV`), roll back when it blocks too much "
            "(`llmops guardrails rollback NAME --env ENV`).",
        ),
        Criterion(
            2,
            bool(in_force) and not unchecked,
            f"{_n(len(in_force), 'policy version')} in force; without a grounding or citations output rail: "
            f"{', '.join(unchecked) or 'none'}",
            "Check answers against their sources: add `{rail: grounding, threshold: 0.5}` (or `citations`) under "
            "`output` in every policy in force and push it.",
        ),
        Criterion(
            2,
            bool(watching),
            f"trigger rules watching guardrail signals or tightening rails: {', '.join(watching) or 'none'} "
            f"(of {_n(len(rules), 'rule')})",
            "Watch the rails: `llmops triggers add triggers.yaml` with a rule such as `when: {metric: blocked_rate, "
            "app: APP, window_s: 3600, min_count: 20, op: '>', threshold: 0.2}` and `tighten_guardrail` or "
            "`open_review` actions.",
        ),
    ]


def _binding(b: RouteBinding) -> str:
    if b.policy is None:
        return "unguarded"
    if b.problem:
        return f"{b.policy} (missing: {b.problem})"
    return f"{b.policy} v{b.version} by {b.author}"


# ---- evaluation -----------------------------------------------------------------------------------------------


def _evaluation(p: Platform) -> list[Criterion]:
    with p.store.session() as s:
        datasets = s.execute(select(DatasetVersionRow.dataset, DatasetVersionRow.origin)).all()
        experiments = Counter(s.scalars(select(EvalExperimentRow.status)).all())
        baselines = _count(s, EvalExperimentRow, EvalExperimentRow.name.endswith(":baseline"))
        checks = s.execute(
            select(PromptCheckRow.prompt_name, PromptCheckRow.version, PromptCheckRow.name, PromptCheckRow.passed)
        ).all()
        check_policies = _count(s, PromptPolicyRow, PromptPolicyRow.required_check.is_not(None))
        online = s.execute(select(OnlineScoreRow.metric, func.count()).group_by(OnlineScoreRow.metric)).all()
        drafts = s.execute(
            select(DatasetDraftRow.origin, DatasetDraftRow.status, func.count()).group_by(
                DatasetDraftRow.origin, DatasetDraftRow.status
            )
        ).all()
    sampled = {a.name: a.online_eval_rate for a in p.settings.rag_apps if a.online_eval_rate > 0}
    scores = sum(int(n) for _, n in online)
    reviewed = sum(int(n) for _, status, n in drafts if status != "pending")
    origins: Counter[str] = Counter()
    for origin, _, n in drafts:
        origins[origin.split(":")[0]] += int(n)  # "synthetic:<model>" and the like, by kind
    from_review = sum(1 for d in datasets if d.origin == "review")
    passed = sum(1 for c in checks if c.passed)
    return [
        Criterion(
            1,
            bool(datasets),
            f"{_n(len(datasets), 'dataset version')} across {_n(len({d.dataset for d in datasets}), 'dataset')}",
            "Version a golden dataset: `llmops eval dataset push NAME golden.jsonl -m 'first cut'`.",
        ),
        Criterion(
            1,
            experiments["finished"] > 0,
            f"{_n(sum(experiments.values()), 'experiment')} ({_counts(experiments) or 'none'}); "
            f"{_n(baselines, 'baseline run')} compared against",
            "Run an experiment that pins prompt, model, snapshot and policy: `llmops eval run CONFIG.yaml`.",
        ),
        Criterion(
            2,
            bool(checks),
            f"{_n(len(checks), 'gate result')} recorded on prompt versions ({passed} passed)"
            + (
                f": {', '.join(sorted({f'{c.name} on {c.prompt_name} v{c.version}' for c in checks})[:5])}"
                if checks
                else ""
            )
            + f"; {_n(check_policies, 'prompt policy', 'prompt policies')} requiring a passed check",
            "Gate releases on evaluation: `llmops eval run CONFIG.yaml --gate` in CI, record the outcome with "
            "`llmops prompts check NAME VERSION eval-gate --passed` (or --failed), and require it with "
            "`llmops prompts policy prod production --approvals 1 --check eval-gate`.",
        ),
        Criterion(
            2,
            bool(sampled) and scores > 0,
            "online evaluation: "
            + (", ".join(f"{app} samples {rate:.0%}" for app, rate in sampled.items()) or "no app samples answers")
            + f"; {_n(scores, 'online score')} stored"
            + (f" ({', '.join(f'{m} {n}' for m, n in online)})" if online else ""),
            "Score production answers: set `online_eval_rate: 0.05` on the app in llmops.yaml (rag_apps).",
        ),
        Criterion(
            2,
            reviewed > 0,
            f"{_n(sum(origins.values()), 'candidate example')} from production or generation "
            f"({_counts(origins) or 'none'}); {reviewed} reviewed; "
            f"{_n(from_review, 'dataset version')} made from reviews",
            "Grow datasets from production: `llmops eval dataset from-traces NAME --negative-feedback` (or "
            "`--max-grounding 0.5`), then `llmops eval dataset review NAME --accept 1,2`.",
        ),
    ]


# ---- cost management ------------------------------------------------------------------------------------------


def _cost_management(p: Platform, rules: list[TriggerRule]) -> list[Criterion]:
    with p.store.session() as s:
        calls = s.execute(
            select(
                func.count(),
                func.coalesce(func.sum(GatewayCallRow.cost_usd), 0.0),
                func.coalesce(func.sum(GatewayCallRow.input_tokens), 0),
                func.coalesce(func.sum(GatewayCallRow.output_tokens), 0),
            ).select_from(GatewayCallRow)
        ).one()
        books = list(s.scalars(select(GatewayCallRow.price_book).distinct()).all())
        columns = {
            "user": GatewayCallRow.user,
            "team": GatewayCallRow.team,
            "app": GatewayCallRow.app,
            "key": GatewayCallRow.key_name,
        }
        attributed_calls = _count(s, GatewayCallRow, or_(*(c.is_not(None) for c in columns.values())))
        attributed = {  # per attribution: how many distinct values, and the first few
            kind: (
                int(s.scalar(select(func.count(func.distinct(column)))) or 0),
                [
                    str(v)
                    for v in s.scalars(select(column).where(column.is_not(None)).distinct().order_by(column).limit(5))
                ],
            )
            for kind, column in columns.items()
        }
        repricings = _count(s, CallRepricingRow)
        spikes = _count(s, TriggerFiringRow, TriggerFiringRow.rule == "runbook:cost-spike")
    total = int(calls[0])
    chat = [m.name for m in p.settings.models if m.kind == "chat"]
    sources = {alias: p.gateway.prices.price(alias).source for alias in chat}
    unpriced = sorted(alias for alias, source in sources.items() if source == "unpriced")
    limits = p.gateway.limits.limits
    budgets = [f"{lim.name} (${lim.budget_usd:g}/{lim.period} per {lim.scope})" for lim in limits if lim.budget_usd]
    soft = sum(1 for lim in limits if lim.soft_budget_usd)
    rates = sum(1 for lim in limits if lim.requests_per_minute or lim.tokens_per_minute)
    watching = [r.name for r in rules if _watches(r, COST_SIGNALS, events=set(), act="throttle")]
    return [
        Criterion(
            1,
            total > 0,
            f"{_n(total, 'call')} in the ledger: {int(calls[2])} input and {int(calls[3])} output tokens, "
            f"${float(calls[1]):.4f} under price book {', '.join(books) or '(none used yet)'}",
            "Send traffic through the gateway (`llmops up`; /v1/chat/completions or /api/ask): every call is "
            "recorded with its tokens, cost and price book.",
        ),
        Criterion(
            1,
            bool(chat) and not unpriced,
            "prices: " + ", ".join(f"{alias} {source}" for alias, source in sources.items()),
            f"Price every chat model: set input_price_per_mtok / output_price_per_mtok on {', '.join(unpriced)} "
            "in llmops.yaml (models).",
        ),
        Criterion(
            1,
            attributed_calls > 0,
            f"{attributed_calls} of {_n(total, 'call')} attributed"
            + (
                ": "
                + "; ".join(
                    f"{_n(n, k)} ({', '.join(shown)}{' and more' if n > len(shown) else ''})"
                    for k, (n, shown) in attributed.items()
                    if n
                )
                if attributed_calls
                else " to a user, team, app or key"
            ),
            "Attribute spend: issue API keys with user, team and app (gateway.api_keys in llmops.yaml, "
            "gateway.require_api_key: true) or send `user` in requests; then `llmops gateway costs --by team`.",
        ),
        Criterion(
            2,
            bool(budgets),
            f"hard budgets: {', '.join(budgets) or 'none'}; {_n(soft, 'soft budget')}, {_n(rates, 'rate limit')}",
            "Cap spend: add a limit with `budget_usd` (and `soft_budget_usd` to be alerted first) under "
            "gateway.limits in llmops.yaml, per team, app, user or key.",
        ),
        Criterion(
            2,
            bool(watching) or spikes > 0,
            f"trigger rules watching spend or throttling: {', '.join(watching) or 'none'}; cost-spike runbook run "
            f"{_n(spikes, 'time')}; {_n(repricings, 'call')} re-priced",
            "Watch spend: `llmops triggers add triggers.yaml` with a rule `when: {metric: cost_usd, window_s: 3600, "
            "op: '>', threshold: 20}` and the `throttle` and `alert` actions; `llmops runbooks run cost-spike -p "
            "value=APP` rehearses the response.",
        ),
    ]


# ---- governance -----------------------------------------------------------------------------------------------


def _governance(p: Platform, rules: list[TriggerRule]) -> list[Criterion]:
    with p.store.session() as s:
        grants = s.execute(select(RoleGrantRow.user, RoleGrantRow.role)).all()
        actors = Counter(dict(s.execute(select(AuditEntryRow.actor, func.count()).group_by(AuditEntryRow.actor)).all()))
        policies = _count(s, PromptPolicyRow)
        approved = _count(s, ChangeRequestRow, ChangeRequestRow.status == "applied")
        reviews = s.execute(select(ReviewItemRow.status, ReviewItemRow.created_at)).all()
    verification = p.audit.verify()
    people = {actor: n for actor, n in actors.items() if actor != SEED_ACTOR}
    now = datetime.now(UTC)
    stale = [r for r in reviews if r.status == "open" and now - _utc(r.created_at) > REVIEW_MAX_AGE]
    closed = sum(1 for r in reviews if r.status != "open")
    changing = [r for r in rules if r.enabled and any(_changes_production(p, action) for action, _ in r.steps())]
    unapproved = [r.name for r in changing if not r.approval]
    held = [r.name for r in rules if r.approval]
    retention = _unbounded_retention(p)
    roles = Counter(role for _, role in grants)
    return [
        Criterion(
            1,
            bool(grants),
            f"{_n(len(grants), 'role grant')}"
            + (f": {_counts(roles)} ({_names(u for u, _ in grants)})" if grants else ""),
            "Grant roles: `llmops roles grant olga approver` (and admin, editor, viewer as needed).",
        ),
        Criterion(
            1,
            bool(people),
            f"{_n(sum(actors.values()), 'audit entry', 'audit entries')}: {sum(people.values())} by people"
            + (f" ({_names(people)})" if people else "")
            + f", {actors.get(SEED_ACTOR, 0)} by the seed",
            "Make changes as named people (`LLMOPS_USER=ana llmops prompts label ...`, the X-LLMOps-User header over "
            "HTTP): label moves, rule changes and approvals are appended to the audit log.",
        ),
        Criterion(
            2,
            verification.ok and verification.entries > 0,
            f"audit chain of {_n(verification.entries, 'entry', 'entries')} "
            + ("verifies intact" if verification.ok else f"is broken: {verification.problem}"),
            "Investigate the broken audit chain (`llmops audit verify` names the first bad entry) and restore the "
            "log from a backup.",
        ),
        Criterion(
            2,
            policies > 0 and approved > 0,
            f"{_n(policies, 'protected label policy', 'protected label policies')}; "
            f"{_n(approved, 'change request')} applied after approval",
            "Require four eyes on production: `llmops prompts policy prod production --approvals 1`, then release "
            "through `llmops prompts request` and `llmops prompts approve`.",
        ),
        Criterion(
            2,
            bool(held) and not unapproved,
            f"trigger rules held for approval: {', '.join(held) or 'none'}; rules that change production without "
            f"approval: {', '.join(unapproved) or 'none'}",
            "Hold automated production changes for a person: `approval: true` on every rule whose actions roll back, "
            "re-route, fail over, tighten or throttle (`llmops triggers add triggers.yaml`); approve with "
            "`llmops triggers approve FIRING`.",
        ),
        Criterion(
            2,
            closed > 0 and not stale,
            f"review items: {closed} closed, {len(reviews) - closed} open, {len(stale)} open for over "
            f"{REVIEW_MAX_AGE.days} days",
            "Work the review queue: `llmops reviews list`, then `llmops reviews resolve ITEM --resolution '...'` "
            "(rules open items with the `open_review` action).",
        ),
        Criterion(
            2,
            not retention,
            "trace retention: " + _retention_summary(p) + (f"; unbounded: {', '.join(retention)}" if retention else ""),
            "Bound trace retention: set observability.retention (max_age_days, max_traces) and any "
            "retention_by_app override in llmops.yaml.",
        ),
    ]


def _unbounded_retention(p: Platform) -> list[str]:
    observability = p.settings.observability
    scopes = {"default": observability.retention, **observability.retention_by_app}
    return [name for name, r in scopes.items() if r.max_age_days is None and r.max_traces is None]


def _retention_summary(p: Platform) -> str:
    observability = p.settings.observability

    def one(r: Any) -> str:
        age = f"{r.max_age_days:g} days" if r.max_age_days is not None else "no age limit"
        count = f"newest {r.max_traces:,}" if r.max_traces is not None else "no count limit"
        return f"{age}, {count}"

    parts = [f"default {one(observability.retention)}"]
    parts += [f"{app} {one(r)}" for app, r in observability.retention_by_app.items()]
    return "; ".join(parts)


# ---- helpers --------------------------------------------------------------------------------------------------


def _watches(rule: TriggerRule, metrics: frozenset[str], *, events: set[str], act: str) -> bool:
    """Whether an enabled ``rule`` watches one of ``metrics`` or ``events``, or acts with an action named ``act``*."""
    if not rule.enabled:
        return False
    metric = getattr(rule.when, "metric", None)
    event = getattr(rule.when, "event", None)
    return metric in metrics or event in events or any(name.startswith(act) for name, _ in rule.steps())


def _changes_production(p: Platform, action: str) -> bool:
    known = p.actions.get(action)
    return bool(getattr(known, "changes_production", True))  # an unknown action is assumed to change production


def _metric_kinds(metrics: dict[str, Any]) -> set[str]:
    """The metric kinds of an experiment (``metrics`` maps the scores' names to their spec)."""
    kinds = set()
    for name, spec in (metrics or {}).items():
        params = spec.get("params") if isinstance(spec, dict) else None
        kinds.add(str(params.get("metric", name)) if isinstance(params, dict) else name)
    return kinds


def _count(session: Any, table: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _n(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _names(values: Iterable[str], limit: int = 5) -> str:
    unique = sorted(set(values))
    shown = ", ".join(unique[:limit])
    return shown + (f" and {len(unique) - limit} more" if len(unique) > limit else "")


def _counts(counter: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counter.items()))


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC), PostgreSQL aware ones."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
