"""The closed loop: feedback, trigger rules over metrics, drift, events and sources, the actions they take,
incident runbooks, and review items for people."""

from llmops.loop._actions import ACTIONS, Action, ActionContext, ActionError, load_actions
from llmops.loop._client import FeedbackClient
from llmops.loop._events import RequestEventsProcessor
from llmops.loop._feedback import FEEDBACK_KINDS, Feedback, FeedbackError, FeedbackStore, UnknownRequestError
from llmops.loop._reviews import ReviewQueue
from llmops.loop._rules import RuleError, TriggerRule, load_rules
from llmops.loop._runbooks import BUILTIN_RUNBOOKS, Runbook, RunbookError, load_runbooks
from llmops.loop._triggers import Step, TriggerEngine

__all__ = [
    "ACTIONS",
    "BUILTIN_RUNBOOKS",
    "FEEDBACK_KINDS",
    "Action",
    "ActionContext",
    "ActionError",
    "Feedback",
    "FeedbackClient",
    "FeedbackError",
    "FeedbackStore",
    "RequestEventsProcessor",
    "ReviewQueue",
    "RuleError",
    "Runbook",
    "RunbookError",
    "Step",
    "TriggerEngine",
    "TriggerRule",
    "UnknownRequestError",
    "load_actions",
    "load_rules",
    "load_runbooks",
]
