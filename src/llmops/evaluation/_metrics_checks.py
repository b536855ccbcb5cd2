"""Task checks: deterministic pass/fail tests of an answer (contains, regex, JSON schema, entities, length), the
latency and cost of a sample, and the item-level ``assertions`` of a dataset, which run the same checks.

A check scores 1.0 when it passes and 0.0 when it fails; ``details["reason"]`` says why. Parameters are validated
when the check is built (a bad regular expression or JSON Schema is a configuration error, not 1,000 failed scores).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from llmops.evaluation._types import Example, Sample, Score, ScoringContext

__all__ = [
    "ASSERTION_TYPES",
    "AssertionsMetric",
    "CheckMetric",
    "CostMetric",
    "LatencyMetric",
    "TaskCheck",
    "build_check",
]

# A check looks at the answer (and the example, for checks that default to its fields) and says whether it passes
# and why. It raises `Unscorable` when the example lacks what it needs.
TaskCheck = Callable[[str, Example], tuple[bool, str]]

# Types of PII the pattern tier cannot find (they need an NER model, which evaluation does not load).
_NER_ONLY = frozenset({"PERSON", "ORGANIZATION"})
# LLM answers often wrap JSON in a Markdown fence; the json_schema output rail reads through it the same way.
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)


class Unscorable(Exception):
    """The example lacks a field the check needs; the message names it."""


def _strings(name: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or not all(isinstance(v, str) and v for v in items):
        raise ValueError(f"{name} must be a non-empty string or a list of them, got {value!r}")
    return list(items)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _contains(params: dict[str, Any], *, negate: bool) -> TaskCheck:
    if "value" in params and "values" in params:
        raise ValueError("give value or values, not both")
    raw = params.get("value", params.get("values"))
    if raw is None and negate:
        raise ValueError("needs value or values (the texts the answer must not contain)")
    configured = None if raw is None else _strings("value" if "value" in params else "values", raw)
    case_sensitive = _flag("case_sensitive", params.get("case_sensitive", False))

    def fold(text: str) -> str:
        return text if case_sensitive else text.lower()

    def check(output: str, example: Example) -> tuple[bool, str]:
        values = configured
        if values is None:
            if not example.expected:
                raise Unscorable("the check names no value and the example has no reference answer (example.expected)")
            values = [example.expected]
        text = fold(output)
        present = [v for v in values if fold(v) in text]
        if negate:
            return (not present, f"contains {present!r}" if present else "contains none of the values")
        missing = [v for v in values if v not in present]
        return (not missing, f"missing {missing!r}" if missing else "contains every value")

    return check


def _regex(params: dict[str, Any]) -> TaskCheck:
    pattern = params.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty regular expression, got {pattern!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None

    def check(output: str, example: Example) -> tuple[bool, str]:
        found = compiled.search(output) is not None
        return found, ("matches" if found else "does not match") + f" {pattern!r}"

    return check


def _json_schema(params: dict[str, Any]) -> TaskCheck:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    schema = params.get("schema", {})
    if not isinstance(schema, dict | bool):
        raise ValueError(f"schema must be a JSON Schema (an object), got {type(schema).__name__}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"schema is not a valid JSON Schema: {exc.message}") from None
    validator = Draft202012Validator(schema)

    def check(output: str, example: Example) -> tuple[bool, str]:
        fenced = _FENCE.match(output)
        try:
            value = json.loads(fenced.group(1) if fenced else output)
        except json.JSONDecodeError as exc:
            return False, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None)
        if error is None:
            return True, "matches the schema"
        return False, f"does not match the schema at {error.json_path}: {error.message}"

    return check


def _entities(params: dict[str, Any]) -> TaskCheck:
    from llmops.guardrails import PII_ENTITY_TYPES, PiiDetector

    wanted = _strings("entities", params.get("entities"))
    kinds = sorted({e for e in wanted if e in PII_ENTITY_TYPES})
    needs_model = [k for k in kinds if k in _NER_ONLY]
    if needs_model:
        raise ValueError(f"entities {needs_model} need an NER model; list the expected names themselves instead")
    texts = [e for e in wanted if e not in PII_ENTITY_TYPES]
    detector = PiiDetector(entity_types=kinds) if kinds else None

    def check(output: str, example: Example) -> tuple[bool, str]:
        found = {f.kind for f in detector.detect(output)} if detector else set()
        lowered = output.lower()
        missing = [k for k in kinds if k not in found] + [t for t in texts if t.lower() not in lowered]
        return (not missing, f"missing {missing!r}" if missing else "has every entity")

    return check


def _length(params: dict[str, Any]) -> TaskCheck:
    bounds: dict[str, int] = {}
    for key in ("min_chars", "max_chars", "min_words", "max_words"):
        value = params.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
        bounds[key] = value
    if not bounds:
        raise ValueError("needs at least one of min_chars, max_chars, min_words, max_words")
    for unit in ("chars", "words"):
        low, high = bounds.get(f"min_{unit}"), bounds.get(f"max_{unit}")
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_{unit} ({low}) is above max_{unit} ({high})")

    def check(output: str, example: Example) -> tuple[bool, str]:
        sizes = {"chars": len(output), "words": len(output.split())}
        for key, bound in bounds.items():
            size = sizes[key[4:]]
            if (size < bound) if key.startswith("min_") else (size > bound):
                return False, f"{size} {key[4:]}, {key} is {bound}"
        return True, f"{sizes['chars']} chars, {sizes['words']} words"

    return check


_BUILDERS: dict[str, tuple[frozenset[str], Callable[[dict[str, Any]], TaskCheck]]] = {
    "contains": (frozenset({"value", "values", "case_sensitive"}), lambda p: _contains(p, negate=False)),
    "not_contains": (frozenset({"value", "values", "case_sensitive"}), lambda p: _contains(p, negate=True)),
    "regex": (frozenset({"pattern"}), _regex),
    "json_schema": (frozenset({"schema"}), _json_schema),
    "entities": (frozenset({"entities"}), _entities),
    "length": (frozenset({"min_chars", "max_chars", "min_words", "max_words"}), _length),
}
ASSERTION_TYPES: tuple[str, ...] = tuple(_BUILDERS)


def check_params(kind: str) -> frozenset[str]:
    """The parameter names a check of ``kind`` takes."""
    return _BUILDERS[kind][0]


def build_check(kind: str, params: dict[str, Any]) -> TaskCheck:
    """The check of ``kind`` (one of `ASSERTION_TYPES`) with ``params`` validated.

    Raises:
        ValueError: The kind is unknown, a parameter is unknown, or a value is invalid; the message names it.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown check type {kind!r}; known: {', '.join(ASSERTION_TYPES)}")
    allowed, build = _BUILDERS[kind]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"{kind} takes no parameter {unknown[0]!r}; it takes: {', '.join(sorted(allowed))}")
    return build(params)


def _run(name: str, check: TaskCheck, sample: Sample) -> Score:
    if sample.error:
        return Score.failed(name, f"the system errored: {sample.error}")
    try:
        passed, reason = check(sample.output, sample.example)
    except Unscorable as exc:
        return Score.not_applicable(name, str(exc))
    return Score(name, 1.0 if passed else 0.0, details={"reason": reason})


class CheckMetric:
    """A task check as a metric: 1.0 when the answer passes, 0.0 when it fails, ``details["reason"]`` says why.

    The checks (``kind`` and its parameters):

    - ``contains``: every one of ``value``/``values`` occurs in the answer (``case_sensitive``, default false);
      without a value, the reference answer must occur in it (skipped when the example has none).
    - ``not_contains``: none of ``value``/``values`` occurs in the answer.
    - ``regex``: ``re.search(pattern, answer)`` finds a match (use ``(?i)`` for case-insensitive matching).
    - ``json_schema``: the answer (or the body of a Markdown code fence around it) parses as JSON and validates
      against ``schema`` (JSON Schema draft 2020-12; without a schema, any JSON passes).
    - ``entities``: each of ``entities`` is present: an entity type such as ``EMAIL_ADDRESS`` or ``PHONE_NUMBER``
      (`llmops.guardrails.PII_ENTITY_TYPES`, found by `PiiDetector`'s validated patterns; PERSON and ORGANIZATION
      need a model and are refused) must be found, any other string must occur (case ignored).
    - ``length``: ``min_chars`` <= characters <= ``max_chars`` and ``min_words`` <= words <= ``max_words`` (words
      split on whitespace; give any of the four).
    """

    higher_is_better = True

    def __init__(self, kind: str, params: dict[str, Any]) -> None:
        self.name = kind
        self._check = build_check(kind, params)

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        return [_run(self.name, self._check, sample) for sample in samples]


class AssertionsMetric:
    """The share of the example's item-level ``assertions`` that pass, in [0, 1].

    Each assertion is ``{"type": <check>, **parameters}`` with a type of `ASSERTION_TYPES`, run as `CheckMetric`
    runs it. ``details["failed"]`` lists the reasons of those that failed. Skipped when the example has no assertions;
    errors when one is invalid (the message names its position and the problem).
    """

    name = "assertions"
    higher_is_better = True

    def __init__(self) -> None:
        # Datasets repeat assertions across items; each distinct one is built (regex compiled, schema checked) once.
        self._built: dict[bytes, TaskCheck] = {}

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        return [self._score_one(sample) for sample in samples]

    def _score_one(self, sample: Sample) -> Score:
        if sample.error:
            return Score.failed(self.name, f"the system errored: {sample.error}")
        assertions = sample.example.assertions
        if not assertions:
            return Score.not_applicable(self.name, "the example has no assertions (example.assertions)")
        failures: list[str] = []
        for number, assertion in enumerate(assertions, 1):
            try:
                passed, reason = self._check(assertion)(sample.output, sample.example)
            except (ValueError, TypeError) as exc:
                return Score.failed(self.name, f"assertion {number} is invalid: {exc}")
            except Unscorable as exc:
                return Score.not_applicable(self.name, f"assertion {number}: {exc}")
            if not passed:
                failures.append(f"{assertion.get('type')}: {reason}")
        value = 1.0 - len(failures) / len(assertions)
        return Score(self.name, round(value, 6), details={"failed": failures})

    def _check(self, assertion: dict[str, Any]) -> TaskCheck:
        key = orjson.dumps(assertion, option=orjson.OPT_SORT_KEYS)
        check = self._built.get(key)
        if check is None:
            params = dict(assertion)
            kind = params.pop("type", None)
            if not isinstance(kind, str):
                raise ValueError(f"needs a type, one of: {', '.join(ASSERTION_TYPES)}")
            check = self._built[key] = build_check(kind, params)
        return check


class _Measurement:
    """A raw measurement of the sample, or pass/fail against a maximum."""

    name = ""
    unit = ""
    field = ""

    def __init__(self, maximum: float | None = None) -> None:
        if maximum is not None and (isinstance(maximum, bool) or not isinstance(maximum, int | float) or maximum < 0):
            raise ValueError(f"the maximum must be a non-negative number, got {maximum!r}")
        self.maximum = maximum
        # The raw measurement is better low; a pass/fail score, like every other check, is better high.
        self.higher_is_better = maximum is not None

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        out: list[Score] = []
        for sample in samples:
            measured: float | None = getattr(sample, self.field)
            if sample.error:
                out.append(Score.failed(self.name, f"the system errored: {sample.error}"))
            elif measured is None:
                out.append(Score.not_applicable(self.name, f"the sample has no {self.name} (sample.{self.field})"))
            elif self.maximum is None:
                out.append(Score(self.name, float(measured)))
            else:
                passed = measured <= self.maximum
                reason = f"{measured:g} {self.unit} {'<=' if passed else '>'} {self.maximum:g}"
                out.append(Score(self.name, 1.0 if passed else 0.0, details={"reason": reason, "measured": measured}))
        return out


class LatencyMetric(_Measurement):
    """Latency: ``sample.latency_ms`` as measured (lower is better), or, with ``max_ms``, 1.0 when it is at most
    ``max_ms`` and 0.0 otherwise. Skipped when the sample has no latency."""

    name = "latency"
    unit = "ms"
    field = "latency_ms"


class CostMetric(_Measurement):
    """Cost: ``sample.cost_usd`` as measured (lower is better), or, with ``max_usd``, 1.0 when it is at most
    ``max_usd`` and 0.0 otherwise. Skipped when the sample has no cost."""

    name = "cost"
    unit = "USD"
    field = "cost_usd"
