"""Response caches: exact (same normalised request) and semantic (a similar enough question, in the same scope).

Exact key: the upstream model version and every parameter that changes the answer, plus the caller's scope, hashed.
A sampled answer (temperature > 0) is only cached when the request opts in. Semantic entries are scoped by served
alias, prompt version (``metadata.prompt_version``) and tenant (team or user), so one team's answer never serves
another's; a hit needs cosine similarity above the threshold *and* content words that differ only by insertion or
deletion: a paraphrase adds or drops words ("What are the steps to reset my password?"), a near miss swaps one
("reset my password" / "reset my username"), and embeddings alone score near misses as high as paraphrases.

Both live in process by default and in Redis when configured (shared by replicas).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from llmops.gateway._types import ChatRequest, Usage

__all__ = [
    "CachedAnswer",
    "ExactCache",
    "InProcessScopeIndex",
    "InProcessStore",
    "RedisScopeIndex",
    "RedisStore",
    "SemanticCache",
    "content_words",
    "exact_key",
    "same_question",
]

_WORD = re.compile(r"[a-z0-9]+")
# Words that carry no topic: a paraphrase may add or drop them freely.
_STOP_TEXT = (
    "a an the i me my we our you your he she it its they them their is are was were be been being am do does did "
    "doing have has had having can could should would will shall may might must to of in on at by for with about "
    "from into over under again further then once here there when where why how what which who whom this that these "
    "those and but if or because as until while so than too very just not no nor only own same some any each few "
    "more most other such all both up down out off please tell explain show know want need get go way "
    "whats whos wheres hows us per much many during"
)
_STOPWORDS = frozenset(_STOP_TEXT.split())
# Words that change the meaning of a question though they look like filler.
_NEGATIONS = frozenset({"not", "no", "never", "without", "cannot", "cant", "dont", "doesnt", "isnt", "wont"})


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    finish_reason: str
    tool_calls: list[dict[str, Any]]
    usage: Usage
    response_model: str

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, data: bytes) -> CachedAnswer:
        raw = orjson.loads(data)
        return cls(raw["text"], raw["finish_reason"], raw["tool_calls"], Usage(**raw["usage"]), raw["response_model"])


def exact_key(upstream_model: str, request: ChatRequest, scope: str) -> str:
    normalised = {
        "model": upstream_model,
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": list(request.stop),
        "seed": request.seed,
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
        "scope": scope,
    }
    return hashlib.sha256(orjson.dumps(normalised, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _stem(word: str) -> str:
    """A crude suffix stripper: enough to equate "report"/"reports", "travel"/"travelling", "night"/"nightly"."""
    for suffix in ("ling", "ing", "ly", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> frozenset[str]:
    """The stems of the words that carry the question's topic (negations kept: they flip the question)."""
    out = set()
    for word in _WORD.findall(text.lower().replace("'", "")):
        stem = _stem(word)
        if word in _NEGATIONS or (word not in _STOPWORDS and stem not in _STOPWORDS):
            out.add(stem)
    return frozenset(out)


def same_question(a: frozenset[str], b: frozenset[str]) -> bool:
    """Content words differ only by words added on one side, never by a word swapped for another."""
    return a <= b or b <= a


class KeyValueStore(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float) -> None: ...


class InProcessStore:
    """An LRU dict with expiry."""

    def __init__(self, max_entries: int) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: bytes, ttl: float) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)


class RedisStore:
    """Shared by replicas; synchronous client (cache reads are sub-millisecond on a local Redis)."""

    def __init__(self, url: str, *, prefix: str = "llmops:cache:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    def get(self, key: str) -> bytes | None:
        value = self._redis.get(self._prefix + key)
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        self._redis.set(self._prefix + key, value, px=int(ttl * 1000))


class ExactCache:
    def __init__(self, store: KeyValueStore, ttl: float) -> None:
        self._store = store
        self.ttl = ttl

    def get(self, key: str) -> CachedAnswer | None:
        data = self._store.get(key)
        return CachedAnswer.loads(data) if data else None

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._store.set(key, answer.dumps(), self.ttl)


Embed = Callable[[list[str]], npt.NDArray[np.float32]]


@dataclass
class ScopeEntries:
    """The questions cached in one scope: their vectors (one row each), content words, and answer keys."""

    vectors: npt.NDArray[np.float32]
    words: list[frozenset[str]]
    keys: list[str]


class ScopeIndex(Protocol):
    def entries(self, scope: str) -> ScopeEntries | None: ...

    def add(self, scope: str, key: str, vector: npt.NDArray[np.float32], words: frozenset[str], ttl: float) -> None: ...


class InProcessScopeIndex:
    def __init__(self, max_per_scope: int = 5000) -> None:
        self._scopes: dict[str, ScopeEntries] = {}
        self._max = max_per_scope
        self._lock = threading.Lock()

    def entries(self, scope: str) -> ScopeEntries | None:
        return self._scopes.get(scope)

    def add(self, scope: str, key: str, vector: npt.NDArray[np.float32], words: frozenset[str], ttl: float) -> None:
        with self._lock:
            entries = self._scopes.get(scope)
            if entries is None:
                entries = self._scopes[scope] = ScopeEntries(np.zeros((0, len(vector)), dtype=np.float32), [], [])
            if len(entries.keys) >= self._max:  # forget the oldest
                entries.vectors, entries.words, entries.keys = entries.vectors[1:], entries.words[1:], entries.keys[1:]
            entries.vectors = np.vstack([entries.vectors, vector[None, :]])
            entries.words.append(words)
            entries.keys.append(key)


class RedisScopeIndex:
    """Scopes shared by replicas: one Redis hash per scope, answer key → float32 vector bytes + content words."""

    def __init__(self, url: str, *, prefix: str = "llmops:semantic:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    def entries(self, scope: str) -> ScopeEntries | None:
        raw: dict[bytes, bytes] = self._redis.hgetall(self._prefix + scope)  # type: ignore[assignment]
        if not raw:
            return None
        keys, vectors, words = [], [], []
        for key, value in raw.items():
            size = int.from_bytes(value[:4], "big")  # vector bytes may hold any byte: length-prefixed
            vector, word_list = value[4 : 4 + size], value[4 + size :]
            keys.append(key.decode())
            vectors.append(np.frombuffer(vector, dtype=np.float32))
            words.append(frozenset(orjson.loads(word_list)))
        return ScopeEntries(np.vstack(vectors), words, keys)

    def add(self, scope: str, key: str, vector: npt.NDArray[np.float32], words: frozenset[str], ttl: float) -> None:
        name = self._prefix + scope
        data = vector.astype(np.float32).tobytes()
        value = len(data).to_bytes(4, "big") + data + orjson.dumps(sorted(words))
        pipe = self._redis.pipeline()
        pipe.hset(name, key, value)
        pipe.expire(name, int(ttl))
        pipe.execute()


class SemanticCache:
    """Answers to earlier questions, found by the similarity of the new question within a scope."""

    def __init__(self, embed: Embed, store: KeyValueStore, index: ScopeIndex, *, threshold: float, ttl: float) -> None:
        self._embed = embed
        self._store = store  # holds the answers, by key
        self._index = index  # holds the questions' vectors and words, by scope
        self.threshold = threshold
        self.ttl = ttl

    @staticmethod
    def question(request: ChatRequest) -> str | None:
        """The text a semantic hit is judged on: the last user message (None when the request is not a question)."""
        for message in reversed(request.messages):
            if message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else None
        return None

    def lookup(self, scope: str, question: str) -> tuple[CachedAnswer, float] | None:
        entries = self._index.entries(scope)
        if entries is None or not entries.keys:
            return None
        vector = self._embed([question])[0]
        scores = entries.vectors @ vector
        words = content_words(question)
        for index in np.argsort(-scores)[:5]:
            if scores[index] < self.threshold:
                break
            if not same_question(entries.words[index], words):
                continue  # a word was swapped: a near miss, not a paraphrase
            data = self._store.get(entries.keys[index])
            if data:
                return CachedAnswer.loads(data), float(scores[index])
        return None

    def add(self, scope: str, question: str, answer: CachedAnswer) -> None:
        vector = self._embed([question])[0]
        key = "sem:" + hashlib.sha256(f"{scope}\0{question}".encode()).hexdigest()
        self._store.set(key, answer.dumps(), self.ttl)
        self._index.add(scope, key, vector, content_words(question), self.ttl)
