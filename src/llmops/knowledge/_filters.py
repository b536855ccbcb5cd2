"""Metadata filters: a small, validated query language that every index backend enforces inside its search.

A filter is a mapping from a metadata field to a condition, all conditions joined by AND::

    {"language": "en"}                                  # equality
    {"page": {"$gte": 2, "$lt": 10}}                    # ranges: $gt $gte $lt $lte
    {"source_type": {"$in": ["pdf", "docx"]}}           # sets
    {"team": {"$ne": "legal"}}                          # inequality

Values are strings, integers, floats or booleans. A chunk without the field never matches a condition on it (except
``$ne``, which it does). Backends translate the parsed form (`MetadataFilter`) into their own query; `matches` is the
reference semantics the contract tests hold every backend to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Condition", "FilterError", "MetadataFilter", "MetadataValue", "Operator"]

MetadataValue = str | int | float | bool
Operator = Literal["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in"]

_OPERATORS: frozenset[str] = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in"})
_RANGE_OPERATORS: frozenset[str] = frozenset({"$gt", "$gte", "$lt", "$lte"})
MAX_SET_SIZE = 10_000


class FilterError(ValueError):
    """The filter is malformed; the message names the field and what is wrong."""


@dataclass(frozen=True)
class Condition:
    field: str
    op: Operator
    value: MetadataValue | tuple[MetadataValue, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.field not in metadata or metadata[self.field] is None:
            return self.op == "$ne"
        actual = metadata[self.field]
        if self.op == "$eq":
            return bool(_comparable(actual, self.value) and actual == self.value)
        if self.op == "$ne":
            return not (_comparable(actual, self.value) and actual == self.value)
        if self.op == "$in":
            assert isinstance(self.value, tuple)
            return any(_comparable(actual, v) and actual == v for v in self.value)
        if not _comparable(actual, self.value) or isinstance(actual, bool):
            return False
        if self.op == "$gt":
            return bool(actual > self.value)
        if self.op == "$gte":
            return bool(actual >= self.value)
        if self.op == "$lt":
            return bool(actual < self.value)
        return bool(actual <= self.value)


@dataclass(frozen=True)
class MetadataFilter:
    """Conditions joined by AND. Build one with `MetadataFilter.parse`; an empty filter matches everything."""

    conditions: tuple[Condition, ...] = ()

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | MetadataFilter | None) -> MetadataFilter:
        if spec is None:
            return cls()
        if isinstance(spec, MetadataFilter):
            return spec
        if not isinstance(spec, Mapping):
            raise FilterError(f"a filter is a mapping of field to condition, got {type(spec).__name__}")
        conditions: list[Condition] = []
        for field, condition in spec.items():
            if not isinstance(field, str) or not field or len(field) > 128:
                raise FilterError(f"filter field names are non-empty strings of at most 128 characters: {field!r}")
            if isinstance(condition, Mapping):
                if not condition:
                    raise FilterError(f"filter on {field!r} has no operator")
                for op, value in condition.items():
                    conditions.append(_condition(field, op, value))
            else:
                conditions.append(_condition(field, "$eq", condition))
        return cls(tuple(conditions))

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return all(condition.matches(metadata) for condition in self.conditions)

    def fields(self) -> set[str]:
        return {condition.field for condition in self.conditions}

    def and_(self, other: MetadataFilter) -> MetadataFilter:
        return MetadataFilter(self.conditions + other.conditions)


def _condition(field: str, op: object, value: object) -> Condition:
    if op not in _OPERATORS:
        raise FilterError(f"unknown operator {op!r} on {field!r}; use one of {', '.join(sorted(_OPERATORS))}")
    if op == "$in":
        if not isinstance(value, list | tuple | set | frozenset):
            raise FilterError(f"$in on {field!r} needs a list of values, got {type(value).__name__}")
        if len(value) > MAX_SET_SIZE:
            raise FilterError(f"$in on {field!r} has {len(value)} values, over the limit of {MAX_SET_SIZE}")
        return Condition(field, "$in", tuple(_scalar(field, v) for v in value))
    scalar = _scalar(field, value)
    if op in _RANGE_OPERATORS and isinstance(scalar, bool):
        raise FilterError(f"{op} on {field!r} needs a number or a string, not a boolean")
    return Condition(field, op, scalar)  # type: ignore[arg-type]


def _scalar(field: str, value: object) -> MetadataValue:
    if isinstance(value, str | bool | int | float):
        if isinstance(value, float) and value != value:
            raise FilterError(f"filter on {field!r} compares with NaN")
        return value
    raise FilterError(f"filter values are strings, numbers or booleans; {field!r} got {type(value).__name__}")


def _comparable(actual: object, expected: object) -> bool:
    """Strings compare with strings, numbers with numbers, booleans with booleans; anything else never matches."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool)
    if isinstance(actual, str) or isinstance(expected, str):
        return isinstance(actual, str) and isinstance(expected, str)
    return isinstance(actual, int | float) and isinstance(expected, int | float)
