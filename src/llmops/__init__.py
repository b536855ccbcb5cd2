"""llmops: the production loop for LLM applications.

>>> from llmops import Platform, Settings
>>> platform = Platform(Settings(data_dir=Path(".llmops")))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmops._settings import ModelConfig, RagConfig, Settings

if TYPE_CHECKING:
    from llmops._platform import Platform

__all__ = ["ModelConfig", "Platform", "RagConfig", "Settings", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Platform imports every component (models, indexes, the server's dependencies): importing ``llmops`` for its
    # settings, or pytest loading the ``llmops_eval`` plugin, should not pay for that.
    if name == "Platform":
        return importlib.import_module("llmops._platform").Platform
    raise AttributeError(f"module 'llmops' has no attribute {name!r}")
