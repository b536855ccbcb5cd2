"""Evaluation: datasets, metrics, judges, experiments, comparisons with significance, CI gates, online scoring."""

from llmops.evaluation._assertions import EvalAssertion, assert_eval
from llmops.evaluation._compare import compare_experiments, paired_comparison
from llmops.evaluation._config import EvalConfig, EvalConfigError, MetricSpec, TargetSpec, load_eval_config
from llmops.evaluation._dataset_files import DatasetFileError, examples_from_records, load_examples
from llmops.evaluation._datasets import DatasetNotFoundError, DatasetRegistry, DatasetVersion, Draft
from llmops.evaluation._experiments import ExperimentNotFoundError, ExperimentStore
from llmops.evaluation._gate import evaluate_gate
from llmops.evaluation._judge import (
    JUDGE_RUBRICS,
    Agreement,
    JudgeMetric,
    JudgeRubric,
    PairwiseJudge,
    PairwiseSummary,
    PairwiseVerdict,
    human_agreement,
    judge_agreement,
    seed_judge_prompts,
    summarize_pairwise,
)
from llmops.evaluation._metrics import MetricConfigError, build_metric, metric_names
from llmops.evaluation._online import OnlineEvaluator
from llmops.evaluation._report import render_html, render_markdown, write_reports
from llmops.evaluation._results import (
    ExperimentComparison,
    ExperimentRecord,
    GateResult,
    ItemResult,
    MetricComparison,
    MetricSummary,
    ThresholdCheck,
)
from llmops.evaluation._retrieval import (
    QuerySetError,
    RelevantPassage,
    RetrievalQuery,
    RetrievalReport,
    evaluate_retrieval,
    load_query_set,
)
from llmops.evaluation._runner import Evaluator, Progress, score_samples
from llmops.evaluation._synthetic import SynthesisReport, synthesize_examples
from llmops.evaluation._targets import TargetDeps, TargetError
from llmops.evaluation._trace_examples import examples_from_traces
from llmops.evaluation._types import (
    AsyncMetric,
    Example,
    Metric,
    MetricDeps,
    RetrievedContext,
    Sample,
    Score,
    ScoringContext,
)
from llmops.evaluation._verdicts import Verdict, VerdictParseError, parse_pairwise_verdict, parse_verdict

__all__ = [
    "JUDGE_RUBRICS",
    "Agreement",
    "AsyncMetric",
    "DatasetFileError",
    "DatasetNotFoundError",
    "DatasetRegistry",
    "DatasetVersion",
    "Draft",
    "EvalAssertion",
    "EvalConfig",
    "EvalConfigError",
    "Evaluator",
    "Example",
    "ExperimentComparison",
    "ExperimentNotFoundError",
    "ExperimentRecord",
    "ExperimentStore",
    "GateResult",
    "ItemResult",
    "JudgeMetric",
    "JudgeRubric",
    "Metric",
    "MetricComparison",
    "MetricConfigError",
    "MetricDeps",
    "MetricSpec",
    "MetricSummary",
    "OnlineEvaluator",
    "PairwiseJudge",
    "PairwiseSummary",
    "PairwiseVerdict",
    "Progress",
    "QuerySetError",
    "RelevantPassage",
    "RetrievalQuery",
    "RetrievalReport",
    "RetrievedContext",
    "Sample",
    "Score",
    "ScoringContext",
    "SynthesisReport",
    "TargetDeps",
    "TargetError",
    "TargetSpec",
    "ThresholdCheck",
    "Verdict",
    "VerdictParseError",
    "assert_eval",
    "build_metric",
    "compare_experiments",
    "evaluate_gate",
    "evaluate_retrieval",
    "examples_from_records",
    "examples_from_traces",
    "human_agreement",
    "judge_agreement",
    "load_eval_config",
    "load_examples",
    "load_query_set",
    "metric_names",
    "paired_comparison",
    "parse_pairwise_verdict",
    "parse_verdict",
    "render_html",
    "render_markdown",
    "score_samples",
    "seed_judge_prompts",
    "summarize_pairwise",
    "synthesize_examples",
    "write_reports",
]
