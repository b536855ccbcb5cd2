"""Chunk metadata as columns (numpy arrays per field), so a metadata filter becomes a boolean mask in microseconds.

The in-process vector indexes (`ExactVectorIndex`, `HnswVectorIndex`) address their vectors by an integer row; the
metadata of row ``r`` lives at position ``r`` of a few arrays per field:

* ``kind`` (int8): 0 absent, 1 boolean, 2 number, 3 string;
* ``number`` (float64): the value of a number, or 0/1 for a boolean;
* ``code`` (int32): the position of a string in the field's dictionary, or -1.

Strings are dictionary-encoded: an equality is an integer comparison, a string range a lookup table over the (small)
dictionary. Comparisons follow `Condition.matches` exactly (strings with strings, numbers with numbers, booleans with
booleans; an absent field matches only ``$ne``), except that numbers compare as float64: integers beyond 2**53 lose
their last digits, as they would in JSON.

The knowledge base ANDs the same snapshot range to every query, so masks are cached per condition and per filter until
the next write: the snapshot filter costs a dictionary lookup.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from llmops.knowledge._filters import Condition, MetadataFilter, MetadataValue

__all__ = ["Mask", "MetadataColumns", "check_metadata"]

_ABSENT, _BOOL, _NUMBER, _STRING = 0, 1, 2, 3
_INT64 = (-(2**63), 2**63 - 1)
_CACHE_SIZE = 64

BoolArray = npt.NDArray[np.bool_]


def check_metadata(metadata: Mapping[str, object]) -> dict[str, MetadataValue]:
    """``metadata`` with its values checked: strings, 64-bit integers, finite floats and booleans (``None`` = absent).

    Every backend holds the same rule, so a chunk that one index accepts, every index accepts.
    """
    checked: dict[str, MetadataValue] = {}
    for field, value in metadata.items():
        if not isinstance(field, str) or not field:
            raise ValueError(f"metadata field names are non-empty strings: {field!r}")
        if value is None:
            continue
        if isinstance(value, bool | str):
            checked[field] = value
        elif isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                raise ValueError(f"metadata integers fit in 64 bits; {field!r} is {value}")
            checked[field] = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"metadata numbers are finite; {field!r} is {value}")
            checked[field] = value
        else:
            raise TypeError(f"metadata values are strings, numbers or booleans; {field!r} is {type(value).__name__}")
    return checked


@dataclass(frozen=True)
class Mask:
    """The rows a filter keeps: a boolean array over row positions, their count, and (lazily) their positions."""

    rows: BoolArray
    count: int

    def positions(self) -> npt.NDArray[np.intp]:
        cached: npt.NDArray[np.intp] | None = self.__dict__.get("_positions")
        if cached is None:
            cached = np.flatnonzero(self.rows)
            object.__setattr__(self, "_positions", cached)
        return cached


class _Column:
    __slots__ = ("code", "codes", "kind", "number", "strings")

    def __init__(self, capacity: int) -> None:
        self.kind = np.zeros(capacity, dtype=np.int8)
        self.number = np.zeros(capacity, dtype=np.float64)
        self.code = np.full(capacity, -1, dtype=np.int32)
        self.strings: list[str] = []
        self.codes: dict[str, int] = {}

    def grow(self, capacity: int) -> None:
        size = len(self.kind)
        self.kind = np.concatenate([self.kind, np.zeros(capacity - size, dtype=np.int8)])
        self.number = np.concatenate([self.number, np.zeros(capacity - size, dtype=np.float64)])
        self.code = np.concatenate([self.code, np.full(capacity - size, -1, dtype=np.int32)])

    def set(self, row: int, value: MetadataValue | None) -> None:
        if value is None:
            self.kind[row], self.number[row], self.code[row] = _ABSENT, 0.0, -1
        elif isinstance(value, bool):
            self.kind[row], self.number[row], self.code[row] = _BOOL, float(value), -1
        elif isinstance(value, str):
            code = self.codes.get(value)
            if code is None:
                code = self.codes[value] = len(self.strings)
                self.strings.append(value)
            self.kind[row], self.number[row], self.code[row] = _STRING, 0.0, code
        else:
            self.kind[row], self.number[row], self.code[row] = _NUMBER, float(value), -1

    def equal(self, value: MetadataValue) -> BoolArray:
        rows: BoolArray
        if isinstance(value, bool):
            rows = (self.kind == _BOOL) & (self.number == float(value))
        elif isinstance(value, str):
            code = self.codes.get(value)
            rows = np.zeros(len(self.kind), dtype=np.bool_) if code is None else self.code == code
        else:
            rows = (self.kind == _NUMBER) & (self.number == float(value))
        return rows

    def matching(self, condition: Condition) -> BoolArray:
        op, value = condition.op, condition.value
        if op == "$eq":
            assert not isinstance(value, tuple)
            return self.equal(value)
        if op == "$ne":
            assert not isinstance(value, tuple)
            return ~self.equal(value)
        if op == "$in":
            assert isinstance(value, tuple)
            return self._any_of(value)
        assert not isinstance(value, tuple | bool)
        if isinstance(value, str):
            table = np.array([_compare(op, s, value) for s in self.strings] + [False], dtype=np.bool_)
            rows: BoolArray = table[self.code]  # code -1 (not a string) reads the final False
        else:
            rows = (self.kind == _NUMBER) & _compare_array(op, self.number, float(value))
        return rows

    def _any_of(self, values: tuple[MetadataValue, ...]) -> BoolArray:
        numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        flags = [float(v) for v in values if isinstance(v, bool)]
        codes = [self.codes[v] for v in values if isinstance(v, str) and v in self.codes]
        result = np.zeros(len(self.kind), dtype=np.bool_)
        if numbers:
            result |= (self.kind == _NUMBER) & np.isin(self.number, numbers)
        if flags:
            result |= (self.kind == _BOOL) & np.isin(self.number, flags)
        if codes:
            result |= np.isin(self.code, codes)
        return result


def _compare(op: str, actual: str, bound: str) -> bool:
    if op == "$gt":
        return actual > bound
    if op == "$gte":
        return actual >= bound
    if op == "$lt":
        return actual < bound
    return actual <= bound


def _compare_array(op: str, actual: npt.NDArray[np.float64], bound: float) -> BoolArray:
    if op == "$gt":
        return actual > bound
    if op == "$gte":
        return actual >= bound
    if op == "$lt":
        return actual < bound
    return actual <= bound


class MetadataColumns:
    """Metadata of rows ``0..capacity-1`` as columns, with cached filter masks. Not thread-safe: the owner locks."""

    def __init__(self, capacity: int = 0) -> None:
        self._capacity = capacity
        self._columns: dict[str, _Column] = {}
        self.live: BoolArray = np.zeros(capacity, dtype=np.bool_)
        self._cache: OrderedDict[object, Mask] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def fields(self) -> list[str]:
        return list(self._columns)

    def grow(self, capacity: int) -> None:
        if capacity <= self._capacity:
            return
        for column in self._columns.values():
            column.grow(capacity)
        self.live = np.concatenate([self.live, np.zeros(capacity - self._capacity, dtype=np.bool_)])
        self._capacity = capacity
        self._changed()

    def set_row(self, row: int, metadata: Mapping[str, MetadataValue]) -> None:
        """Replace row ``row``'s metadata and mark it live."""
        for field, column in self._columns.items():
            column.set(row, metadata.get(field))
        for field, value in metadata.items():
            if field not in self._columns:
                self._column(field).set(row, value)
        self.live[row] = True
        self._changed()

    def patch_rows(self, rows: Sequence[int], patch: Mapping[str, MetadataValue | None]) -> None:
        """Set the fields of ``patch`` on ``rows`` (a None value removes the field)."""
        index = np.asarray(rows, dtype=np.intp)
        for field, value in patch.items():
            column = self._column(field)
            for row in index:
                column.set(int(row), value)
        self._changed()

    def clear_row(self, row: int) -> None:
        for column in self._columns.values():
            column.set(row, None)
        self.live[row] = False
        self._changed()

    def mask(self, where: MetadataFilter) -> Mask:
        """The live rows ``where`` keeps (cached until the next write)."""
        with self._cache_lock:
            cached = self._cache.get(where)
            if cached is not None:
                self._cache.move_to_end(where)
                return cached
        rows = self.live.copy()
        for condition in where.conditions:
            rows &= self._condition_rows(condition)
        mask = Mask(rows, int(np.count_nonzero(rows)))
        self._remember(where, mask)
        return mask

    def _condition_rows(self, condition: Condition) -> BoolArray:
        with self._cache_lock:
            cached = self._cache.get(condition)
        if cached is not None:
            return cached.rows
        column = self._columns.get(condition.field)
        if column is None:
            rows = np.full(self._capacity, condition.op == "$ne", dtype=np.bool_)
        else:
            rows = column.matching(condition)
        self._remember(condition, Mask(rows, -1))
        return rows

    def _remember(self, key: object, mask: Mask) -> None:
        with self._cache_lock:
            self._cache[key] = mask
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)

    def _column(self, field: str) -> _Column:
        column = self._columns.get(field)
        if column is None:
            column = self._columns[field] = _Column(self._capacity)
        return column

    def _changed(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    # Persistence: the arrays go to an .npz file, the dictionaries to JSON (no pickle: an index file is data, not code).

    def arrays(self, size: int) -> dict[str, npt.NDArray[np.generic]]:
        """The first ``size`` rows of every column, named ``f{i}.kind`` etc. in the order of `fields`."""
        out: dict[str, npt.NDArray[np.generic]] = {"live": self.live[:size]}
        for i, column in enumerate(self._columns.values()):
            out[f"f{i}.kind"] = column.kind[:size]
            out[f"f{i}.number"] = column.number[:size]
            out[f"f{i}.code"] = column.code[:size]
        return out

    def dictionaries(self) -> list[list[str]]:
        return [column.strings for column in self._columns.values()]

    @classmethod
    def restore(
        cls,
        capacity: int,
        fields: Iterable[str],
        dictionaries: Sequence[Sequence[str]],
        arrays: Mapping[str, npt.NDArray[np.generic]],
    ) -> MetadataColumns:
        columns = cls(capacity)
        size = len(arrays["live"])
        columns.live[:size] = arrays["live"]
        for i, (field, strings) in enumerate(zip(fields, dictionaries, strict=True)):
            column = columns._column(field)
            column.kind[:size] = arrays[f"f{i}.kind"]
            column.number[:size] = arrays[f"f{i}.number"]
            column.code[:size] = arrays[f"f{i}.code"]
            column.strings = list(strings)
            column.codes = {s: n for n, s in enumerate(column.strings)}
        return columns
