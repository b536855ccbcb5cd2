"""Guardrails: rails at the input and output boundaries, and the detectors they are built from."""

from llmops.guardrails._engine import GuardrailEngine, GuardResult, RailDecision, StreamGuard, StreamStep, span_payload
from llmops.guardrails._findings import ContextualDetector, Detector, Finding
from llmops.guardrails._grounding import ClaimVerdict, GroundingChecker, GroundingReport
from llmops.guardrails._injection import IndirectInjectionDetector, InjectionDetector
from llmops.guardrails._leakage import PiiLeakageDetector
from llmops.guardrails._ner import SpacyNerDetector
from llmops.guardrails._pii import PII_ENTITY_TYPES, PiiDetector
from llmops.guardrails._policy import GuardrailPolicy, PolicyError, RailSpec, default_policy
from llmops.guardrails._rails import RailModels
from llmops.guardrails._redaction import Pseudonymizer, redact
from llmops.guardrails._registry import PolicyNotFoundError, PolicyRegistry, PolicyVersion
from llmops.guardrails._secrets import SecretDetector
from llmops.guardrails._service import Guardrails
from llmops.guardrails._toxicity import InsultDetector

__all__ = [
    "PII_ENTITY_TYPES",
    "ClaimVerdict",
    "ContextualDetector",
    "Detector",
    "Finding",
    "GroundingChecker",
    "GroundingReport",
    "GuardResult",
    "GuardrailEngine",
    "GuardrailPolicy",
    "Guardrails",
    "IndirectInjectionDetector",
    "InjectionDetector",
    "InsultDetector",
    "PiiDetector",
    "PiiLeakageDetector",
    "PolicyError",
    "PolicyNotFoundError",
    "PolicyRegistry",
    "PolicyVersion",
    "Pseudonymizer",
    "RailDecision",
    "RailModels",
    "RailSpec",
    "SecretDetector",
    "SpacyNerDetector",
    "StreamGuard",
    "StreamStep",
    "default_policy",
    "redact",
    "span_payload",
]
