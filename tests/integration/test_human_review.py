"""Human review end to end on the bundled models, through a real HTTP server: an app that holds every answer gives
its caller a review id and nothing of the answer, a reviewer finds the answer in the queue and releases it, and the
caller then fetches it (with its citations and the AI disclosure); the release is in the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from llmops import Platform, RagConfig, Settings
from llmops._settings import HumanReviewConfig
from llmops.server import create_app

from ..conftest import SAMPLES
from ..helpers import serve_in_thread

pytestmark = [pytest.mark.models, pytest.mark.timeout(900)]

QUESTION = "How many PTO days do new employees get?"
PENDING = "This answer is awaiting review by a person"


def test_a_held_answer_is_released_by_a_reviewer_and_fetched_by_its_caller(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        rag_apps=[RagConfig(max_answer_tokens=60, human_review=HumanReviewConfig(always=True))],
    )
    platform = Platform(settings)
    try:
        platform.knowledge.ingest(SAMPLES)
        with serve_in_thread(create_app(platform)) as base, httpx.Client(base_url=base, timeout=300) as http:
            asked = http.post("/api/ask", json={"question": QUESTION})
            assert asked.status_code == 200, asked.text
            body = asked.json()
            request_id, review_id = body["request_id"], body["review_id"]
            assert body["status"] == "pending_review" and body["answer"].startswith(PENDING)
            assert review_id in body["answer"] and body["citations"] == []
            assert body["ai_disclosure"]["ai_generated"] is True
            assert asked.headers["x-llmops-ai-generated"] == "true"
            assert http.get(f"/api/answers/{request_id}").json()["status"] == "pending_review"

            # The reviewer reads the generated answer in the queue; the caller has seen none of it.
            (item,) = [i for i in http.get("/api/reviews").json() if i["id"] == review_id]
            held = item["details"]["held_answer"]
            generated = held["answer"]
            assert item["kind"] == "answer" and held["request_id"] == request_id and held["reasons"] == ["always"]
            assert generated.strip() and generated not in asked.text and held["citations"]

            # The OpenAI-compatible route of the same app answers with the pending text too.
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
            chat = client.chat.completions.create(
                model="handbook-rag",
                messages=[{"role": "user", "content": QUESTION}],
            )
            assert (chat.choices[0].message.content or "").startswith(PENDING)
            assert (chat.model_extra or {})["status"] == "pending_review"

            released = http.post(
                f"/api/reviews/{review_id}/resolve",
                json={"verdict": "release", "resolution": "matches the PTO policy"},
                headers={"X-LLMOps-User": "dana"},
            )
            assert released.status_code == 200 and released.json()["status"] == "released"

            fetched = http.get(f"/api/answers/{request_id}")
            outcome = fetched.json()
            assert outcome["status"] == "released" and outcome["answer"] == generated
            assert outcome["reviewer"] == "dana" and outcome["decided_at"] and not outcome["edited"]
            assert [c["chunk_id"] for c in outcome["citations"]] == [c["chunk_id"] for c in held["citations"]]
            assert outcome["ai_disclosure"]["notice"] == settings.transparency.disclosure
            assert fetched.headers["x-llmops-ai-generated"] == "true"

            audit = http.get("/api/audit", params={"object_id": request_id}).json()
            assert [(e["actor"], e["action"]) for e in audit] == [("dana", "answer.release")]
            trace = http.get(f"/api/traces/{request_id}").json()
            assert trace["attributes"]["llmops.review.held"] is True
            print(json.dumps({"held_answer": generated, "released_by": outcome["reviewer"]}))
    finally:
        platform.close()
