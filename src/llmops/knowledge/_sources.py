"""Sources: where documents come from. A registered source is a folder, a glob, a single file or a URL.

Listing a source says which documents it holds now; ingestion compares that with the index to find what was added,
changed and removed. A source that cannot be listed (a folder that vanished, a URL that fails) is an error for that
source only, and removes nothing: an unmounted disk must not empty the index.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from llmops.knowledge._tables import SourceRow
from llmops.store import Store

__all__ = ["SourceDocument", "SourceError", "SourceRegistry", "document_id", "list_documents"]

MAX_FILE_BYTES = 50 * 1024 * 1024


class SourceError(ValueError):
    """A source cannot be registered or listed; the message says why."""


@dataclass(frozen=True)
class SourceDocument:
    """One document a source holds: its stable address (the document's identity) and how to read its bytes."""

    uri: str
    # Returns the name the parser is chosen by (the file's, or one derived from a URL's content type) and the bytes.
    read: Callable[[], tuple[Path, bytes]]


def document_id(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:32]


class SourceRegistry:
    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, location: str, **options: Any) -> SourceRow:
        """Register ``location`` (idempotent): a folder, a file, a glob pattern or an http(s) URL.

        ``metadata=`` (an option): fields every chunk of the source gets, such as its ``project``; registering a
        source again with other metadata is refused (its documents would disagree with it)."""
        kind, normalized = _classify(location)
        with self._store.session() as session:
            existing = session.scalar(select(SourceRow).where(SourceRow.location == normalized))
            if existing is not None:
                held = (existing.options or {}).get("metadata") or {}
                if "metadata" in options and dict(options["metadata"] or {}) != held:
                    raise ValueError(
                        f"source {normalized} is registered with metadata {held}; remove it (llmops sources remove) "
                        f"before registering it with {dict(options['metadata'] or {})}"
                    )
                return existing
            row = SourceRow(kind=kind, location=normalized, options=dict(options), created_at=datetime.now(UTC))
            session.add(row)
            session.flush()
            session.expunge(row)
            return row

    def list(self) -> list[SourceRow]:
        with self._store.session() as session:
            rows = list(session.scalars(select(SourceRow).order_by(SourceRow.id)))
            for row in rows:
                session.expunge(row)
            return rows

    def get(self, location: str) -> SourceRow | None:
        _kind, normalized = _classify(location)
        with self._store.session() as session:
            row = session.scalar(select(SourceRow).where(SourceRow.location == normalized))
            if row is not None:
                session.expunge(row)
            return row

    def remove(self, location: str) -> bool:
        """Unregister a source. Its documents leave the index on the next run over all sources."""
        _kind, normalized = _classify(location)
        with self._store.session() as session:
            row = session.scalar(select(SourceRow).where(SourceRow.location == normalized))
            if row is None:
                return False
            session.delete(row)
            return True


def _classify(location: str) -> tuple[str, str]:
    location = location.strip()
    if not location:
        raise SourceError("a source is a folder, a file, a glob pattern or an http(s) URL; got an empty string")
    lowered = location.lower()
    if lowered.startswith(("http://", "https://")):
        return "url", location
    if "://" in location:
        raise SourceError(f"unsupported URL scheme in {location!r}: only http and https are fetched")
    if glob.has_magic(location):
        return "glob", str(Path(location).expanduser().absolute())
    path = Path(location).expanduser().resolve()
    if path.is_dir():
        return "folder", str(path)
    if path.is_file():
        return "file", str(path)
    raise SourceError(f"no such file or folder: {location}")


def list_documents(
    source: SourceRow,
    suffixes: set[str],
    fetch: Callable[[str], tuple[Path, bytes]],
) -> tuple[list[SourceDocument], list[tuple[str, str]]]:
    """The documents ``source`` holds now, and the entries skipped (unsupported type) with the reason.

    Raises `SourceError` when the source itself cannot be listed.
    """
    if source.kind == "url":
        return [_url_document(source.location, fetch)], []
    if source.kind == "folder":
        root = Path(source.location)
        if not root.is_dir():
            raise SourceError(f"the folder {root} is gone or not readable; its documents are kept")
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    elif source.kind == "glob":
        files = sorted(Path(p) for p in glob.glob(source.location, recursive=True) if Path(p).is_file())
    else:
        path = Path(source.location)
        if not path.is_file():
            raise SourceError(f"the file {path} is gone or not readable; its document is kept")
        files = [path]
    documents: list[SourceDocument] = []
    skipped: list[tuple[str, str]] = []
    for file in files:
        uri = str(file.resolve())
        if file.suffix.lower() not in suffixes:
            skipped.append((uri, f"unsupported file type {file.suffix or '(none)'}"))
            continue
        documents.append(SourceDocument(uri=uri, read=_file_reader(file)))
    return documents, skipped


def _file_reader(file: Path) -> Callable[[], tuple[Path, bytes]]:
    def read() -> tuple[Path, bytes]:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SourceError(f"file is {size} bytes, over the {MAX_FILE_BYTES} byte limit")
        return file, file.read_bytes()

    return read


def _url_document(url: str, fetch: Callable[[str], tuple[Path, bytes]]) -> SourceDocument:
    return SourceDocument(uri=url, read=lambda: fetch(url))
