"""Guardrails: rails at the input and output boundaries (a pass-through until rails are configured)."""

from llmops.guardrails._pipeline import GuardrailDecision, GuardrailPipeline, Rail, RailResult

__all__ = ["GuardrailDecision", "GuardrailPipeline", "Rail", "RailResult"]
