"""Prompts as files: a folder of YAML prompt files kept in sync with the registry (GitOps).

One file per prompt, ``<name>.yaml``::

    name: support-answer            # optional: defaults to the file name
    description: Answers support questions from the knowledge base.
    messages:
      - role: system
        content: You answer in one sentence. Context: {{ context }}
      - role: user
        content: "{{ question }}"
    variables: {context: str, question: str}
    params: {temperature: 0.2, max_tokens: 200}
    tags: [support]
    commit_message: shorter answers   # optional

``push`` turns every changed file into a new version (an unchanged file creates nothing, nothing is ever
overwritten); ``pull`` writes the registry's versions out as files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llmops.prompts._model import PromptSpec, check_name
from llmops.prompts._template import PromptTemplateError

if TYPE_CHECKING:
    from llmops.prompts._registry import PromptRegistry

__all__ = ["PushReport", "pull_prompts", "push_prompts"]

_FILE_KEYS = {"name", "description", "commit_message", *PromptSpec.model_fields}


@dataclass
class PushReport:
    created: list[tuple[str, int]] = field(default_factory=list)  # (prompt, new version)
    unchanged: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    labelled: list[tuple[str, int]] = field(default_factory=list)
    approval_requests: list[tuple[str, int]] = field(default_factory=list)  # (prompt, change request id)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PromptTemplateError(f"cannot read YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PromptTemplateError("a prompt file must hold a mapping (name, messages, ...)")
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise PromptTemplateError(f"unknown keys {sorted(unknown)}; allowed: {sorted(_FILE_KEYS)}")
    return data


def push_prompts(
    registry: PromptRegistry,
    folder: Path,
    *,
    author: str,
    label: str | None = None,
    environment: str | None = None,
) -> PushReport:
    """Create a version for every changed file. With ``label``, point it at each pushed version (a protected label
    gets a change request instead of a move)."""
    from llmops.prompts._approvals import ApprovalRequiredError

    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    report = PushReport()
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            data = _read(path)
            name = check_name("prompt name", str(data.get("name") or path.stem))
            before = _latest_version(registry, name)
            version = registry.create(
                name,
                data.get("messages") or [],
                author=author,
                variables=data.get("variables"),
                params=data.get("params"),
                examples=data.get("examples"),
                tags=data.get("tags"),
                commit_message=str(data.get("commit_message") or f"pushed from {path.name}"),
                description=str(data.get("description") or ""),
            )
        except PromptTemplateError as exc:
            report.failed.append((str(path), str(exc)))
            continue
        (report.unchanged if version.version == before else report.created).append((name, version.version))
        if label is None or registry.labels(name, environment).get(label) == version.version:
            continue
        try:
            registry.move_label(name, label, version.version, environment=environment, by=author, reason="push")
            report.labelled.append((name, version.version))
        except ApprovalRequiredError:
            request = registry.approvals.request(
                name, label, version.version, environment=environment, by=author, reason=f"push of {path.name}"
            )
            report.approval_requests.append((name, request.id))
    return report


def _latest_version(registry: PromptRegistry, name: str) -> int | None:
    from llmops.prompts._registry import PromptNotFoundError

    try:
        return registry.latest(name).version
    except PromptNotFoundError:
        return None


def pull_prompts(
    registry: PromptRegistry, folder: Path, *, label: str | None = None, environment: str | None = None
) -> list[Path]:
    """Write each prompt's newest version (or the version ``label`` points at) to ``folder/<name>.yaml``."""
    from llmops.prompts._registry import PromptNotFoundError

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for summary in registry.list_prompts():
        name = summary["name"]
        try:
            version = registry.resolve(name, label=label, environment=environment) if label else registry.latest(name)
        except PromptNotFoundError:
            continue
        document: dict[str, Any] = {"name": name}
        if summary["description"]:
            document["description"] = summary["description"]
        document.update(PromptSpec.parse(version.spec()).model_dump(exclude_none=True, exclude_defaults=True))
        document["messages"] = version.messages
        target = folder / f"{name}.yaml"
        target.write_text(
            f"# {name} v{version.version} ({version.content_hash[:12]}), pulled from llmops\n"
            + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120),
            encoding="utf-8",
        )
        written.append(target)
    return written
