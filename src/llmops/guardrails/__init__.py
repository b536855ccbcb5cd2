"""Guardrails: rails at the input and output boundaries, and the detectors they are built from."""

from llmops.guardrails._findings import ContextualDetector, Detector, Finding
from llmops.guardrails._grounding import ClaimVerdict, GroundingChecker, GroundingReport
from llmops.guardrails._injection import IndirectInjectionDetector, InjectionDetector
from llmops.guardrails._leakage import PiiLeakageDetector
from llmops.guardrails._ner import SpacyNerDetector
from llmops.guardrails._pii import PII_ENTITY_TYPES, PiiDetector
from llmops.guardrails._pipeline import GuardrailDecision, GuardrailPipeline, Rail, RailResult
from llmops.guardrails._policy import GuardrailPolicy, PolicyError, RailSpec, default_policy
from llmops.guardrails._redaction import Pseudonymizer, redact
from llmops.guardrails._registry import PolicyNotFoundError, PolicyRegistry, PolicyVersion
from llmops.guardrails._secrets import SecretDetector
from llmops.guardrails._toxicity import InsultDetector

__all__ = [
    "PII_ENTITY_TYPES",
    "ClaimVerdict",
    "ContextualDetector",
    "Detector",
    "Finding",
    "GroundingChecker",
    "GroundingReport",
    "GuardrailDecision",
    "GuardrailPipeline",
    "GuardrailPolicy",
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
    "Rail",
    "RailResult",
    "RailSpec",
    "SecretDetector",
    "SpacyNerDetector",
    "default_policy",
    "redact",
]
