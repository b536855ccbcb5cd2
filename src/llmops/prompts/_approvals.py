"""Change control for protected labels: policies, change requests, four-eyes approvals, and required checks.

A policy protects ``(prompt, environment, label)`` (``prompt="*"`` protects the label on every prompt). Moving a
protected label directly is refused with a message naming the policy; instead a change request is opened and
applied once ``required_approvals`` users holding the ``approver`` role have approved it. Neither the requester nor
the author of the target version may approve (four eyes). If the policy names a required check (say ``eval-gate``),
the target version must have passed that check when the request is applied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from llmops.prompts._model import check_name
from llmops.prompts._tables import ChangeRequestRow, PromptCheckRow, PromptPolicyRow, PromptReviewRow
from llmops.prompts._template import PromptTemplateError
from llmops.store import Store

if TYPE_CHECKING:
    from llmops.prompts._registry import PromptRegistry, RoleLookup

__all__ = ["ApprovalRequiredError", "Approvals", "ChangeRequest", "Policy", "ReviewRefusedError"]

APPROVER_ROLE = "approver"


class ApprovalRequiredError(PermissionError):
    """The label is protected: open a change request instead."""


class ReviewRefusedError(PermissionError):
    """This user may not approve or reject this request."""


@dataclass(frozen=True)
class Policy:
    id: int
    name: str
    prompt_name: str
    environment: str
    label: str
    required_approvals: int
    required_check: str | None

    def describe(self) -> str:
        check = f" and a passed {self.required_check!r} check" if self.required_check else ""
        return (
            f"policy {self.name!r} protects {self.environment}/{self.label} on "
            f"{'every prompt' if self.prompt_name == '*' else repr(self.prompt_name)}: "
            f"{self.required_approvals} approval(s) from approvers other than the author{check}"
        )


@dataclass(frozen=True)
class ChangeRequest:
    id: int
    prompt_name: str
    environment: str
    label: str
    from_version: int | None
    to_version: int
    policy_id: int
    requested_by: str
    reason: str
    status: str
    created_at: datetime
    decided_at: datetime | None
    reviews: list[dict[str, Any]]
    waiting_for: str | None  # what a pending request still needs, in words


def _policy(row: PromptPolicyRow) -> Policy:
    return Policy(
        row.id, row.name, row.prompt_name, row.environment, row.label, row.required_approvals, row.required_check
    )


class Approvals:
    def __init__(self, store: Store, registry: PromptRegistry, roles: RoleLookup) -> None:
        self._store = store
        self._registry = registry
        self._roles = roles

    # ---- policies ---------------------------------------------------------------------------------------------

    def set_policy(
        self,
        prompt_name: str,
        environment: str,
        label: str,
        *,
        required_approvals: int,
        by: str,
        required_check: str | None = None,
        name: str | None = None,
    ) -> Policy:
        """Protect a label (or change its protection). ``prompt_name="*"`` applies to every prompt."""
        if prompt_name != "*":
            check_name("prompt name", prompt_name)
        check_name("label", label)
        if environment not in self._registry.environments:
            raise PromptTemplateError(f"unknown environment {environment!r}")
        if required_approvals < 1:
            raise PromptTemplateError("required_approvals must be at least 1 (remove the policy to unprotect)")
        with self._store.session() as session:
            row = session.scalars(
                select(PromptPolicyRow).where(
                    PromptPolicyRow.prompt_name == prompt_name,
                    PromptPolicyRow.environment == environment,
                    PromptPolicyRow.label == label,
                )
            ).first()
            if row is None:
                row = PromptPolicyRow(prompt_name=prompt_name, environment=environment, label=label)
                session.add(row)
            row.name = name or f"protect-{environment}-{label}"
            row.required_approvals, row.required_check = required_approvals, required_check
            row.created_by, row.created_at = by, datetime.now(UTC)
            session.flush()
            policy = _policy(row)
        if self._registry._audit is not None:
            self._registry._audit(by, "prompt.policy.set", "prompt_policy", f"{prompt_name}:{environment}/{label}",
                                  after=asdict(policy))  # fmt: skip
        return policy

    def policies(self) -> list[Policy]:
        with self._store.session() as session:
            return [_policy(r) for r in session.scalars(select(PromptPolicyRow).order_by(PromptPolicyRow.id))]

    def policy_for(self, prompt_name: str, environment: str, label: str) -> Policy | None:
        """The policy protecting this label: one for the prompt itself wins over a ``*`` policy."""
        with self._store.session() as session:
            rows = session.scalars(
                select(PromptPolicyRow).where(
                    or_(PromptPolicyRow.prompt_name == prompt_name, PromptPolicyRow.prompt_name == "*"),
                    PromptPolicyRow.environment == environment,
                    PromptPolicyRow.label == label,
                )
            ).all()
        if not rows:
            return None
        return _policy(min(rows, key=lambda r: r.prompt_name == "*"))

    def refuse_if_protected(self, prompt_name: str, environment: str, label: str) -> None:
        policy = self.policy_for(prompt_name, environment, label)
        if policy is not None:
            raise ApprovalRequiredError(
                f"moving {prompt_name} {environment}/{label} needs approval: {policy.describe()}. "
                "Open a change request (llmops prompts request ...) instead."
            )

    # ---- checks -----------------------------------------------------------------------------------------------

    def record_check(
        self,
        prompt_name: str,
        version: int,
        check: str,
        *,
        passed: bool,
        by: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record the result of a check (an evaluation gate, for instance) on a version."""
        self._registry.get_version(prompt_name, version)
        with self._store.session() as session:
            session.add(
                PromptCheckRow(
                    prompt_name=prompt_name,
                    version=version,
                    name=check,
                    passed=passed,
                    details=details or {},
                    recorded_by=by,
                    at=datetime.now(UTC),
                )
            )

    def check_passed(self, prompt_name: str, version: int, check: str) -> bool:
        """Whether the latest result of ``check`` on this version is a pass."""
        with self._store.session() as session:
            latest = session.scalars(
                select(PromptCheckRow)
                .where(
                    PromptCheckRow.prompt_name == prompt_name,
                    PromptCheckRow.version == version,
                    PromptCheckRow.name == check,
                )
                .order_by(PromptCheckRow.id.desc())
                .limit(1)
            ).first()
            return bool(latest and latest.passed)

    # ---- change requests --------------------------------------------------------------------------------------

    def request(
        self,
        prompt_name: str,
        label: str,
        version: int,
        *,
        environment: str | None = None,
        by: str,
        reason: str = "",
    ) -> ChangeRequest:
        """Open a request to move a protected label. An unprotected label needs none: use ``move_label``."""
        env = self._registry._environment(environment)
        self._registry.get_version(prompt_name, version)
        policy = self.policy_for(prompt_name, env, label)
        if policy is None:
            raise PromptTemplateError(f"{prompt_name} {env}/{label} is not protected; move it directly")
        current = self._registry.labels(prompt_name, env).get(label)
        with self._store.session() as session:
            row = ChangeRequestRow(
                prompt_name=prompt_name,
                environment=env,
                label=label,
                from_version=current,
                to_version=version,
                policy_id=policy.id,
                requested_by=by,
                reason=reason,
                status="pending",
                created_at=datetime.now(UTC),
            )
            session.add(row)
            session.flush()
            request_id = row.id
        return self.get_request(request_id)

    def get_request(self, request_id: int) -> ChangeRequest:
        with self._store.session() as session:
            row = session.get(ChangeRequestRow, request_id)
            if row is None:
                raise LookupError(f"no change request {request_id}")
            reviews = session.scalars(
                select(PromptReviewRow)
                .where(PromptReviewRow.change_request_id == request_id)
                .order_by(PromptReviewRow.id)
            ).all()
            policy_row = session.get(PromptPolicyRow, row.policy_id)
            policy = _policy(policy_row) if policy_row else None
            waiting = None
            if row.status == "pending":
                waiting = self._waiting_for(policy, row, sum(1 for r in reviews if r.decision == "approve"))
            return ChangeRequest(
                row.id, row.prompt_name, row.environment, row.label, row.from_version, row.to_version,
                row.policy_id, row.requested_by, row.reason, row.status, row.created_at, row.decided_at,
                [{"reviewer": r.reviewer, "decision": r.decision, "comment": r.comment, "at": r.at} for r in reviews],
                waiting,
            )  # fmt: skip

    def _waiting_for(self, policy: Policy | None, row: ChangeRequestRow, approvals: int) -> str | None:
        needs = []
        required = policy.required_approvals if policy else 1
        if approvals < required:
            needs.append(f"{required - approvals} more approval(s)")
        if (
            policy
            and policy.required_check
            and not self.check_passed(row.prompt_name, row.to_version, policy.required_check)
        ):
            needs.append(f"a passed {policy.required_check!r} check on v{row.to_version}")
        return " and ".join(needs) or None

    def requests(self, *, status: str | None = "pending", prompt_name: str | None = None) -> list[ChangeRequest]:
        with self._store.session() as session:
            query = select(ChangeRequestRow.id).order_by(ChangeRequestRow.id)
            if status:
                query = query.where(ChangeRequestRow.status == status)
            if prompt_name:
                query = query.where(ChangeRequestRow.prompt_name == prompt_name)
            ids = session.scalars(query).all()
        return [self.get_request(i) for i in ids]

    def approve(self, request_id: int, *, by: str, comment: str = "") -> ChangeRequest:
        """Record an approval; when the policy's count is reached (and its check passed) the move is applied."""
        request = self._reviewable(request_id, by)
        with self._store.session() as session:
            session.add(
                PromptReviewRow(
                    change_request_id=request_id, reviewer=by, decision="approve", comment=comment, at=datetime.now(UTC)
                )
            )
        self._record(by, "prompt.change.approve", request, comment)
        return self._apply_if_ready(self.get_request(request.id))

    def reject(self, request_id: int, *, by: str, comment: str = "") -> ChangeRequest:
        request = self._reviewable(request_id, by)
        self._record(by, "prompt.change.reject", request, comment)
        now = datetime.now(UTC)
        with self._store.session() as session:
            session.add(
                PromptReviewRow(change_request_id=request_id, reviewer=by, decision="reject", comment=comment, at=now)
            )
            row = session.get(ChangeRequestRow, request_id)
            assert row is not None
            row.status, row.decided_at = "rejected", now
        return self.get_request(request_id)

    def cancel(self, request_id: int, *, by: str) -> ChangeRequest:
        request = self.get_request(request_id)
        if request.status != "pending":
            raise PromptTemplateError(f"change request {request_id} is {request.status}, not pending")
        if by != request.requested_by and APPROVER_ROLE not in self._roles(by):
            raise ReviewRefusedError(f"{by} did not open change request {request_id} and is not an approver")
        with self._store.session() as session:
            row = session.get(ChangeRequestRow, request_id)
            assert row is not None
            row.status, row.decided_at = "cancelled", datetime.now(UTC)
        return self.get_request(request_id)

    def _record(self, by: str, action: str, request: ChangeRequest, comment: str) -> None:
        """An approval or a rejection, in the audit log (the move it leads to is recorded by the registry)."""
        audit = self._registry._audit
        if audit is not None:
            audit(by, action, "prompt_change_request", str(request.id), details={
                "prompt": request.prompt_name, "label": request.label, "environment": request.environment,
                "to_version": request.to_version, "comment": comment})  # fmt: skip

    def _reviewable(self, request_id: int, reviewer: str) -> ChangeRequest:
        request = self.get_request(request_id)
        if request.status != "pending":
            raise PromptTemplateError(f"change request {request_id} is {request.status}, not pending")
        if APPROVER_ROLE not in self._roles(reviewer):
            raise ReviewRefusedError(f"{reviewer} does not hold the {APPROVER_ROLE!r} role")
        author = self._registry.get_version(request.prompt_name, request.to_version).author
        if reviewer in (author, request.requested_by):
            who = "author of the version" if reviewer == author else "requester"
            raise ReviewRefusedError(f"{reviewer} is the {who}: a change needs another person's approval")
        if any(r["reviewer"] == reviewer for r in request.reviews):
            raise ReviewRefusedError(f"{reviewer} has already reviewed change request {request_id}")
        return request

    def apply(self, request_id: int) -> ChangeRequest:
        """Apply a pending request whose approvals and check are all in (after a late check result, say)."""
        request = self.get_request(request_id)
        if request.status != "pending":
            raise PromptTemplateError(f"change request {request_id} is {request.status}, not pending")
        if request.waiting_for:
            raise PromptTemplateError(f"change request {request_id} still needs {request.waiting_for}")
        return self._apply_if_ready(request)

    def _apply_if_ready(self, request: ChangeRequest) -> ChangeRequest:
        if request.waiting_for:
            return request
        self._registry._apply_move(
            request.prompt_name,
            request.environment,
            request.label,
            request.to_version,
            by=request.requested_by,
            reason=request.reason or f"change request {request.id}",
            kind="move",
            change_request_id=request.id,
        )
        with self._store.session() as session:
            row = session.get(ChangeRequestRow, request.id)
            assert row is not None
            row.status, row.decided_at = "applied", datetime.now(UTC)
        return self.get_request(request.id)
