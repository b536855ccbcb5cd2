"""The monitoring page (/observe): served, calls only routes that exist, loads nothing from elsewhere, inserts no
markup, and, run by Node.js over a minimal DOM against a live server, shows what the API returns."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from llmops import Platform, Settings
from llmops.server import create_app
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import LOCAL_MODEL, SAMPLES
from ..helpers import serve_in_thread

PAGE = (resources.files("llmops.server") / "_static" / "observe.html").read_text(encoding="utf-8")
SCRIPT = PAGE.split("<script>", 1)[1].split("</script>", 1)[0]
QUESTION = "How many paid time off PTO days do new employees get?"
OVERVIEW = [
    "grounding_score",
    "hallucination_rate",
    "latency_ms_p95",
    "ttft_ms",
    "cost_usd",
    "guardrail_trigger_rate",
    "error_rate",
    "requests",
    "thumbs_down_rate",
]
# Every API call of the page is get(`/api/...`) or post(`/api/...`) with a literal path, so it can be checked here.
_CALL = re.compile(r"""\b(get|post)\(\s*([`"'])(/api/[^`"'?]*)""")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    # Housekeeping would evaluate the trigger rules by itself every 30 s; the test presses "evaluate now" instead.
    settings = Settings(data_dir=tmp_path / "data", triggers={"interval_s": 3600})
    built = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("15 days [1].")})
    try:
        yield built
    finally:
        built.close()


def _fastapi(app: Any) -> FastAPI:
    while not isinstance(app, FastAPI):
        app = app.app  # the body-size limit and the chat-completions hot path wrap the FastAPI app
    return app


Route = tuple[re.Pattern[str], str, set[str]]  # path pattern, method, declared query parameters


def _routes(platform: Platform) -> list[Route]:
    """The app's API routes, from its OpenAPI schema (FastAPI >= 0.165 keeps included routers out of ``app.routes``)."""
    routes = []
    for path, operations in _fastapi(create_app(platform)).openapi()["paths"].items():
        pattern = re.compile(re.sub(r"\{[^}]+\}", "[^/]+", path))
        for method, operation in operations.items():
            query = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            routes.append((pattern, method.upper(), query))
    return routes


def _route_for(routes: list[Route], method: str, path: str) -> Route | None:
    return next((r for r in routes if r[0].fullmatch(path) and r[1] == method), None)


def _page_calls() -> list[tuple[str, str]]:
    """(method, path) of each API call in the page's script, ``${...}`` standing for one path segment."""
    return [(m.group(1).upper(), re.sub(r"\$\{[^}]*\}", "segment", m.group(3))) for m in _CALL.finditer(SCRIPT)]


def test_the_page_is_served_and_linked_from_the_others(platform: Platform) -> None:
    with serve_in_thread(create_app(platform)) as base:
        page = httpx.get(f"{base}/observe")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>llmops · observe</title>" in page.text
        for other in ("/", "/prompts", "/observe"):
            assert '<a href="/observe">observe</a>' in httpx.get(f"{base}{other}").text


def test_every_api_call_of_the_page_is_a_route_of_the_app(platform: Platform) -> None:
    calls = _page_calls()
    assert len(calls) == SCRIPT.count("/api/"), "an /api/ path outside get(...)/post(...) escapes this check"
    assert len(calls) >= 20
    routes = _routes(platform)
    missing = [f"{method} {path}" for method, path in calls if _route_for(routes, method, path) is None]
    assert missing == []
    # The check can fail: a path or method the app does not have is caught.
    assert _route_for(routes, "GET", "/api/drift/segment/checks") is None
    assert _route_for(routes, "GET", "/api/triggers/evaluate") is None


def test_the_page_loads_nothing_from_elsewhere() -> None:
    assert not re.search(r"""\b(?:src|href|action)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", PAGE, re.I)
    assert not re.search(r"<link\b|<script[^>]*\bsrc|<iframe|<img|@import|url\(", PAGE, re.I)
    # The one absolute URL is the SVG namespace, a name that is never fetched.
    assert re.findall(r"[a-z]+://[^\s\"'`]*", PAGE) == ["http://www.w3.org/2000/svg"]
    # Links the script makes stay on the page; the one fetch() is api()'s, always with a local path.
    assert re.findall(r"\bhref:\s*[`\"'](.)", SCRIPT) == ["#"]
    assert SCRIPT.count("fetch(") == 1


def test_the_page_inserts_text_never_markup() -> None:
    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "createContextualFragment", "DOMParser")
    assert [sink for sink in sinks if sink in SCRIPT] == []
    assert not re.search(r"\beval\(|new Function\b|setAttribute\(\s*[`\"']on", SCRIPT)


class _Elements(HTMLParser):
    """The page's elements that have an id, with the initial state a browser would give them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, dict[str, Any]] = {}
        self._select: str | None = None
        self._option: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "option" and self._select is not None:
            self._option = {"value": a.get("value"), "text": "", "selected": "selected" in a}
        element_id = a.get("id")
        if element_id is None:
            return
        self.found[element_id] = {
            "tag": tag,
            "value": a.get("value") or "",
            "checked": "checked" in a,
            "hidden": "hidden" in a,
        }
        if tag == "select":
            self._select = element_id

    def handle_data(self, data: str) -> None:
        if self._option is not None:
            self._option["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "option" and self._select is not None and self._option is not None:
            value = self._option["value"] if self._option["value"] is not None else self._option["text"]
            select = self.found[self._select]
            if self._option["selected"] or "first" not in select:
                select["value"], select["first"] = value, True
            self._option = None
        elif tag == "select":
            self._select = None


# A DOM of plain objects, enough for the page; it refuses to append anything that is not a node or a string (a real
# DOM would insert "[object Object]"). The scenario clicks through each tab against the live server.
HARNESS = r"""
"use strict";
const fs = require("node:fs");
const vm = require("node:vm");
const { base, elements, script } = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
class Node {
  constructor(tag) {
    Object.assign(this, { tagName: tag, childNodes: [], attributes: {}, style: {}, value: "", checked: false,
      hidden: false, className: "", data: "" });
  }
  append(...items) {
    for (const item of items) {
      if (typeof item === "string") this.childNodes.push(textNode(item));
      else if (item instanceof Node) this.childNodes.push(item);
      else throw new TypeError(`append(${Object.prototype.toString.call(item)})`);
    }
  }
  replaceChildren(...items) { this.childNodes = []; this.append(...items); }
  get textContent() {
    return this.tagName === "#text" ? this.data : this.childNodes.map((c) => c.textContent).join("");
  }
  set textContent(v) { this.childNodes = [textNode(String(v))]; }
  setAttribute(k, v) { this.attributes[k] = String(v); }
  *walk() { yield this; for (const c of this.childNodes) yield* c.walk(); }
  all(tag) { return [...this.walk()].filter((n) => n.tagName === tag); }
}
function textNode(s) { const n = new Node("#text"); n.data = String(s); return n; }
const byId = {};
for (const [id, spec] of Object.entries(elements)) {
  byId[id] = Object.assign(new Node(spec.tag), { value: spec.value, checked: spec.checked, hidden: spec.hidden });
}
const problems = [];
globalThis.Node = Node;
globalThis.document = {
  getElementById: (id) => byId[id] || null,
  createElement: (tag) => new Node(tag),
  createElementNS: (ns, tag) => {
    if (ns !== "http://www.w3.org/2000/svg") problems.push(`namespace ${ns}`);
    return new Node(tag);
  },
  createTextNode: (s) => textNode(s),
};
globalThis.localStorage = { getItem: () => null, setItem: () => {} };
globalThis.location = { hash: "" };
globalThis.window = globalThis;
const calls = [];
let inflight = 0;
const realFetch = globalThis.fetch;
globalThis.fetch = async (path, options = {}) => {
  if (!path.startsWith("/")) problems.push(`fetch of ${path}`);
  inflight++;
  try {
    const res = await realFetch(base + path, options);
    const body = await res.text();  // read while still counted in flight
    const user = (options.headers || {})["X-LLMOps-User"] || null;
    calls.push({ method: options.method || "GET", path, status: res.status, user });
    return new Response([204, 304].includes(res.status) ? null : body, { status: res.status, headers: res.headers });
  } finally { inflight--; }
};
process.on("unhandledRejection", (e) => problems.push(`unhandled: ${e && e.stack}`));
vm.runInThisContext(script, { filename: "observe.html" });

const $ = (id) => byId[id];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function settle() {  // until no request has been in flight for 100 ms
  let quiet = 0;
  while (quiet < 4) { await sleep(25); quiet = inflight === 0 ? quiet + 1 : 0; }
}
const message = () => ({ text: $("message").textContent, error: $("message").className === "error" });
const click = async (node) => { await node.onclick({ preventDefault() {} }); await settle(); };
const go = async (hash) => { location.hash = hash; window.onhashchange(); await settle(); };
const buttons = (root, label) => root.all("button").filter((b) => b.textContent === label);
const rows = (id) => $(id).childNodes.map((r) => r.childNodes.map((c) => c.textContent));
const out = {};
(async () => {
  await settle();
  out.load = message();
  out.grid = $("m-grid").childNodes.map((card) => ({ title: card.childNodes[0].childNodes[0].textContent,
    value: card.childNodes[0].childNodes[1].textContent, paths: card.all("path").length, text: card.textContent }));
  out.metricOptions = $("m-metric").all("option").map((o) => o.value);
  out.groupOptions = $("m-group").all("option").map((o) => o.value);
  $("m-group").value = "app";
  await click($("m-show"));
  out.explore = { legend: $("m-legend").textContent, paths: $("m-chart").all("path").length, message: message() };

  await go("#traces");
  out.traces = rows("t-rows");
  await click($("t-rows").childNodes[0]);
  out.hash = location.hash;
  out.title = $("t-title").textContent;
  out.waterfall = $("t-waterfall").childNodes.slice(1).map((r) => {
    const bar = r.all("div").find((d) => d.className.startsWith("wf-bar"));
    return { name: r.childNodes[0].textContent, indent: r.childNodes[0].style.paddingLeft, left: bar.style.left,
      width: bar.style.width, error: bar.className.includes("err"), active: r.className.includes("active") };
  });
  out.rootSpan = { title: $("t-span-title").textContent, attributes: rows("t-span-attrs").length };
  await click($("t-waterfall").childNodes[2]);
  out.secondSpan = { title: $("t-span-title").textContent,
    active: $("t-waterfall").childNodes.map((r) => r.className.includes("active")) };
  $("user").value = "ana";
  $("fb-comment").value = "<img src=x onerror=alert(1)>";
  await click($("fb-up"));
  out.thumbs = { message: message(), feedback: rows("t-feedback") };
  $("fb-rating").value = "2";
  await click($("fb-rate"));
  await click($("fb-correct"));
  out.emptyCorrection = message();
  $("fb-correction").value = "15 days";
  await click($("fb-correct"));
  out.traceFeedback = rows("t-feedback");

  await go("#feedback");
  out.allFeedback = rows("f-rows");
  $("f-negative").checked = true;
  await $("f-negative").onchange();
  await settle();
  out.negativeFeedback = rows("f-rows");
  out.feedbackLinks = $("f-rows").all("a").map((a) => a.href);

  await go("#drift");
  out.driftApps = $("d-app").all("option").map((o) => o.value);
  await click($("d-check"));
  out.driftCheck = $("d-check-result").textContent;
  out.driftReports = rows("d-reports");
  out.retrieval = rows("d-retrieval");

  await go("#triggers");
  out.rules = rows("r-rules");
  await click($("r-evaluate"));
  out.evaluated = $("r-evaluated").textContent;
  out.firings = rows("r-firings");
  const approve = buttons($("r-firings"), "approve");
  out.approveButtons = approve.length;
  if (approve.length) await click(approve[0]);
  out.approved = { message: message(), firings: rows("r-firings"),
    approveButtons: buttons($("r-firings"), "approve").length };
  out.reviews = rows("v-rows");
  const review = $("v-rows").childNodes[0];
  if (review && review.all("input").length) {
    review.all("input")[0].value = "rolled back by hand";
    await click(buttons(review, "resolve")[0]);
  }
  out.resolved = { message: message(), reviews: rows("v-rows") };
  $("v-all").checked = true;
  await $("v-all").onchange();
  await settle();
  out.allReviews = rows("v-rows");
  out.runbooks = $("r-runbooks").all("legend").map((l) => l.textContent);
  const outage = $("r-runbooks").all("fieldset").find((f) => f.all("legend")[0].textContent === "provider-outage");
  await click(buttons(outage, "run")[0]);
  out.runbookMissing = message();
  outage.all("input").find((i) => i.placeholder === "required").value = "smollm2-135m-instruct";
  await click(buttons(outage, "run")[0]);
  out.runbook = { message: message(), title: $("r-run-title").textContent, shown: !$("r-run-result").hidden };

  out.badAttributes = [];
  for (const root of Object.values(byId)) for (const n of root.walk()) {
    for (const [k, v] of Object.entries({ ...n.attributes, ...n.style })) {
      if (/NaN|undefined|Infinity|null/.test(String(v))) out.badAttributes.push(`${n.tagName} ${k}=${v}`);
    }
  }
  out.calls = calls;
  out.problems = problems;
  console.log(JSON.stringify(out));
})().catch((e) => console.log(JSON.stringify({ crash: String(e && e.stack), problems })));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_the_page_shows_what_the_api_returns(platform: Platform, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLES, corpus)
    platform.knowledge.ingest(corpus)
    platform.roles.grant("ana", "approver", by="test")
    routes = _routes(platform)
    with serve_in_thread(create_app(platform)) as base:
        asked = httpx.post(f"{base}/api/ask", json={"question": QUESTION})
        assert asked.status_code == 200
        request_id = asked.json()["request_id"]
        rule = {
            "name": "busy",
            "description": "<b>any</b> traffic",
            "when": {"metric": "requests", "op": ">=", "threshold": 1, "window_s": 3600},
            "approval": True,
            "actions": [
                {"open_review": {"title": "look at <script>x</script>"}},
                {"rollback_prompt": {"prompt": "rag"}},
            ],
        }
        assert httpx.post(f"{base}/api/triggers", json=rule).status_code == 201
        spans = httpx.get(f"{base}/api/traces/{request_id}").json()["spans"]
        parser = _Elements()
        parser.feed(PAGE)
        state = tmp_path / "state.json"
        state.write_text(json.dumps({"base": base, "elements": parser.found, "script": SCRIPT}), encoding="utf-8")
        harness = tmp_path / "harness.js"
        harness.write_text(HARNESS, encoding="utf-8")
        run = subprocess.run(["node", str(harness), str(state)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "crash" not in out, out
    assert out["problems"] == []
    assert out["badAttributes"] == []

    # Every request the page made was answered, except the deliberate mistakes below; every query parameter it sent
    # is one the route declares (FastAPI ignores unknown ones silently).
    refused = [(c["method"], urlsplit(c["path"]).path, c["status"]) for c in out["calls"] if c["status"] >= 400]
    assert refused == [("POST", "/api/feedback", 422), ("POST", "/api/runbooks/provider-outage/run", 422)]
    for call in out["calls"]:
        url = urlsplit(call["path"])
        route = _route_for(routes, call["method"], url.path)
        assert route is not None, call
        assert {k for k, _ in parse_qsl(url.query, keep_blank_values=True)} <= route[2], call

    # 1. metrics: the overview grid charts the one request; the explorer groups by app.
    assert out["load"]["error"] is False, out["load"]
    assert [card["title"] for card in out["grid"]] == OVERVIEW
    cards = {card["title"]: card for card in out["grid"]}
    assert cards["requests"]["value"] == "1 (n=1)"
    assert cards["requests"]["paths"] == 1
    assert cards["error_rate"]["value"] == "0% (n=1)"
    assert "loading" not in "".join(card["text"] for card in out["grid"])
    assert {"requests", "thumbs_down_rate", "online:"} <= set(out["metricOptions"])
    assert "app" in out["groupOptions"]
    assert out["explore"]["paths"] == 1 and out["explore"]["legend"] == "handbook-rag"

    # 3. traces: the waterfall has a row per span, indented by depth, bars within the track.
    listed = [row[1] for row in out["traces"]]  # newest first: the request, then the ingestion run before it
    assert listed[0] == request_id and len(listed) == 2 and listed[1].startswith("ing_")
    assert out["hash"] == f"trace={request_id}"
    assert [row["name"] for row in out["waterfall"]] == [s["name"] for s in spans]
    assert [row["indent"] for row in out["waterfall"]] == [f"{s['depth'] * 14}px" for s in spans]
    assert out["waterfall"][0]["left"] == "0.00%" and out["waterfall"][0]["width"] == "100.00%"
    for row in out["waterfall"]:
        left, width = float(row["left"].rstrip("%")), float(row["width"].rstrip("%"))
        assert left >= 0 and left + width <= 100.01
    assert [row["error"] for row in out["waterfall"]] == [s["status"] == "error" for s in spans]
    assert out["rootSpan"]["title"] == f"Span: {spans[0]['name']}" and out["rootSpan"]["attributes"] >= 1
    assert out["secondSpan"]["title"] == f"Span: {spans[1]['name']}"
    assert out["secondSpan"]["active"] == [False, False, True] + [False] * (len(spans) - 2)
    assert out["thumbs"]["message"]["error"] is False
    assert out["thumbs"]["feedback"][0][1:] == ["thumbs", "up", "<img src=x onerror=alert(1)>", "", "", "ana"]
    assert out["emptyCorrection"]["error"] is True
    assert "correction feedback needs the corrected answer" in out["emptyCorrection"]["text"]
    assert [row[1] for row in out["traceFeedback"]] == ["correction", "rating", "thumbs"]
    posts = [c for c in out["calls"] if c["method"] == "POST" and c["path"] == "/api/feedback"]
    assert {c["user"] for c in posts} == {"ana"}

    # 4. feedback: all of it, or only the negative (the rating of 2 and the correction), each linking to its trace.
    assert len(out["allFeedback"]) == 3
    assert [row[1] for row in out["negativeFeedback"]] == ["correction", "rating"]
    assert out["feedbackLinks"] == [f"#trace={request_id}"] * 2

    # 2. drift: one request is not enough to test; the page says so. Retrieval health is flattened.
    assert out["driftApps"] == ["handbook-rag"]
    assert out["driftCheck"] == "no check: not enough observed queries yet"
    assert out["driftReports"] == [["no checks yet"]]
    assert {"current.requests", "previous.requests", "index_age_s"} <= {row[0] for row in out["retrieval"]}

    # 5. the loop: the rule fires, its production step waits; approving it as ana runs it; the review is resolved.
    assert out["rules"][0][:3] == ["busy", "requests over 3600s >= 1", "<b>any</b> traffic"]
    assert out["evaluated"] == "fired: busy"
    assert out["firings"][0][1] == "busy" and out["firings"][0][3] == "pending approval"
    assert out["approveButtons"] == 1
    assert out["approved"]["message"]["error"] is False, out["approved"]["message"]
    assert out["approved"]["approveButtons"] == 0
    assert out["reviews"][0][1] == "look at <script>x</script>"
    assert out["resolved"]["message"]["error"] is False, out["resolved"]["message"]
    assert out["resolved"]["reviews"] == [["no review items"]]
    assert out["allReviews"][0][3] == "resolved"
    assert {"prompt-regression", "provider-outage"} <= set(out["runbooks"])
    assert out["runbookMissing"]["error"] is True and "needs model" in out["runbookMissing"]["text"]
    assert out["runbook"]["message"]["error"] is False and out["runbook"]["shown"] is True
    assert out["runbook"]["title"].startswith("runbook provider-outage: firing ")
