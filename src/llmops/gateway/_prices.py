"""Prices per model, from configuration, and the cost of a call. The local model costs nothing; tokens still count."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from llmops.gateway._types import Usage

__all__ = ["Price", "PriceTable"]


@dataclass(frozen=True)
class Price:
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok) / 1_000_000


class PriceTable:
    """Prices by served model name. ``version`` is a content hash, recorded with every cost."""

    def __init__(self, prices: Iterable[tuple[str, Price]]) -> None:
        self._prices = dict(prices)
        canonical = json.dumps({k: [v.input_per_mtok, v.output_per_mtok] for k, v in sorted(self._prices.items())})
        self.version = hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def price(self, model: str) -> Price:
        return self._prices.get(model, Price())

    def cost(self, model: str, usage: Usage) -> float:
        return self.price(model).cost(usage)
