"""Credentials: the encrypted store, the environment fallback, and redaction everywhere a
secret could leak (graph files, exports, events, run results, logs)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import LocalServer, chat_graph, make_engine, run_graph

from flowbuilder.engine import to_jsonable
from flowbuilder.graph import save_graph
from flowbuilder.models import ModelCache
from flowbuilder.providers.config import ProviderConfig
from flowbuilder.registry import Registry
from flowbuilder.secrets import (
    KEY_ENV,
    RedactingFilter,
    SecretError,
    SecretStore,
    generate_key,
    install_log_redaction,
    redact,
)
from flowbuilder.store import Store

pytest_plugins = ["servers"]

FLOWBUILDER = str(Path(sys.executable).parent / "flowbuilder")


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- the store --------------------------------------------------------------------------


def test_store_round_trip_encrypted_at_rest(home: Path) -> None:
    store = SecretStore(home)
    assert store.names() == [] and not (home / "secret.key").exists()
    store.set("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    store.set("OTHER", "other-value-42")
    assert store.get("OPENAI_API_KEY") == "sk-test-0123456789abcdef"
    assert store.names() == ["OPENAI_API_KEY", "OTHER"]
    raw = (home / "secrets.enc").read_bytes()
    assert b"sk-test" not in raw and b"OPENAI_API_KEY" not in raw and b"other-value" not in raw
    assert mode(home / "secrets.enc") == 0o600
    assert mode(home / "secret.key") == 0o600, "the key file is created on first use, 0600"
    # another process (a fresh store object) reads it back
    assert SecretStore(home).get("OTHER") == "other-value-42"
    assert store.delete("OTHER") and not store.delete("OTHER")
    assert SecretStore(home).names() == ["OPENAI_API_KEY"]


def test_two_writers_keep_both_updates(home: Path) -> None:
    a, b = SecretStore(home), SecretStore(home)
    a.set("A_KEY", "value-aaaa")
    b.set("B_KEY", "value-bbbb")
    assert a.names() == ["A_KEY", "B_KEY"]


def test_key_from_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv(KEY_ENV, key)
    SecretStore(home).set("X_KEY", "value-1234")
    assert not (home / "secret.key").exists(), "no key file when the key comes from the env"
    assert SecretStore(home).get("X_KEY") == "value-1234"
    monkeypatch.setenv(KEY_ENV, generate_key())
    with pytest.raises(SecretError, match=f"\\${KEY_ENV} is not the key it was written with"):
        SecretStore(home).names()
    # a passphrase works too (stretched with scrypt)
    other = home.parent / "other"
    monkeypatch.setenv(KEY_ENV, "correct horse battery staple")
    SecretStore(other).set("Y_KEY", "value-5678")
    assert SecretStore(other).get("Y_KEY") == "value-5678"
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(SecretError, match=r"its key file .* is missing"):
        SecretStore(other).names()


def test_bad_names_and_values(home: Path) -> None:
    store = SecretStore(home)
    with pytest.raises(SecretError, match="is not a valid secret name"):
        store.set("has space", "v")
    with pytest.raises(SecretError, match="needs a value"):
        store.set("EMPTY", "")


def test_environment_fallback_and_store_precedence(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SecretStore(home)
    monkeypatch.setenv("OPENAI_API_KEY", "env-key-111111")
    assert store.resolve("OPENAI_API_KEY") == ("env-key-111111", "env")
    store.set("OPENAI_API_KEY", "store-key-222222")
    assert store.resolve("OPENAI_API_KEY") == ("store-key-222222", "store")
    monkeypatch.delenv("OPENAI_API_KEY")
    assert store.resolve("NOT_SET_ANYWHERE") is None


# ---- redaction ------------------------------------------------------------------------------


def test_redact_text_and_logs(
    home: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    SecretStore(home).set("TOKEN", "tok-secret-value-99")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "anthropic-env-value-77")
    assert redact("a tok-secret-value-99 b anthropic-env-value-77") == "a [redacted] b [redacted]"
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("some.library")
    log.debug("header: Bearer %s", "tok-secret-value-99")
    try:
        raise RuntimeError("failed with key anthropic-env-value-77")
    except RuntimeError:
        log.exception("request failed")
    assert "tok-secret-value-99" not in caplog.text
    assert "anthropic-env-value-77" not in caplog.text
    assert "header: Bearer [redacted]" in caplog.text
    assert "RuntimeError: failed with key [redacted]" in caplog.text

    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "v=%s", ("tok-secret-value-99",), None
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == "v=[redacted]"


# ---- end to end: the secret appears nowhere ---------------------------------------------------


@pytest.mark.slow
def test_secret_never_appears_in_files_events_results_or_logs(
    registry: Registry,
    home: Path,
    tmp_path: Path,
    shared_models: ModelCache,
    openai_server: LocalServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Set a key in the store, use it against a server that requires it, then grep the
    saved graph, an export of the outputs, the run's events and result, and every log
    line (at DEBUG, the SDK's and HTTP library's included) for the value."""
    secret = "sk-flowbuilder-test-4f9a2c7e1b"
    SecretStore(home).set("TESTOAI_KEY", secret)
    ProviderConfig(home).add("testoai", f"{openai_server.url}/v1", api_key_secret="TESTOAI_KEY")
    openai_server.state.reset(api_key=secret)
    caplog.set_level(logging.DEBUG)
    engine = make_engine(registry, shared_models)

    graph = chat_graph(registry, "testoai:smollm2", "Say hello.", max_tokens=8)
    graph_file = tmp_path / "flow.json"
    save_graph(graph, graph_file)
    result, events = run_graph(engine, graph)
    assert result.status == "finished", result.error
    assert openai_server.state.requests("/v1/chat/completions")[0].auth == f"Bearer {secret}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        """The CLI as a user runs it: verbose logs, JSON output."""
        return subprocess.run(
            [FLOWBUILDER, "run", str(graph_file), "--json", "--verbose", *args],
            env={**os.environ, "FLOWBUILDER_HOME": str(home), "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )

    out_dir = tmp_path / "export"
    ok = cli("--out", str(out_dir))  # outputs exported to a folder
    assert ok.returncode == 0, ok.stderr
    assert json.loads((out_dir / "outputs.json").read_text())["answer"]

    # a wrong key, which the server echoes back in its 401 message
    wrong = "sk-flowbuilder-wrong-8d3e6a0f"
    SecretStore(home).set("TESTOAI_KEY", wrong)
    failed, failed_events = run_graph(engine, graph)
    assert failed.status == "failed"
    assert "Incorrect API key provided: [redacted]" in (failed.error or "")
    bad = cli()
    assert bad.returncode == 2 and "Incorrect API key provided: [redacted]" in bad.stdout

    def dump(items: list[Any]) -> str:
        return "\n".join(e.model_dump_json() for e in items)

    # the run records, as the server keeps them
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    for run_result, run_events in ((result, events), (failed, failed_events)):
        store.create_run(run_result.run_id, source="api", inputs={})
        recorder = store.recorder(run_result.run_id)
        for event in run_events:
            recorder(event)
        store.save_result(run_result)
    records = [
        json.dumps(store.get_run(r.run_id).model_dump(), default=str)
        + json.dumps([n.model_dump() for n in store.node_runs(r.run_id)], default=str)
        + dump(store.events_after(r.run_id, 0))
        for r in (result, failed)
    ]
    store.close()

    texts = {
        "graph file": graph_file.read_text(),
        "exported outputs": "\n".join(p.read_text() for p in out_dir.iterdir()),
        "events": dump(events) + dump(failed_events),
        "results": json.dumps([to_jsonable(vars(r)) for r in (result, failed)], default=str),
        "logs": caplog.text,
        "cli output": ok.stdout + ok.stderr + bad.stdout + bad.stderr,
        "run records": "\n".join(records),
        "database file": (tmp_path / "runs.db").read_bytes().decode("latin-1"),
    }
    assert "TESTOAI_KEY" not in texts["graph file"], "the default credential is not written"
    for where, text in texts.items():
        assert secret not in text, f"the secret leaked into the {where}"
        assert wrong not in text, f"the wrong key leaked into the {where}"
    assert caplog.text.count("HTTP Request") >= 2, "the HTTP library's log was captured"


@pytest.mark.slow
def test_environment_key_is_used_when_nothing_is_stored(
    registry: Registry,
    home: Path,
    shared_models: ModelCache,
    openai_server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``openai`` pointed at the local server: OPENAI_API_KEY from the environment works,
    and a stored value takes precedence over it."""
    ProviderConfig(home).add("openai", f"{openai_server.url}/v1")
    openai_server.state.reset(api_key="env-openai-key-123456")
    monkeypatch.setenv("OPENAI_API_KEY", "env-openai-key-123456")
    engine = make_engine(registry, shared_models)
    result, _ = run_graph(engine, chat_graph(registry, "openai:smollm2", max_tokens=4))
    assert result.status == "finished", result.error
    body = openai_server.state.requests("/v1/chat/completions")[0].body
    assert body["max_completion_tokens"] == 4, "OpenAI's own API gets max_completion_tokens"
    SecretStore(home).set("OPENAI_API_KEY", "stored-key-abcdef")
    result, _ = run_graph(engine, chat_graph(registry, "openai:smollm2", max_tokens=4))
    assert result.status == "failed"
    assert "rejected the API key" in (result.error or "")
    assert asyncio.iscoroutinefunction(engine.run)
