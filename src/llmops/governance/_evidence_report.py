"""The EU AI Act evidence pack as Markdown (see `evidence_pack` for what each section holds)."""

from __future__ import annotations

from typing import Any

__all__ = ["render_evidence_markdown"]


def render_evidence_markdown(pack: dict[str, Any]) -> str:
    """The pack as a Markdown document: one section per duty group, tables for the inventories."""
    out: list[str] = [
        f"# {pack['title']}",
        "",
        f"Generated {pack['generated_at']} by llmops {pack['platform_version']} (environment `{pack['environment']}`).",
        "",
        f"> {pack['disclaimer']}",
        "",
        "## Duties and where their evidence is",
        "",
        *_table(
            ["article", "duty", "sections"],
            [[d["article"], d["duty"], ", ".join(d["sections"])] for d in pack["duties"]],
        ),
    ]
    for render in (
        _md_models,
        _md_prompts,
        _md_knowledge,
        _md_changes,
        _md_records,
        _md_transparency,
        _md_oversight,
        _md_guardrails,
        _md_evaluation,
        _md_incidents,
        _md_retention,
        _md_maturity,
    ):
        out += ["", *render(pack)]
    return "\n".join(out).rstrip() + "\n"


def _md_models(pack: dict[str, Any]) -> list[str]:
    inv = pack["model_inventory"]
    rows = []
    for m in inv["models"]:
        price = m["price_per_mtok"]
        priced = f"${price['input']:g} in / ${price['output']:g} out ({price['source']})" if price else "-"
        rows.append(
            [
                m["alias"],
                m["kind"],
                m["provider"],
                m["upstream_model"],
                priced,
                m["usage"]["calls"],
                f"${m['usage']['cost_usd']:.4f}",
            ]
        )
    lines = [
        "## Model inventory (Art. 11, 13)",
        "",
        f"Price book `{inv['price_book']}`.",
        "",
        *_table(["alias", "kind", "provider", "upstream model", "price per Mtok", "calls", "spend"], rows),
    ]
    if inv["routers"]:
        lines += ["", "Routers:", ""] + [
            f"- `{r['name']}`: {r['policy']} over {', '.join(r.get('candidates', []))}" for r in inv["routers"]
        ]
    lines += [
        "",
        *_table(
            ["RAG app", "model", "prompt", "retrieval", "top k", "reranker", "snapshot", "online eval"],
            [
                [
                    a["name"],
                    a["model"],
                    f"{a['prompt']} @ {a['prompt_version'] or a['prompt_label']}",
                    a["retrieval"],
                    a["top_k"],
                    a["reranker"] or "-",
                    a["index_snapshot"] or "newest",
                    f"{a['online_eval_rate']:.0%}",
                ]
                for a in inv["rag_apps"]
            ],
        ),
    ]
    return lines


def _md_prompts(pack: dict[str, Any]) -> list[str]:
    lines = ["## Prompt inventory (Art. 11, 12)", ""]
    for prompt in pack["prompt_inventory"]:
        lines += [
            f"### {prompt['name']}",
            "",
            f"{prompt['description'] or '(no description)'} Owners (authors of its versions): "
            f"{', '.join(prompt['owners']) or '-'}; {prompt['label_moves']} label moves.",
            "",
            *_table(
                ["version", "author", "created", "stage", "labels", "message", "content hash"],
                [
                    [
                        v["version"],
                        v["author"],
                        v["created_at"][:19],
                        v["stage"],
                        ", ".join(v["labels"]) or "-",
                        v["commit_message"],
                        v["content_hash"][:12],
                    ]
                    for v in prompt["versions"]
                ],
            ),
            "",
            *_table(
                ["environment", "label", "version", "moved last by", "at"],
                [
                    [x["environment"], x["label"], x["version"], x["moved_by"], x["moved_at"][:19]]
                    for x in prompt["labels"]
                ],
            ),
            "",
        ]
    return lines


def _md_knowledge(pack: dict[str, Any]) -> list[str]:
    k = pack["knowledge"]
    return [
        "## Knowledge sources and index snapshots (Art. 10, 11)",
        "",
        f"Sources: {len(k['sources'])}; documents: {k['documents']}; pinned snapshots: {k['pinned'] or 'none'}.",
        "",
        *_table(
            ["source", "kind", "registered"],
            [[s["location"], s["kind"], s["registered_at"][:19]] for s in k["sources"]],
        ),
        "",
        *_table(
            ["snapshot", "kind", "status", "created", "documents", "chunks", "embedding model"],
            [
                [
                    s["id"],
                    s["kind"],
                    s["status"],
                    s["created_at"][:19],
                    s["documents"],
                    s["chunks"],
                    s["embedding_model"],
                ]
                for s in k["snapshots"]
            ],
        ),
    ]


def _md_changes(pack: dict[str, Any]) -> list[str]:
    audit = pack["change_history"]["audit_log"]
    check = audit["verification"]
    verdict = (
        f"verifies intact over {check['entries']} entries"
        if check["ok"]
        else f"is BROKEN at entry {check['first_bad_seq']}: {check['problem']}"
    )
    return [
        "## Change history (Art. 12)",
        "",
        f"The hash-chained audit log holds {audit['entries']} entries ({audit['first_at'] or '-'} to "
        f"{audit['last_at'] or '-'}); its chain {verdict}. Prompt label moves and rollbacks: "
        f"{pack['change_history']['prompt_label_moves']}.",
        "",
        *_table(["action", "entries"], [[a, n] for a, n in audit["by_action"].items()]),
        "",
        *_table(["actor", "entries"], [[a, n] for a, n in audit["by_actor"].items()]),
        "",
        f"Latest {len(audit['recent'])} entries:",
        "",
        *_table(
            ["seq", "at", "actor", "action", "object"],
            [[e["seq"], e["at"][:19], e["actor"], e["action"], e["object"]] for e in audit["recent"]],
        ),
    ]


def _md_records(pack: dict[str, Any]) -> list[str]:
    r = pack["record_keeping"]
    return [
        "## Record-keeping and logging (Art. 12)",
        "",
        f"- Requests logged: {r['requests_logged']} ({_pairs(r['requests_by_kind']) or 'none'}), from "
        f"{r['first_request_at'] or '-'} to {r['last_request_at'] or '-'}; traces stored: {r['traces_stored']}.",
        f"- Per request: {r['per_request_record']}.",
        f"- Trace sampling: {r['sample_rate']:.0%} of successful requests keep their spans; {r['always_kept']}.",
        f"- Gateway call ledger: {r['gateway_calls']} calls; audit entries: {r['audit_entries']}; feedback: "
        f"{r['feedback']}.",
        f"- Questions and answers on traces: {'yes' if r['question_and_answer_on_traces'] else 'no'}; "
        f"{r['personal_data']}.",
        f"- OTLP export: {r['otlp_export'] or 'off'}.",
    ]


def _md_transparency(pack: dict[str, Any]) -> list[str]:
    t = pack["transparency"]
    return [
        "## Transparency (Art. 13)",
        "",
        *_table(
            [
                "application",
                "model (upstream)",
                "prompt",
                "guardrail policy",
                "citations",
                "abstention",
                "held for a person",
            ],
            [
                [
                    a["name"],
                    f"{a['model']} ({a['upstream_model']}, {a['provider']})",
                    a["prompt"],
                    a["guardrail_policy"],
                    a["citations"],
                    a["abstention"],
                    a["human_review"],
                ]
                for a in t["applications"]
            ],
        ),
        "",
        f"Served models: {', '.join(t['served_models'])}. Each answer carries: {', '.join(t['each_answer_carries'])}.",
        "",
        f'AI disclosure sent with every answer (Art. 50): "{t["ai_disclosure"]}"',
    ]


def _md_oversight(pack: dict[str, Any]) -> list[str]:
    h = pack["human_oversight"]
    return [
        "## Human oversight (Art. 14)",
        "",
        f"Approvers (approver or admin role): {', '.join(h['approvers']) or 'none'}.",
        "",
        *_table(
            ["user", "role", "project", "granted by", "at"],
            [[g["user"], g["role"], g["project"], g["granted_by"], g["granted_at"][:19]] for g in h["roles"]],
        ),
        "",
        f"Access: API keys {'required' if h['access_control']['keys_required'] else 'not required (local use)'}; "
        f"projects: {', '.join(h['access_control']['projects'])}; keys: "
        f"{_pairs(h['access_control']['api_keys']) or 'none'}.",
        "",
        "Protected labels:",
        "",
        *_table(
            ["policy", "prompt", "environment/label", "approvals", "required check", "set by"],
            [
                [
                    x["name"],
                    x["prompt"],
                    f"{x['environment']}/{x['label']}",
                    x["required_approvals"],
                    x["required_check"] or "-",
                    x["created_by"],
                ]
                for x in h["protected_labels"]
            ],
        ),
        "",
        f"Change requests: {_pairs(h['change_requests']['by_status']) or 'none'}.",
        "",
        *_table(
            ["request", "prompt", "change", "requested by", "status", "reviews"],
            [
                [c["id"], c["prompt"], c["target"], c["requested_by"], c["status"], ", ".join(c["reviews"]) or "-"]
                for c in h["change_requests"]["recent"]
            ],
        ),
        "",
        "Trigger rules:",
        "",
        *_table(
            ["rule", "when", "actions", "changes production", "approval", "enabled"],
            [
                [
                    r["name"],
                    r["when"],
                    ", ".join(r["actions"]),
                    _yes(r["changes_production"]),
                    _yes(r["approval"]),
                    _yes(r["enabled"]),
                ]
                for r in h["trigger_rules"]
            ],
        ),
        "",
        f"Firings waiting for approval: {h['firings_waiting_for_approval']}; automated actions decided by people: "
        f"{len(h['automated_actions_decided_by_people'])}; review queue: {_pairs(h['review_queue']) or 'empty'}; "
        f"answers held for a person: {_pairs(h['answers_held_for_review']) or 'none'}; "
        f"dataset drafts waiting for review: {h['dataset_drafts_waiting_for_review']}.",
    ]


def _md_guardrails(pack: dict[str, Any]) -> list[str]:
    g = pack["guardrails"]
    rows = []
    for route in g["routes"]:
        rails = "; ".join(
            f"{stage}: " + ", ".join(_rail(r) for r in specs) for stage, specs in route["rails"].items() if specs
        )
        policy = "unguarded" if route["policy"] is None else f"{route['policy']} v{route['version']}"
        if route["problem"]:
            policy = f"{route['policy']} (MISSING: {route['problem']})"
        rows.append([route["route"], policy, route["author"] or "-", rails or "-"])
    return [
        "## Guardrail policies in force (Art. 9, 15)",
        "",
        f"Routes follow the label `{g['label_followed']}` in `{g['environment']}`.",
        "",
        *_table(["route", "policy", "author", "rails (action, threshold)"], rows),
        "",
        *_table(
            ["policy", "versions", "authors"],
            [[x["name"], x["versions"], ", ".join(x["authors"])] for x in g["policies"]],
        ),
    ]


def _md_evaluation(pack: dict[str, Any]) -> list[str]:
    e = pack["evaluation"]
    rows = []
    for x in e["experiments"]:
        metrics = ", ".join(
            f"{m} {v['mean']:.3f}" if v["mean"] is not None else f"{m} -" for m, v in x["metrics"].items()
        )
        gate = x["gate"]
        verdict = "-" if gate is None else f"{gate['check']} {'passed' if gate['passed'] else 'FAILED'}"
        rows.append(
            [x["name"], x["dataset"], x["pinned"]["prompt"] or "-", x["status"], metrics, f"{x['errors']}", verdict]
        )
    return [
        "## Evaluation results (Art. 9, 15)",
        "",
        *_table(
            ["dataset", "version", "items", "origin", "author"],
            [[d["dataset"], d["version"], d["items"], d["origin"], d["author"]] for d in e["datasets"]],
        ),
        "",
        "Latest experiments:",
        "",
        *_table(["experiment", "dataset", "prompt", "status", "metric means", "errors", "gate"], rows),
        "",
        "Gate results recorded on prompt versions:",
        "",
        *_table(
            ["prompt", "version", "check", "result", "recorded by", "at"],
            [
                [
                    c["prompt"],
                    c["version"],
                    c["check"],
                    "passed" if c["passed"] else "FAILED",
                    c["recorded_by"],
                    c["at"][:19],
                ]
                for c in e["gate_results"]
            ],
        ),
        "",
        "Online evaluation of production answers:",
        "",
        *_table(
            ["app", "metric", "scores", "mean"],
            [
                [o["app"], o["metric"], o["count"], f"{o['mean']:.3f}" if o["mean"] is not None else "-"]
                for o in e["online_scores"]
            ],
        ),
    ]


def _md_incidents(pack: dict[str, Any]) -> list[str]:
    i = pack["incidents"]
    totals = i["requests"]
    return [
        "## Incidents and monitoring (Art. 26(5), 72, 73)",
        "",
        f"Over {totals['requests']} retained requests: {totals['errors']} errors, {totals['blocked']} blocked by a "
        f"guardrail, rails acted {totals['guardrail_triggers']} times, {totals['pii_incidents']} personal-data "
        f"findings. Drift tests: {i['drift_tests']['run']} run, {i['drift_tests']['drifted']} drifted. Negative "
        f"feedback: {_pairs(i['negative_feedback']) or 'none'}.",
        "",
        *_table(
            ["app", "requests", "errors", "blocked", "rail actions", "PII findings"],
            [
                [a["app"], a["requests"], a["errors"], a["blocked"], a["guardrail_triggers"], a["pii_incidents"]]
                for a in i["by_app"]
            ],
        ),
        "",
        f"Trigger firings: {_pairs(i['trigger_firings']['by_status']) or 'none'}.",
        "",
        *_table(
            ["firing", "rule", "at", "status", "actor", "actions"],
            [
                [f["id"], f["rule"], f["at"][:19], f["status"], f["actor"], "; ".join(f["actions"])]
                for f in i["trigger_firings"]["recent"]
            ],
        ),
        "",
        f"Review items: {_pairs(i['review_items']['by_status']) or 'none'}.",
        *(
            [""] + [f"- open: {x['title']} ({x['id']}, since {x['opened_at'][:19]})" for x in i["review_items"]["open"]]
            if i["review_items"]["open"]
            else []
        ),
    ]


def _md_retention(pack: dict[str, Any]) -> list[str]:
    r = pack["retention"]
    rows = [
        [
            scope,
            f"{t['max_age_days']:g} days" if t["max_age_days"] is not None else "no limit",
            f"{t['max_traces']:,}" if t["max_traces"] is not None else "no limit",
            _yes(t["meets_six_months"]),
        ]
        for scope, t in r["traces_and_request_metrics"].items()
    ]
    others = [(k, v) for k, v in r.items() if k not in ("traces_and_request_metrics", "findings")]
    return [
        "## Retention (Art. 19, 26(6))",
        "",
        *_table(["traces and request metrics of", "max age", "max traces", "six months or more"], rows),
        "",
        *[f"- {k.replace('_', ' ')}: {v}" for k, v in others],
        *([""] + [f"- Finding: {f}" for f in r["findings"]] if r["findings"] else []),
    ]


def _md_maturity(pack: dict[str, Any]) -> list[str]:
    dims = pack["maturity"]["dimensions"]
    return [
        "## Maturity",
        "",
        *_table(
            ["dimension", "level", "next step"],
            [[d["name"], d["level"], d["next_steps"][0] if d["next_steps"] else "-"] for d in dims],
        ),
    ]


def _rail(spec: dict[str, Any]) -> str:
    details = [str(spec.get("action", ""))]
    for key in ("threshold", "max_chars", "max_requests"):
        if key in spec:
            details.append(f"{key} {spec[key]}")
    return f"{spec.get('rail')} ({', '.join(d for d in details if d)})"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["(none)"]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows),
    ]


def _cell(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _pairs(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
