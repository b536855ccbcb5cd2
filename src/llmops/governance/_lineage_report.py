"""Lineage as Markdown: an explanation and a replay's differences, for a terminal or a ticket."""

from __future__ import annotations

from typing import Any

__all__ = ["render_markdown", "render_replay_markdown"]


def render_markdown(explanation: dict[str, Any]) -> str:
    """The explanation as Markdown, for a terminal or a ticket."""
    e = explanation
    out = [f"# Request {e['request_id']}", ""]
    out.append(
        f"{e['name'] or e['kind']} · {e['created_at']} · {_ms(e['duration_ms'])} · status {e['status']}"
        + (f" · app {e['app']}" if e["app"] else "")
    )
    if e["spans_sampled_out"]:
        out.append("")
        out.append("> The trace was sampled out: explained from the metrics row and the gateway ledger.")
    caller = {k: v for k, v in e["caller"].items() if v}
    if caller:
        out += ["", "Caller: " + ", ".join(f"{k} {v}" for k, v in caller.items())]
    if e["question"] is not None or e["answer"] is not None:
        out += ["", "## Question and answer (as stored, personal data scrubbed)", ""]
        out += [f"- **Question:** {e['question']}", f"- **Answer:** {e['answer']}"]
    flags = [f for f, on in (("abstained", e["abstained"]), (f"blocked by {e['blocked_by']}", e["blocked_by"])) if on]
    if flags:
        out.append(f"- **Outcome:** {', '.join(flags)}")
    out += _prompt_markdown(e["prompt"])
    out += _retrieval_markdown(e["retrieval"])
    out += _guardrails_markdown(e["guardrails"])
    out += _model_markdown(e["model"], e["usage"], e["gateway_calls"])
    out += ["", "## Evaluation and feedback", ""]
    scores = [
        f"{metric} {_num(score['value'])}" + (f" (error: {score['error']})" if score.get("error") else "")
        for metric, score in e["online_scores"].items()
    ]
    out.append("- Online scores: " + (", ".join(scores) or "none"))
    if e["feedback"]:
        for f in e["feedback"]:
            detail = f["comment"] or f["correction"] or f["flag"] or ""
            value = "" if f["value"] is None else f" {_num(f['value'])}"
            out.append(f"- Feedback {f['kind']}{value} by {f['user'] or 'anonymous'} at {f['created_at']}"
                       + (f": {detail}" if detail else ""))  # fmt: skip
    else:
        out.append("- Feedback: none")
    if e["missing"]:
        out += ["", "## Not known", ""] + [f"- {m}" for m in e["missing"]]
    return "\n".join(out) + "\n"


def _prompt_markdown(prompt: dict[str, Any] | None) -> list[str]:
    out = ["", "## Prompt", ""]
    if prompt is None:
        return [*out, "No prompt was rendered."]
    out.append(
        f"- **{prompt['name']} v{prompt['version']}**" + (f" (label {prompt['label']})" if prompt["label"] else "")
    )
    if not prompt.get("found"):
        return [*out, "- not in the registry"]
    out.append(f"- Author {prompt['author']}, {prompt['created_at']}: {prompt['commit_message'] or '(no message)'}")
    out.append(f"- Content hash `{prompt['content_hash']}`, stage {prompt['stage']}")
    move = prompt.get("label_move")
    if move:
        out.append(
            f"- Put on {move['environment']}/{move['label']} by {move['moved_by']} at {move['moved_at']} "
            f"({move['kind']}{', ' + move['reason'] if move['reason'] else ''})"
        )
        for key in ("change_request", "original_change_request"):
            request = move.get(key)
            if request and request.get("found"):
                approvers = ", ".join(request["approved_by"]) or "nobody"
                policy = request["policy"]["name"] if request["policy"] else "?"
                out.append(
                    f"- Change request #{request['id']} by {request['requested_by']} ({request['status']}), "
                    f"approved by {approvers} under policy {policy}"
                )
    if "experiment" in prompt:
        out.append(f"- Served by experiment {prompt['experiment']['id']} (variant v{prompt['experiment']['variant']})")
    return out


def _retrieval_markdown(retrieval: dict[str, Any]) -> list[str]:
    out = ["", "## Retrieval", ""]
    snapshot = retrieval["snapshot"]
    info = retrieval["snapshot_info"]
    where = f"index snapshot {snapshot}" if snapshot is not None else "no index snapshot recorded"
    if info:
        where += f" ({info['kind']} of {info['created_at']}, {info['documents']} documents, {info['chunks']} chunks)"
    out.append(f"- {where}")
    if retrieval["mode"]:
        out.append(
            f"- {retrieval['mode']} search, top {retrieval['top_k']}, similarity floor {retrieval['min_similarity']}: "
            f"{retrieval['hits']} hit(s)"
        )
    if retrieval["chunks"]:
        out += ["", "| # | score | cited | source | section | preview |", "|---|---|---|---|---|---|"]
        for c in retrieval["chunks"]:
            if not c["found"]:
                out.append(f"| {c['rank']} | {_num(c['score'])} | | (chunk {c['chunk_id']} gone) | | |")
                continue
            section = c["heading"] or (f"page {c['page']}" if c["page"] else "")
            preview = " ".join(c["preview"].split()).replace("|", "\\|")[:120]
            cited = "yes" if c["cited"] else ("dropped" if c["dropped_by_guardrails"] else "")
            out.append(f"| {c['rank']} | {_num(c['score'])} | {cited} | {c['source']} | {section} | {preview} |")
    return out


def _guardrails_markdown(guardrails: dict[str, Any]) -> list[str]:
    out = ["", "## Guardrails", ""]
    out.append(f"- Policy {guardrails['policy'] or 'unknown'}" + (
        f", blocked by {guardrails['blocked_by']}" if guardrails["blocked_by"] else ""))  # fmt: skip
    if guardrails["grounding_score"] is not None:
        out.append(f"- Grounding score {_num(guardrails['grounding_score'])}")
    if guardrails["decisions"]:
        out += ["", "| stage | rail | action | score | reason |", "|---|---|---|---|---|"]
        for d in guardrails["decisions"]:
            reason = str(d["reason"] or "").replace("|", "\\|")
            out.append(f"| {d['stage']} | {d['rail']} | {d['action']} | {_num(d['score'])} | {reason} |")
    elif guardrails["rails_acted"]:
        out.append(f"- Rails that acted: {', '.join(guardrails['rails_acted'])}")
    return out


def _model_markdown(model: dict[str, Any], usage: dict[str, Any], ledger: list[dict[str, Any]]) -> list[str]:
    out = ["", "## Model, tokens and cost", ""]
    if not model["alias"]:
        return [*out, "No model was called."]
    served = f" served by {model['served_by']}" if model["served_by"] != model["alias"] else ""
    out.append(f"- {model['alias']}{served} → {model['upstream_model'] or '?'} ({model['provider'] or '?'})"
               + (f", answered as {model['response_model']}" if model["response_model"] else ""))  # fmt: skip
    params = {k: v for k, v in model["parameters"].items() if v is not None}
    if params:
        out.append("- Parameters: " + ", ".join(f"{k} {v}" for k, v in params.items()))
    out.append(
        f"- Tokens {usage['input_tokens']} in + {usage['output_tokens']} out, cost ${usage['cost_usd']:.6f}"
        + (f" (price book {', '.join(usage['price_books'])})" if usage["price_books"] else "")
    )
    for call in ledger:
        who = ", ".join(f"{k} {call[k]}" for k in ("key_name", "user", "team", "app") if call[k])
        out.append(f"- Ledger {call['id']}: {call['status']}, {call['attempts']} attempt(s)"
                   + (f", fallbacks {', '.join(call['fallbacks'])}" if call["fallbacks"] else "")
                   + (f", {who}" if who else "") + f" (matched by {call['matched_by']})")  # fmt: skip
    return out


def render_replay_markdown(result: dict[str, Any]) -> str:
    """A replay's comparison as Markdown."""
    before, after, diff = result["original"], result["replay"], result["diff"]
    out = [f"# Replay of {before['request_id']} as {after['request_id']}", ""]
    out.append(f"Question: {result['question']}")
    out.append("Pinned: " + ", ".join(f"{k} {v}" for k, v in result["pinned"].items()))
    out += ["", "| | original | replay |", "|---|---|---|"]
    for key in ("prompt_version", "index_snapshot", "model", "response_model", "guardrail_policy", "blocked_by"):
        out.append(f"| {key} | {before[key]} | {after[key]} |")
    out += [
        "",
        "Same answer." if diff["same_answer"] else "The answer changed:",
    ]
    if not diff["same_answer"]:
        out += ["", "```diff", *diff["answer"], "```"]
    if diff["chunks_added"] or diff["chunks_removed"]:
        out.append(f"Chunks added: {', '.join(diff['chunks_added']) or 'none'}; "
                   f"removed: {', '.join(diff['chunks_removed']) or 'none'}")  # fmt: skip
    else:
        out.append("Same chunks retrieved.")
    return "\n".join(out) + "\n"


def _ms(value: float | None) -> str:
    return f"{value:.0f} ms" if isinstance(value, int | float) else "? ms"


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
