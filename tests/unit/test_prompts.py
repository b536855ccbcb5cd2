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


def test_default_rag_prompt_is_seeded_as_version_one(platform: Platform) -> None:
    version = platform.prompts.get(DEFAULT_RAG_PROMPT_NAME)
    assert version.version == 1 and version.author == "llmops"
    assert platform.prompts.labels(DEFAULT_RAG_PROMPT_NAME) == {"production": 1}
    assert set(version.variables) == {"question", "sources"}


def test_versions_are_numbered_and_identical_content_is_a_no_op(platform: Platform) -> None:
    v1 = platform.prompts.create("greet", MESSAGES, author="ana")
    again = platform.prompts.create("greet", MESSAGES, author="bo")
    assert again.version == v1.version == 1 and again.author == "ana"
    v2 = platform.prompts.create("greet", MESSAGES, author="bo", params={"temperature": 0.2})
    assert v2.version == 2 and v2.content_hash != v1.content_hash
    assert platform.prompts.get_version("greet", 1).params == {}


def test_labels_point_at_versions(platform: Platform) -> None:
    platform.prompts.create("greet", MESSAGES, author="ana")
    platform.prompts.create("greet", [{"role": "user", "content": "Hi {{ name }}!"}], author="ana")
    platform.prompts.set_label("greet", "production", 1, by="ana")
    assert platform.prompts.get("greet").version == 1
    platform.prompts.set_label("greet", "production", 2, by="ana")
    assert platform.prompts.get("greet").version == 2
    with pytest.raises(PromptNotFoundError, match="no version 7"):
        platform.prompts.set_label("greet", "production", 7, by="ana")
    with pytest.raises(PromptNotFoundError, match="no label 'staging'"):
        platform.prompts.get("greet", label="staging")


def test_render_fills_variables_and_refuses_missing_or_unknown(platform: Platform) -> None:
    version = platform.prompts.create("greet", MESSAGES, author="ana")
    assert platform.prompts.render(version, {"name": "Bo"})[1] == {"role": "user", "content": "Hello Bo"}
    with pytest.raises(PromptTemplateError, match=r"missing \['name'\]"):
        platform.prompts.render(version, {})
    with pytest.raises(PromptTemplateError, match=r"unknown \['nme'\]"):
        platform.prompts.render(version, {"name": "Bo", "nme": "x"})


@pytest.mark.parametrize("payload", SSTI)
def test_hostile_templates_are_refused(platform: Platform, payload: str) -> None:
    with pytest.raises(PromptTemplateError, match="refused"):
        platform.prompts.create("evil", [{"role": "user", "content": payload}], author="mallory")
    assert "evil" not in {p["name"] for p in platform.prompts.list_prompts()}


def test_the_sandbox_blocks_what_the_static_check_cannot_see(platform: Platform) -> None:
    # A method call on a value the sandbox considers unsafe is stopped at render time.
    renderer = platform.prompts.renderer
    with pytest.raises(PromptTemplateError, match=r"sandbox|failed"):
        renderer.render("{{ items.append(1) }}", {"items": []})


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "at least one message"),
        ([{"role": "wizard", "content": "x"}], "role must be one of"),
        ([{"role": "user", "content": "{% if %}"}], "syntax error"),
        ([{"role": "user", "content": "x" * 100_001}], "over the 100000 limit"),
    ],
)
def test_malformed_prompts_are_refused(platform: Platform, messages: list[dict[str, str]], message: str) -> None:
    with pytest.raises(PromptTemplateError, match=message):
        platform.prompts.create("bad", messages, author="ana")
