"""Protected labels: policies, change requests, four-eyes approvals, required checks."""

from __future__ import annotations

import pytest

from llmops import Platform
from llmops.prompts import ApprovalRequiredError, PromptTemplateError, ReviewRefusedError

MESSAGES = [{"role": "user", "content": "Hello {{ name }}"}]


@pytest.fixture
def protected(platform: Platform) -> Platform:
    """Prompt `greet` v1 (by ana) in production in prod, v2 (by ana) waiting; two approvers, one editor."""
    platform.prompts.create("greet", MESSAGES, author="ana")
    platform.prompts.move_label("greet", "production", 1, environment="prod", by="ana")
    platform.prompts.create("greet", [{"role": "user", "content": "Hi {{ name }}!"}], author="ana")
    for user in ("olga", "piet"):
        platform.roles.grant(user, "approver", by="admin")
    platform.roles.grant("ed", "editor", by="admin")
    platform.prompts.approvals.set_policy("greet", "prod", "production", required_approvals=2, by="admin",
                                          name="prod-two-approvals")  # fmt: skip
    return platform


def test_an_unapproved_move_of_a_protected_label_is_refused_naming_the_policy(protected: Platform) -> None:
    with pytest.raises(ApprovalRequiredError, match="policy 'prod-two-approvals' protects prod/production"):
        protected.prompts.move_label("greet", "production", 2, environment="prod", by="ana")
    assert protected.prompts.resolve("greet", environment="prod").version == 1
    protected.prompts.move_label("greet", "production", 2, environment="dev", by="ana")  # dev is not protected


def test_two_approvals_apply_the_move_and_history_links_the_request(protected: Platform) -> None:
    approvals = protected.prompts.approvals
    request = approvals.request("greet", "production", 2, environment="prod", by="ed", reason="friendlier")
    assert (request.status, request.from_version, request.to_version) == ("pending", 1, 2)
    assert request.waiting_for == "2 more approval(s)"
    after_one = approvals.approve(request.id, by="olga", comment="looks good")
    assert after_one.status == "pending" and after_one.waiting_for == "1 more approval(s)"
    assert protected.prompts.resolve("greet", environment="prod").version == 1
    applied = approvals.approve(request.id, by="piet")
    assert applied.status == "applied" and applied.waiting_for is None
    assert [r["reviewer"] for r in applied.reviews] == ["olga", "piet"]
    assert protected.prompts.resolve("greet", environment="prod").version == 2
    last = protected.prompts.history("greet")[-1]
    assert (last.kind, last.from_version, last.to_version, last.change_request_id) == ("move", 1, 2, request.id)
    assert approvals.requests(status="pending") == []


def test_the_author_cannot_approve_their_own_change(protected: Platform) -> None:
    protected.roles.grant("ana", "approver", by="admin")
    request = protected.prompts.approvals.request("greet", "production", 2, environment="prod", by="ed")
    with pytest.raises(ReviewRefusedError, match="ana is the author of the version"):
        protected.prompts.approvals.approve(request.id, by="ana")


def test_the_requester_and_non_approvers_cannot_approve(protected: Platform) -> None:
    approvals = protected.prompts.approvals
    request = approvals.request("greet", "production", 2, environment="prod", by="olga")
    with pytest.raises(ReviewRefusedError, match="olga is the requester"):
        approvals.approve(request.id, by="olga")
    with pytest.raises(ReviewRefusedError, match="ed does not hold the 'approver' role"):
        approvals.approve(request.id, by="ed")
    approvals.approve(request.id, by="piet")
    with pytest.raises(ReviewRefusedError, match="piet has already reviewed"):
        approvals.approve(request.id, by="piet")


def test_a_rejection_closes_the_request(protected: Platform) -> None:
    approvals = protected.prompts.approvals
    request = approvals.request("greet", "production", 2, environment="prod", by="ed")
    rejected = approvals.reject(request.id, by="olga", comment="tone is off")
    assert rejected.status == "rejected" and rejected.reviews[0]["comment"] == "tone is off"
    with pytest.raises(PromptTemplateError, match="is rejected, not pending"):
        approvals.approve(request.id, by="piet")
    assert protected.prompts.resolve("greet", environment="prod").version == 1


def test_a_required_check_must_pass_before_the_move_applies(protected: Platform) -> None:
    approvals = protected.prompts.approvals
    approvals.set_policy("greet", "prod", "production", required_approvals=1, required_check="eval-gate", by="admin")
    request = approvals.request("greet", "production", 2, environment="prod", by="ed")
    waiting = approvals.approve(request.id, by="olga")
    assert waiting.status == "pending" and waiting.waiting_for == "a passed 'eval-gate' check on v2"
    approvals.record_check("greet", 2, "eval-gate", passed=False, by="ci", details={"faithfulness": 0.4})
    with pytest.raises(PromptTemplateError, match="still needs a passed 'eval-gate' check"):
        approvals.apply(request.id)
    approvals.record_check("greet", 2, "eval-gate", passed=True, by="ci", details={"faithfulness": 0.9})
    assert approvals.apply(request.id).status == "applied"
    assert protected.prompts.resolve("greet", environment="prod").version == 2


def test_a_wildcard_policy_protects_every_prompt(platform: Platform) -> None:
    platform.prompts.approvals.set_policy("*", "prod", "production", required_approvals=1, by="admin")
    platform.prompts.create("other", MESSAGES, author="ana")
    with pytest.raises(ApprovalRequiredError, match="on every prompt"):
        platform.prompts.move_label("other", "production", 1, environment="prod", by="ana")


def test_rollback_of_a_protected_label_is_allowed_and_recorded(protected: Platform) -> None:
    approvals = protected.prompts.approvals
    request = approvals.request("greet", "production", 2, environment="prod", by="ed")
    approvals.approve(request.id, by="olga")
    approvals.approve(request.id, by="piet")
    assert protected.prompts.rollback("greet", "production", environment="prod", by="ed", reason="incident") == 1
    assert protected.prompts.history("greet")[-1].kind == "rollback"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"required_approvals": 0}, "at least 1"),
        ({"required_approvals": 1, "environment": "moon"}, "unknown environment"),
    ],
)
def test_bad_policies_are_refused(platform: Platform, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"environment": "prod", **kwargs}
    environment = str(args.pop("environment"))
    with pytest.raises(PromptTemplateError, match=message):
        platform.prompts.approvals.set_policy("greet", environment, "production", by="admin", **args)  # type: ignore[arg-type]


def test_unknown_roles_are_refused(platform: Platform) -> None:
    with pytest.raises(ValueError, match="unknown role 'boss'"):
        platform.roles.grant("x", "boss", by="admin")
