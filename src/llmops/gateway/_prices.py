"""Versioned price books: per model alias, dollars per million input, output and cached input tokens.

A book is built from the kept price database ``genai-prices`` (offline: its data ships in the wheel) plus the
operator's overrides in settings; local models cost nothing. A book is immutable and named by a hash of its content,
and every call's cost is stored with the name of the book that priced it, so costs can be recomputed under a later
book (``llmops gateway reprice``) without losing the original figures.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from typing import Any

from llmops._settings import ModelConfig
from llmops.gateway._types import Usage

__all__ = ["ModelPrice", "PriceBook"]

_PROVIDER_IDS = {"anthropic": "anthropic", "openai-compatible": None}


@dataclass(frozen=True)
class ModelPrice:
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float = 0.0
    source: str = "unpriced"  # "config" | "genai-prices" | "local" | "unpriced"

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        return (
            (usage.input_tokens - cached) * self.input_per_mtok
            + cached * self.cached_input_per_mtok
            + usage.output_tokens * self.output_per_mtok
        ) / 1_000_000


def _database_price(config: ModelConfig) -> ModelPrice | None:
    """Per-million-token prices of the upstream model from genai-prices, or None if it does not know the model."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    provider_id = _PROVIDER_IDS.get(config.provider)
    if config.base_url and "api.openai.com" in config.base_url:
        provider_id = "openai"

    def price(**tokens: int) -> float | None:
        try:
            return float(calc_price(PriceUsage(**tokens), model_ref=config.model, provider_id=provider_id).total_price)
        except LookupError:
            return None

    million = 1_000_000
    input_price = price(input_tokens=million)
    if input_price is None:
        return None
    output_price = price(output_tokens=million) or 0.0
    cached = price(input_tokens=million, cache_read_tokens=million)
    return ModelPrice(input_price, output_price, cached if cached is not None else input_price, "genai-prices")


class PriceBook:
    """Prices by served alias. ``version`` names the book (database version + a hash of the overrides)."""

    def __init__(self, prices: dict[str, ModelPrice], *, source: str) -> None:
        self._prices = dict(prices)
        canonical = json.dumps({alias: asdict(p) for alias, p in sorted(self._prices.items())}, sort_keys=True)
        self.version = f"{source}+{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"

    @classmethod
    def from_models(cls, models: Iterable[ModelConfig]) -> PriceBook:
        prices: dict[str, ModelPrice] = {}
        for config in models:
            if config.input_price_per_mtok is not None or config.output_price_per_mtok is not None:
                input_price = config.input_price_per_mtok or 0.0
                prices[config.name] = ModelPrice(
                    input_price,
                    config.output_price_per_mtok or 0.0,
                    config.cached_input_price_per_mtok
                    if config.cached_input_price_per_mtok is not None
                    else input_price,
                    "config",
                )
            elif config.provider == "local":
                prices[config.name] = ModelPrice(source="local")
            else:
                prices[config.name] = _database_price(config) or ModelPrice()
        return cls(prices, source=f"genai-prices-{package_version('genai-prices')}")

    def price(self, alias: str) -> ModelPrice:
        return self._prices.get(alias, ModelPrice())

    def cost(self, alias: str, usage: Usage) -> float:
        return self.price(alias).cost(usage)

    def entries(self) -> dict[str, dict[str, Any]]:
        return {alias: asdict(p) for alias, p in self._prices.items()}
