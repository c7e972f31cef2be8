"""``flowbuilder secrets``, ``providers`` and ``models`` as a user runs them (a real
subprocess with its own FLOWBUILDER_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from servers import LocalServer

from flowbuilder.bundled import BUNDLED
from flowbuilder.providers.catalog import gguf_header
from flowbuilder.secrets import KEY_ENV, SecretStore

pytest_plugins = ["servers"]

FLOWBUILDER = str(Path(sys.executable).parent / "flowbuilder")


def fb(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env.update(FLOWBUILDER_HOME=str(home), HF_HUB_OFFLINE="1", COLUMNS="200")
    return subprocess.run(
        [FLOWBUILDER, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_secrets_set_list_delete(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = fb(home, "secrets", "set", "OPENAI_API_KEY", stdin="sk-from-stdin-123456\n")
    assert done.returncode == 0, done.stderr
    other = fb(home, "secrets", "set", "OTHER_KEY", "--value", "other-999999", "--for", "vllm,ai")
    assert other.returncode == 0 and "may be sent to ai, vllm" in other.stderr, other.stderr
    assert SecretStore(home).get("OPENAI_API_KEY") == "sk-from-stdin-123456"
    listed = fb(home, "secrets", "list")
    assert listed.stdout.split() == [
        "OPENAI_API_KEY",
        "(no",
        "scope)",
        "OTHER_KEY",
        "→",
        "ai,",
        "vllm",
    ]
    as_json = json.loads(fb(home, "secrets", "list", "--json").stdout)
    assert as_json == [
        {"name": "OPENAI_API_KEY", "source": "store", "scope": None},
        {"name": "OTHER_KEY", "source": "store", "scope": ["ai", "vllm"]},
    ]
    # a new value keeps the scope; `secrets scope` changes or clears it
    assert fb(home, "secrets", "set", "OTHER_KEY", "--value", "other-888888").returncode == 0
    assert SecretStore(home).scope("OTHER_KEY") == ("ai", "vllm")
    assert fb(home, "secrets", "scope", "OTHER_KEY", "--for", "openai").returncode == 0
    assert SecretStore(home).scope("OTHER_KEY") == ("openai",)
    assert fb(home, "secrets", "scope", "OTHER_KEY", "--clear").returncode == 0
    assert SecretStore(home).scope("OTHER_KEY") is None
    for args, message in (
        (("scope", "NOPE", "--for", "openai"), "no stored secret named 'NOPE'"),
        (("scope", "OTHER_KEY"), "give either --for ENDPOINTS or --clear"),
        (("scope", "OTHER_KEY", "--for", "Bad Name"), "cannot name an endpoint"),
        (("set", "X_KEY", "--value", "v1234", "--for", ","), "names at least one endpoint"),
    ):
        proc = fb(home, "secrets", *args)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    every_output = "".join(
        p.stdout + p.stderr for p in (done, listed, fb(home, "secrets", "list", "--json"))
    )
    assert "sk-from-stdin" not in every_output and "other-999999" not in every_output
    assert fb(home, "secrets", "delete", "OTHER_KEY").returncode == 0
    missing = fb(home, "secrets", "delete", "OTHER_KEY")
    assert missing.returncode == 1 and "no stored secret named 'OTHER_KEY'" in missing.stderr
    bad = fb(home, "secrets", "set", "bad name", "--value", "x")
    assert bad.returncode == 1 and "is not a valid secret name" in bad.stderr
    key = fb(home, "secrets", "keygen").stdout.strip()
    assert len(key) == 44


def test_providers_add_list_remove(tmp_path: Path) -> None:
    home = tmp_path / "home"
    added = fb(
        home,
        "providers",
        "add-endpoint",
        "lmstudio",
        "http://127.0.0.1:1234/v1",
        "--api-key-secret",
        "LMSTUDIO_KEY",
    )
    assert added.returncode == 0, added.stderr
    assert "use it as lmstudio:MODEL" in added.stderr
    rows = {r["name"]: r for r in json.loads(fb(home, "providers", "list", "--json").stdout)}
    assert set(rows) >= {"local", "openai", "anthropic", "ollama", "lmstudio"}
    assert rows["lmstudio"]["base_url"] == "http://127.0.0.1:1234/v1"
    assert rows["lmstudio"]["credential_state"] == "LMSTUDIO_KEY (not set)"
    assert rows["lmstudio"]["source"] == "configured"
    assert rows["ollama"]["base_url"] == "http://127.0.0.1:11434/v1"
    assert "claude-sonnet-4-5" in rows["anthropic"]["suggested_models"]
    saved = json.loads((home / "providers.json").read_text())
    assert saved["endpoints"]["lmstudio"] == {
        "kind": "openai_compatible",
        "base_url": "http://127.0.0.1:1234/v1",
        "api_key_secret": "LMSTUDIO_KEY",
    }
    table = fb(home, "providers", "list").stdout
    assert "lmstudio" in table and "LMSTUDIO_KEY (not set)" in table
    # written private; a file other users may write is not trusted
    assert (home / "providers.json").stat().st_mode & 0o777 == 0o600
    (home / "providers.json").chmod(0o666)
    loose = fb(home, "providers", "list")
    assert loose.returncode == 1 and "may be written by other users (mode 666)" in loose.stderr
    assert str(home) not in loose.stderr, "the message names FLOWBUILDER_HOME, not the path"
    (home / "providers.json").chmod(0o600)
    assert fb(home, "providers", "remove", "lmstudio").returncode == 0
    again = fb(home, "providers", "remove", "lmstudio")
    assert again.returncode == 1 and "is not configured" in again.stderr
    builtin = fb(home, "providers", "remove", "openai")
    assert builtin.returncode == 1 and "is built in" in builtin.stderr
    for args, message in (
        (("add-endpoint", "local", "http://x/v1"), "cannot name an endpoint"),
        (("add-endpoint", "Bad Name", "http://x/v1"), "cannot name an endpoint"),
        (("add-endpoint", "good", "ftp://x"), "is not a base URL"),
    ):
        proc = fb(home, "providers", *args)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr


def test_providers_models_asks_the_endpoint(tmp_path: Path, openai_server: LocalServer) -> None:
    home = tmp_path / "home"
    fb(home, "providers", "add-endpoint", "testoai", f"{openai_server.url}/v1")
    proc = fb(home, "providers", "models", "testoai", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["all-minilm-l6-v2", "smollm2"]
    openai_server.state.reset(api_key="needs-a-key-123")
    denied = fb(home, "providers", "models", "testoai")
    assert denied.returncode == 1 and "rejected the API key" in denied.stderr


def test_models_catalogue(tmp_path: Path) -> None:
    home = tmp_path / "home"
    models = home / "models"
    (models / "runs" / "sft-1").mkdir(parents=True)
    gguf = BUNDLED["smollm2"].path()
    (models / "my-model.gguf").symlink_to(gguf)
    # a Hugging Face directory one level down (a training run's output)
    header = json.dumps({"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}})
    blob = len(header).to_bytes(8, "little") + header.encode() + bytes(48)
    (models / "runs" / "sft-1" / "model.safetensors").write_bytes(blob)
    (models / "runs" / "sft-1" / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"]})
    )
    proc = fb(home, "models", "--json")
    assert proc.returncode == 0, proc.stderr
    entries = {m["id"]: m for m in json.loads(proc.stdout)}
    params = gguf_header(gguf)[1]
    assert 130e6 < params < 140e6  # SmolLM2-135M
    assert entries["local:smollm2"] | {"path": ""} == {
        "id": "local:smollm2",
        "name": "smollm2",
        "task": "chat",
        "format": "gguf",
        "parameters": params,
        "size_bytes": gguf.stat().st_size,
        "path": "",
        "source": "bundled",
        "description": BUNDLED["smollm2"].description,
    }
    assert entries["local:my-model"]["parameters"] == params
    assert entries["local:my-model"]["source"] == "models-dir"
    minilm = entries["local:all-minilm-l6-v2"]
    assert (minilm["task"], minilm["format"]) == ("embedding", "sentence-transformers")
    assert 22e6 < minilm["parameters"] < 23e6
    assert entries["bundled:tiny.en"]["task"] == "speech"
    run = entries[f"local:{models / 'runs' / 'sft-1'}"]
    assert (run["task"], run["format"], run["parameters"]) == ("chat", "hf-safetensors", 12)
    table = fb(home, "models").stdout
    assert "134.5M" in table and "local:my-model" in table
