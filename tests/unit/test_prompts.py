"""Prompt versions, lifecycle, labels per environment, history, rollback, diff and the template sandbox."""

from __future__ import annotations

import pytest

from llmops import Platform
from llmops.prompts import DEFAULT_RAG_PROMPT_NAME, PromptNotFoundError, PromptTemplateError

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello {{ name }}"}]

# Server-side template injection payloads: every one must be refused before it is stored.
SSTI = [
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ config.__class__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ request['__class__'] }}",
    "{{ x|attr('__class__') }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ namespace.__init__.__globals__ }}",
]


def test_default_rag_prompt_is_seeded_as_version_one_in_every_environment(platform: Platform) -> None:
    version = platform.prompts.get(DEFAULT_RAG_PROMPT_NAME)
    assert version.version == 1 and version.author == "llmops"
    for environment in ("dev", "staging", "prod"):
        assert platform.prompts.labels(DEFAULT_RAG_PROMPT_NAME, environment) == {"production": 1}
    assert version.variables == {"question": "str", "sources": "list"}


def test_versions_are_numbered_and_identical_content_is_a_no_op(platform: Platform) -> None:
    v1 = platform.prompts.create("greet", MESSAGES, author="ana", tags=["b", "a"])
    again = platform.prompts.create("greet", MESSAGES, author="bo", tags=["a", "b"], commit_message="same")
    assert again.version == v1.version == 1 and again.author == "ana"
    v2 = platform.prompts.create("greet", MESSAGES, author="bo", tags=["a", "b"], params={"temperature": 0.2})
    assert v2.version == 2 and v2.content_hash != v1.content_hash and v2.author == "bo"
    assert platform.prompts.get_version("greet", 1).params == {}
    assert [v.version for v in platform.prompts.versions("greet")] == [1, 2]


def test_a_version_holds_everything_it_was_given(platform: Platform) -> None:
    version = platform.prompts.create(
        "support",
        [{"role": "system", "content": "Context: {{ context }}"}, {"role": "user", "content": "{{ question }}"}],
        author="ana",
        variables={"context": "str", "question": "str"},
        params={"model": "m", "temperature": 0.3, "top_p": 0.9, "max_tokens": 50,
                "response_json_schema": {"type": "object", "properties": {"answer": {"type": "string"}}}},
        examples=[{"input": {"question": "hi"}, "output": "hello"}],
        tags=["support"],
        commit_message="first",
    )  # fmt: skip
    stored = platform.prompts.get_version("support", version.version)
    assert stored.variables == {"context": "str", "question": "str"}
    assert stored.params["max_tokens"] == 50 and stored.params["response_json_schema"]["type"] == "object"
    assert stored.examples == [{"input": {"question": "hi"}, "output": "hello"}]
    assert stored.tags == ["support"] and stored.commit_message == "first" and len(stored.content_hash) == 64


def test_render_checks_variables_by_name_and_type(sqlite_platform: Platform) -> None:
    version = sqlite_platform.prompts.create("greet", MESSAGES, author="ana", variables={"name": "str"})
    assert sqlite_platform.prompts.render(version, {"name": "Bo"})[1] == {"role": "user", "content": "Hello Bo"}
    with pytest.raises(PromptTemplateError, match=r"missing \['name'\]"):
        sqlite_platform.prompts.render(version, {})
    with pytest.raises(PromptTemplateError, match=r"unknown \['nme'\]"):
        sqlite_platform.prompts.render(version, {"name": "Bo", "nme": "x"})
    with pytest.raises(PromptTemplateError, match=r"wrong type: name \(expected str, got int\)"):
        sqlite_platform.prompts.render(version, {"name": 3})


def test_templates_may_not_use_undeclared_variables(sqlite_platform: Platform) -> None:
    with pytest.raises(PromptTemplateError, match=r"undeclared variables \['name'\]"):
        sqlite_platform.prompts.create("greet", MESSAGES, author="ana", variables={"other": "str"})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temprature": 0.2}, "params.temprature: Extra inputs are not permitted"),
        ({"temperature": 5}, "params.temperature"),
        ({"max_tokens": 0}, "params.max_tokens"),
        ({"response_json_schema": {"answer": "string"}}, "JSON Schema object"),
    ],
)
def test_bad_model_parameters_are_refused_naming_the_field(
    sqlite_platform: Platform, params: dict[str, object], message: str
) -> None:
    with pytest.raises(PromptTemplateError, match=message):
        sqlite_platform.prompts.create("greet", MESSAGES, author="ana", params=params)


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a b", "-x", "x" * 201])
def test_prompt_names_are_plain(sqlite_platform: Platform, name: str) -> None:
    with pytest.raises(PromptTemplateError, match="is not valid"):
        sqlite_platform.prompts.create(name, MESSAGES, author="ana")


def test_labels_are_per_environment_and_every_move_is_recorded(platform: Platform) -> None:
    platform.prompts.create("greet", MESSAGES, author="ana")
    platform.prompts.create("greet", [{"role": "user", "content": "Hi {{ name }}!"}], author="ana")
    platform.prompts.move_label("greet", "production", 1, environment="prod", by="ana", reason="launch")
    platform.prompts.move_label("greet", "production", 2, environment="dev", by="bo", reason="try v2")
    platform.prompts.move_label("greet", "production", 2, environment="prod", by="cy", reason="v2 is better")
    assert platform.prompts.labels("greet", "dev") == {"production": 2}
    assert platform.prompts.resolve("greet", environment="prod").version == 2
    assert platform.prompts.labels("greet", "staging") == {}
    moves = [
        (h.environment, h.from_version, h.to_version, h.actor, h.detail) for h in platform.prompts.history("greet")
    ]
    assert moves == [
        ("prod", None, 1, "ana", "launch"),
        ("dev", None, 2, "bo", "try v2"),
        ("prod", 1, 2, "cy", "v2 is better"),
    ]
    with pytest.raises(PromptNotFoundError, match="no version 7"):
        platform.prompts.move_label("greet", "production", 7, environment="dev", by="ana")
    with pytest.raises(PromptNotFoundError, match="unknown environment 'qa'"):
        platform.prompts.move_label("greet", "production", 1, environment="qa", by="ana")
    with pytest.raises(PromptNotFoundError, match="no label 'staging' in dev"):
        platform.prompts.resolve("greet", label="staging", environment="dev")


def test_rollback_restores_the_previous_version_and_is_recorded(platform: Platform) -> None:
    for text in ("A {{ x }}", "B {{ x }}", "C {{ x }}"):
        version = platform.prompts.create("p", [{"role": "user", "content": text}], author="ana")
        platform.prompts.move_label("p", "production", version.version, environment="prod", by="ana")
    assert platform.prompts.rollback("p", "production", environment="prod", by="bo", reason="C is broken") == 2
    assert platform.prompts.resolve("p", environment="prod").version == 2
    assert platform.prompts.rollback("p", "production", environment="prod", by="bo") == 1
    last = platform.prompts.history("p")[-1]
    assert (last.kind, last.from_version, last.to_version, last.actor) == ("rollback", 2, 1, "bo")
    with pytest.raises(PromptTemplateError, match="no previous version"):
        platform.prompts.rollback("p", "production", environment="prod", by="bo")


def test_lifecycle_moves_are_enforced(platform: Platform) -> None:
    platform.prompts.create("p", MESSAGES, author="ana")
    assert platform.prompts.stage("p", 1) == "draft"
    with pytest.raises(PromptTemplateError, match="p v1 is draft: it can move to testing, not to production"):
        platform.prompts.set_stage("p", 1, "production", by="ana")
    for stage in ("testing", "production", "deprecated", "testing"):
        platform.prompts.set_stage("p", 1, stage, by="ana")
    assert platform.prompts.stage("p", 1) == "testing"
    with pytest.raises(PromptTemplateError, match="unknown stage"):
        platform.prompts.set_stage("p", 1, "live", by="ana")
    assert next(h.detail for h in platform.prompts.history("p") if h.kind == "stage") == "draft -> testing"


def test_archive_keeps_the_version_readable(platform: Platform) -> None:
    platform.prompts.create("p", MESSAGES, author="ana")
    platform.prompts.create("p", [{"role": "user", "content": "Hi {{ name }}"}], author="ana")
    platform.prompts.move_label("p", "production", 2, environment="dev", by="ana")
    with pytest.raises(PromptTemplateError, match="labels pointing at it"):
        platform.prompts.archive("p", 2, by="ana")
    platform.prompts.archive("p", 1, by="ana")
    info = {v.version: v for v in platform.prompts.versions("p")}
    assert info[1].archived and not info[2].archived and info[2].labels == ["dev/production"]
    assert platform.prompts.get_version("p", 1).messages == MESSAGES


def test_diff_shows_template_and_parameter_changes(platform: Platform) -> None:
    platform.prompts.create("p", MESSAGES, author="ana", params={"temperature": 0.0})
    changed = [MESSAGES[0], {"role": "user", "content": "Hello there {{ name }}"}]
    platform.prompts.create("p", changed, author="ana", params={"temperature": 0.7})
    diff = platform.prompts.diff("p", 1, 2)
    assert "--- p v1" in diff and "+++ p v2" in diff
    assert "-Hello {{ name }}" in diff and "+Hello there {{ name }}" in diff
    assert "-temperature: 0.0" in diff and "+temperature: 0.7" in diff
    assert " Be brief." in diff  # unchanged context


@pytest.mark.parametrize("payload", SSTI)
def test_hostile_templates_are_refused(sqlite_platform: Platform, payload: str) -> None:
    with pytest.raises(PromptTemplateError, match="refused"):
        sqlite_platform.prompts.create("evil", [{"role": "user", "content": payload}], author="mallory")
    assert "evil" not in {p["name"] for p in sqlite_platform.prompts.list_prompts()}


@pytest.mark.parametrize("payload", SSTI)
def test_the_renderer_refuses_hostile_templates_on_every_path(sqlite_platform: Platform, payload: str) -> None:
    with pytest.raises(PromptTemplateError, match="refused"):
        sqlite_platform.prompts.renderer.render(payload, {"x": 1, "request": {}})


def test_the_sandbox_blocks_what_the_static_check_cannot_see(sqlite_platform: Platform) -> None:
    renderer = sqlite_platform.prompts.renderer
    with pytest.raises(PromptTemplateError, match=r"sandbox|failed"):
        renderer.render("{{ items.append(1) }}", {"items": []})


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages: List should have at least 1 item"),
        ([{"role": "wizard", "content": "x"}], "messages.0.role"),
        ([{"role": "user", "content": "{% if %}"}], "syntax error"),
        ([{"role": "user", "content": "x" * 100_001}], "over the 100000 limit"),
    ],
)
def test_malformed_prompts_are_refused(sqlite_platform: Platform, messages: list[dict[str, str]], message: str) -> None:
    with pytest.raises(PromptTemplateError, match=message):
        sqlite_platform.prompts.create("bad", messages, author="ana")
