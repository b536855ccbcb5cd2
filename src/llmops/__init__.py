"""llmops: the production loop for LLM applications.

>>> from llmops import Platform, Settings
>>> platform = Platform(Settings(data_dir=Path(".llmops")))  # doctest: +SKIP
"""

from llmops._platform import Platform
from llmops._settings import ModelConfig, RagConfig, Settings

__all__ = ["ModelConfig", "Platform", "RagConfig", "Settings", "__version__"]

__version__ = "0.1.0"
