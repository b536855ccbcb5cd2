"""Gateway overhead: the latency a gateway adds in front of an upstream, and its throughput, next to LiteLLM's proxy.

All on loopback, in the same run: a mock OpenAI-compatible upstream (a bare asyncio protocol on uvloop), then wrk
against the upstream directly, against `llmops up` (tracing and cost accounting on, response cache off, guardrails
off, as LiteLLM's proxy has none), against `llmops up` with its default guardrail policy on (``llmops+rails``: injection
check on the message, PII leakage, insults and system-prompt overlap on the answer) and against LiteLLM's proxy
(installed only in this benchmark's own virtualenv, bench/.venv-litellm, created on first use). Added latency
is the gateway's percentile minus the direct percentile at the same concurrency. Every request is identical and
non-streamed; both gateways ask the upstream for a non-streamed answer.

    .venv/bin/python bench/gateway_overhead.py [--seconds 10] [--workers 1] [--skip-litellm] [--skip-rails]

Needs wrk (Debian package `wrk`). Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
LITELLM_VENV = HERE / ".venv-litellm"
BODY = '{"model":"mock","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
# LiteLLM's proxy refuses to start without a master key; every target gets the same header, so requests are equal.
MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
LEVELS = (1, 16, 64)

# The upstream stands in for a model server on another machine, so it should cost this machine as little as it can:
# a bare asyncio protocol on uvloop that answers each request (keep-alive, Content-Length bodies) with one fixed
# response, ~10x less CPU per request than a uvicorn ASGI app (which left less of the two cores to the gateways).
MOCK = """
import asyncio, sys, orjson, uvloop
JSON = orjson.dumps({"id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": "mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}})
HEAD = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n"
RESPONSE = HEAD % len(JSON) + JSON

class Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        buffer, answers = self.buffer + data, 0
        while (end := buffer.find(b"\\r\\n\\r\\n")) >= 0:
            head = buffer[:end].lower()
            if b"transfer-encoding" in head:
                self.transport.close()  # the gateways send Content-Length bodies; anything else is a bench bug
                return
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\\r\\n", 1)[0]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            buffer, answers = buffer[end + 4 + length:], answers + 1
        self.buffer = buffer
        if answers:
            self.transport.write(RESPONSE * answers)

async def main():
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await server.serve_forever()

uvloop.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{url} did not come up")


def start(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, concurrency: int, seconds: float, script: Path) -> dict[str, float]:
    """p50/p99 latency in ms and requests per second, from wrk's latency distribution."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    figures = {}
    for percentile in ("50", "99"):
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        figures[f"p{percentile}_ms"] = float(match.group(1)) * _UNITS[match.group(2)]
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert rate, out
    figures["rps"] = float(rate.group(1))
    figures["errors"] = float(errors.group(1)) if errors else 0.0
    return figures


def measure(name: str, url: str, seconds: float, script: Path) -> dict[int, dict[str, float]]:
    wrk(url, 4, 2, script)  # warm up: connections, caches, lazy imports
    results = {}
    for concurrency in LEVELS:
        results[concurrency] = wrk(url, concurrency, seconds, script)
        print(f"  {name} c={concurrency}: {results[concurrency]}", file=sys.stderr)
    return results


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        subprocess.run([PYTHON, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1, help="llmops server processes")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--skip-rails", action="store_true", help="skip `llmops up` with its default guardrail policy")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="llmops-gateway-bench-"))
    (work / "mock_upstream.py").write_text(MOCK)
    script = work / "post.lua"
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{BODY}'\nwrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['Authorization'] = 'Bearer {MASTER_KEY}'\n"
    )
    upstream_port, llmops_port, litellm_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    config = (
        "rag_apps: []\n"
        f"models:\n  - {{name: mock, provider: openai-compatible, model: mock, base_url: '{upstream}',"
        " input_price_per_mtok: 0.15, output_price_per_mtok: 0.6}\n"
        "gateway: {cache: false}\n"
    )
    (work / "llmops.yaml").write_text(config + "guardrails: {policies: {'*': none}}\n")
    (work / "llmops-rails.yaml").write_text(config)
    (work / "litellm.yaml").write_text(
        "model_list:\n  - model_name: mock\n    litellm_params:\n"
        f"      model: openai/mock\n      api_base: {upstream}\n      api_key: sk-mock\n"
    )
    processes = []
    results: dict[str, dict[int, dict[str, float]]] = {}
    try:
        mock = start([PYTHON, "mock_upstream.py", str(upstream_port)], cwd=work)
        processes.append(mock)
        wait_http(f"http://127.0.0.1:{upstream_port}/")
        results["direct"] = measure("direct", f"{upstream}/chat/completions", args.seconds, script)

        targets = [("llmops", "llmops.yaml")] + ([] if args.skip_rails else [("llmops+rails", "llmops-rails.yaml")])
        for name, config_file in targets:
            env = {"LLMOPS_CONFIG": str(work / config_file), "LLMOPS_DATA_DIR": str(work / f"data-{config_file}"),
                   "LLMOPS_PORT": str(llmops_port)}  # fmt: skip
            gateway = start([str(Path(PYTHON).with_name("llmops")), "up", "--workers", str(args.workers)], env=env)
            processes.append(gateway)
            wait_http(f"http://127.0.0.1:{llmops_port}/healthz")
            results[name] = measure(name, f"http://127.0.0.1:{llmops_port}/v1/chat/completions", args.seconds, script)
            stop(gateway)
            processes.remove(gateway)

        if not args.skip_litellm:
            binary = ensure_litellm()
            proxy = start([str(binary), "--config", str(work / "litellm.yaml"), "--port", str(litellm_port),
                           "--num_workers", str(args.workers)],
                          env={"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
                               "LITELLM_MASTER_KEY": MASTER_KEY})  # fmt: skip
            processes.append(proxy)
            wait_http(f"http://127.0.0.1:{litellm_port}/health/liveliness", timeout=300)
            results["litellm"] = measure("litellm", f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                                         args.seconds, script)  # fmt: skip
    finally:
        for process in processes:
            stop(process)

    direct = results["direct"]

    def added(name: str, level: int, key: str) -> float:
        return round(max(0.0, results[name][level][key] - direct[level][key]), 3)

    print(f"\ngateway overhead on loopback, {args.seconds:g} s per level, llmops workers={args.workers}\n")
    print(f"{'':<13}{'c':>4}{'p50 ms':>10}{'p99 ms':>10}{'added p50':>11}{'added p99':>11}{'req/s':>10}{'errors':>8}")
    for name, levels in results.items():
        for level, f in levels.items():
            extra = (
                ("", "")
                if name == "direct"
                else (f"{added(name, level, 'p50_ms'):.3f}", f"{added(name, level, 'p99_ms'):.3f}")
            )
            print(f"{name:<13}{level:>4}{f['p50_ms']:>10.3f}{f['p99_ms']:>10.3f}{extra[0]:>11}{extra[1]:>11}"
                  f"{f['rps']:>10.0f}{f['errors']:>8.0f}")  # fmt: skip
    figures: dict[str, float | int | None] = {"workers": args.workers, "seconds_per_level": args.seconds}
    for name in ("llmops", "llmops+rails", "litellm"):
        if name not in results:
            continue
        prefix = {"llmops": "", "llmops+rails": "rails_", "litellm": "litellm_"}[name]
        for level in LEVELS:
            figures[f"{prefix}added_p50_ms_c{level}"] = added(name, level, "p50_ms")
            figures[f"{prefix}added_p99_ms_c{level}"] = added(name, level, "p99_ms")
        figures[f"{prefix}throughput_rps"] = round(max(f["rps"] for f in results[name].values()), 1)
    figures["direct_throughput_rps"] = round(max(f["rps"] for f in direct.values()), 1)
    if "litellm" in results:
        for level in LEVELS:
            ours = max(float(figures[f"added_p99_ms_c{level}"] or 0.0), 0.001)
            theirs = figures[f"litellm_added_p99_ms_c{level}"] or 0.0
            figures[f"litellm_to_llmops_added_p99_ratio_c{level}"] = round(float(theirs) / float(ours), 1)
            ours50 = max(float(figures[f"added_p50_ms_c{level}"] or 0.0), 0.001)
            figures[f"litellm_to_llmops_added_p50_ratio_c{level}"] = round(
                float(figures[f"litellm_added_p50_ms_c{level}"] or 0.0) / float(ours50), 1
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
