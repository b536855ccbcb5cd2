"""The public surface of each package is deliberate: adding or removing an export must change this test."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "llmops": {"ModelConfig", "Platform", "RagConfig", "Settings", "__version__"},
    "llmops.store": {"AuditHook", "Base", "Journal", "Store", "StoreError"},
    "llmops.knowledge": {
        "CachedEmbedder", "Chunk", "Chunker", "ChunkingConfig", "CsvParser", "DocumentProcessor", "DocxParser",
        "Embedder", "EmbeddingCache", "EmbeddingModelMismatchError", "ExactVectorIndex", "FetchError", "FilterError",
        "FixedTokenChunker", "HnswVectorIndex", "HtmlParser", "HttpReranker", "InMemoryEmbeddingCache",
        "IngestBusyError", "IngestReport", "JsonParser", "KeywordIndex", "KnowledgeBase", "LlamaReranker",
        "LocalProcessor", "MarkdownParser", "MetadataFilter", "MiniLMEmbedder", "OpenAICompatibleEmbedder",
        "ParseError", "ParsedDocument", "Parser", "PdfParser", "PgKeywordIndex", "PgVectorIndex",
        "RecursiveTokenChunker", "RerankError", "Reranker", "RetrievalMode", "RetrievedChunk", "Section",
        "SemanticChunker", "SentenceChunker", "SnapshotDiff", "SnapshotError", "SnapshotInfo", "SourceError",
        "TantivyKeywordIndex", "TextParser", "TokenCounter", "VectorIndex", "build_chunker", "clean_text",
        "default_parsers", "apost_json", "fetch_url", "open_indexes",
    },
    "llmops.prompts": {
        "ALLOWED_STAGE_MOVES", "DEFAULT_RAG_PROMPT", "DEFAULT_RAG_PROMPT_NAME", "DEFAULT_RAG_VARIABLES",
        "METRIC_DIRECTIONS", "STAGES", "ApprovalRequiredError", "Approvals", "ChangeRequest", "Comparison",
        "Experiment", "ExperimentSettings", "Experiments", "HistoryEntry", "ModelParams", "Policy", "PromptClient",
        "PromptNotFoundError", "PromptRegistry", "PromptSpec", "PromptTemplateError", "PromptVersion", "PushReport",
        "ReviewRefusedError", "TemplateRenderer", "VersionInfo", "compare", "pull_prompts", "push_prompts",
    },
    "llmops.governance": {
        "ALL_PROJECTS", "DIMENSIONS", "PERMISSIONS", "ROLES", "AccessControl", "AuditLog", "AuditVerification",
        "Identity", "InvalidKeyError", "Lineage", "MaturityReport", "NotReplayableError", "RoleDirectory",
        "assess_maturity", "content_hash", "evidence_pack", "render_evidence_markdown", "render_markdown",
        "render_replay_markdown",
    },
    "llmops.evaluation": {
        "Agreement", "AsyncMetric", "DatasetFileError", "DatasetNotFoundError", "DatasetRegistry", "DatasetVersion",
        "Draft", "EvalAssertion", "EvalConfig", "EvalConfigError", "Evaluator", "Example", "ExperimentComparison",
        "ExperimentNotFoundError", "ExperimentRecord", "ExperimentStore", "GateResult", "ItemResult", "JUDGE_RUBRICS",
        "JudgeMetric", "JudgeRubric", "Metric", "MetricComparison", "MetricConfigError", "MetricDeps", "MetricSpec",
        "MetricSummary", "OnlineEvaluator", "PairwiseJudge", "PairwiseSummary", "PairwiseVerdict", "Progress",
        "QuerySetError", "RelevantPassage", "RetrievalQuery", "RetrievalReport", "RetrievedContext", "Sample",
        "Score", "ScoringContext", "SynthesisReport", "TargetDeps", "TargetError", "TargetSpec", "ThresholdCheck",
        "Verdict", "VerdictParseError", "assert_eval", "build_metric", "compare_experiments", "evaluate_gate",
        "evaluate_retrieval", "examples_from_records", "examples_from_traces", "human_agreement", "judge_agreement",
        "load_eval_config",
        "load_examples", "load_query_set", "metric_names", "paired_comparison", "parse_pairwise_verdict",
        "parse_verdict", "render_html", "render_markdown", "score_samples", "seed_judge_prompts",
        "summarize_pairwise", "synthesize_examples", "write_reports",
    },
    "llmops.gateway": {
        "AnthropicMessagesFormat", "AnthropicProvider", "AuthenticationError", "CachedAnswer", "Caller", "ChatRequest",
        "ChatResult", "CircuitBreaker", "EmbeddingProvider", "EmbeddingResult", "ExactCache", "Finish", "Gateway",
        "HTTPProvider", "InProcessCounters", "InProcessStore", "Ledger", "LimitEnforcer", "LimitExceededError",
        "LocalEmbeddingProvider", "LocalLlamaProvider", "ModelPrice", "OpenAIChatFormat", "OpenAICompatibleProvider",
        "PriceBook", "Provider", "ProviderError", "RedisCounters", "RedisStore", "RepriceReport", "Route", "Router",
        "SemanticCache", "StreamEvent", "TextDelta", "Timeouts", "ToolCallDelta", "UnknownModelError", "Upstream",
        "Usage", "bundled_model_path", "check_base_url", "content_words", "counter_for", "identify",
        "request_complexity",
    },
    "llmops.guardrails": {
        "GuardResult", "GuardrailEngine", "Guardrails", "RailDecision", "RailModels", "StreamGuard", "StreamStep",
        "span_payload", "PII_ENTITY_TYPES", "ClaimVerdict",
        "ContextualDetector", "Detector", "Finding", "GroundingChecker", "GroundingReport",
        "IndirectInjectionDetector", "InjectionDetector", "InsultDetector", "PiiDetector", "PiiLeakageDetector",
        "Pseudonymizer", "SecretDetector", "SpacyNerDetector", "redact", "GuardrailPolicy", "PolicyError",
        "PolicyNotFoundError", "PolicyRegistry", "PolicyVersion", "RailSpec", "default_policy",
    },
    "llmops.rag": {
        "ABSTAIN_ANSWER", "AnswerHook", "Citation", "GuardedGateway", "GuardrailStop", "RagAnswer", "RagPipeline",
        "new_request_id", "PENDING_REVIEW_ANSWER", "AIDisclosure", "AnswerReviews", "AnswerStatus", "HeldAnswer",
        "hold_reasons", "may_hold",
    },
    "llmops.observability": {
        "DIMENSIONS", "METRICS", "REQUEST_ID", "Aggregate", "DriftDetector", "DriftMonitor", "DriftResult",
        "MetricsQuery", "MetricsSpanProcessor", "PlatformMetrics", "StoreSpanProcessor", "TopicCluster",
        "TraceNotFoundError", "TraceReader", "TraceRetention", "Tracing", "UnknownMetricError", "otlp_span_processor",
    },
    "llmops.loop": {
        "ACTIONS", "BUILTIN_RUNBOOKS", "FEEDBACK_KINDS", "Action", "ActionContext", "ActionError", "Feedback",
        "FeedbackClient",
        "FeedbackError", "FeedbackStore", "RequestEventsProcessor", "ReviewQueue", "RuleError", "Runbook",
        "RunbookError", "Step", "TriggerEngine", "TriggerRule", "UnknownRequestError", "load_actions", "load_rules",
        "load_runbooks",
    },
    "llmops.server": {"app_from_settings", "create_app", "tune_garbage_collector", "uvicorn_options"},
    "llmops.cli": {"app", "main"},
    "llmops.testing": {"HashEmbedder", "ScriptedProvider", "make_pdf"},
}  # fmt: skip


@pytest.mark.parametrize("module_name", sorted(EXPECTED))
def test_exports(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == EXPECTED[module_name]
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which does not exist"


def test_importing_llmops_has_no_side_effects(tmp_path: object) -> None:
    import subprocess
    import sys

    # Importing must not create a data folder, open a database or load a model.
    code = "import llmops, os; print(os.path.exists('.llmops'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
