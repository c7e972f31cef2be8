"""Scoped credentials (flowbuilder.providers.credentials) on a real encrypted store, and
the store's scope format: old files read as unscoped, new ones written 0600."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from flowbuilder.errors import NodeError, RetryableError
from flowbuilder.providers.config import BUILTIN, Endpoint
from flowbuilder.providers.credentials import NO_KEY, SecretScopeError, api_key
from flowbuilder.secrets import KEY_ENV, SecretError, SecretStore

VLLM = Endpoint(name="vllm", kind="openai_compatible", base_url="http://127.0.0.1:8000/v1")
BOUND = Endpoint(
    name="bound",
    kind="openai_compatible",
    base_url="http://127.0.0.1:9000/v1",
    api_key_secret="BOUND_KEY",
)
OPENAI = BUILTIN["openai"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (KEY_ENV, "OPENAI_API_KEY", "BOUND_KEY", "MY_KEY"):
        monkeypatch.delenv(name, raising=False)


def refused(endpoint: Endpoint, store: SecretStore, credential: str | None) -> str:
    with pytest.raises(SecretScopeError) as info:
        api_key(endpoint, store, credential)
    assert info.value.endpoint == endpoint.name
    return str(info.value)


def test_old_store_file_reads_as_unscoped_and_is_rewritten_private(home: Path) -> None:
    """A store written before scopes existed: ``{"secrets": {...}}`` with no version."""
    home.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    (home / "secret.key").write_bytes(key + b"\n")
    old = Fernet(key).encrypt(json.dumps({"secrets": {"MY_KEY": "value-old-1234"}}).encode())
    (home / "secrets.enc").write_bytes(old + b"\n")
    (home / "secrets.enc").chmod(0o644)
    store = SecretStore(home)
    assert store.get("MY_KEY") == "value-old-1234"
    assert store.scopes() == {"MY_KEY": None}
    store.set_scope("MY_KEY", ["vllm", "openai", "vllm"])
    data = json.loads(Fernet(key).decrypt((home / "secrets.enc").read_bytes().strip()))
    assert data == {
        "version": 2,
        "secrets": {"MY_KEY": "value-old-1234"},
        "scopes": {"MY_KEY": ["openai", "vllm"]},
    }
    assert stat.S_IMODE((home / "secrets.enc").stat().st_mode) == 0o600
    assert SecretStore(home).scope("MY_KEY") == ("openai", "vllm")
    store.set("MY_KEY", "value-new-5678")  # a new value keeps the scope
    assert SecretStore(home).scope("MY_KEY") == ("openai", "vllm")
    store.set_scope("MY_KEY", None)
    assert SecretStore(home).scopes() == {"MY_KEY": None}
    with pytest.raises(SecretError, match="no stored secret named 'NOPE'"):
        store.set_scope("NOPE", ["vllm"])
    with pytest.raises(SecretError, match="cannot name an endpoint"):
        store.set("MY_KEY", "value-x-0000", scope=["Not An Endpoint"])


def test_a_node_credential_must_be_a_stored_secret(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SecretStore(home)
    monkeypatch.setenv("MY_KEY", "env-value-must-not-leave")
    message = refused(VLLM, store, "MY_KEY")
    assert message.startswith("the credential 'MY_KEY' is not a stored secret")
    assert "endpoint 'vllm' (http://127.0.0.1:8000/v1)" in message
    assert "env-value-must-not-leave" not in message
    message = refused(VLLM, store, "PATH")
    assert "'PATH'" in message and "flowbuilder secrets set PATH --for vllm" in message
    error = SecretScopeError("x", secret="s", endpoint="e")
    assert isinstance(error, NodeError) and not isinstance(error, RetryableError)


def test_unscoped_secret_goes_only_to_its_own_endpoint(home: Path) -> None:
    store = SecretStore(home)
    store.set("MY_KEY", "my-value-1234")
    store.set("BOUND_KEY", "bound-value-1234")
    store.set("OPENAI_API_KEY", "openai-value-1234")
    message = refused(VLLM, store, "MY_KEY")
    assert "it has no scope" in message and "secrets scope MY_KEY --for vllm" in message
    assert "my-value-1234" not in message
    assert api_key(BOUND, store, None) == "bound-value-1234"  # the endpoint's own key
    assert api_key(BOUND, store, "BOUND_KEY") == "bound-value-1234"
    assert api_key(OPENAI, store, None) == "openai-value-1234"
    refused(BOUND, store, "OPENAI_API_KEY")
    refused(VLLM, store, "OPENAI_API_KEY")
    # openai behind a proxy with another key secret: its default variable still fits it
    proxied = OPENAI.model_copy(update={"base_url": "http://proxy/v1", "api_key_secret": "CORP"})
    assert api_key(proxied, store, "OPENAI_API_KEY") == "openai-value-1234"
    # an endpoint merely *named* openai but of another kind is not the built-in provider
    impostor = VLLM.model_copy(update={"name": "openai"})
    refused(impostor, store, "OPENAI_API_KEY")
    assert api_key(VLLM, store, None) == NO_KEY


def test_scope_is_what_counts_once_set(home: Path) -> None:
    store = SecretStore(home)
    store.set("MY_KEY", "my-value-1234", scope=["vllm"])
    store.set("BOUND_KEY", "bound-value-1234", scope=["other"])
    assert api_key(VLLM, store, "MY_KEY") == "my-value-1234"
    message = refused(BOUND, store, "MY_KEY")
    assert "it is scoped to vllm" in message and "--for vllm,bound" in message
    # a scope that leaves out the endpoint naming it as its key wins over the binding
    message = refused(BOUND, store, None)
    assert "'BOUND_KEY'" in message and "scoped to other" in message


def test_environment_serves_only_as_an_endpoint_key(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SecretStore(home)
    monkeypatch.setenv("OPENAI_API_KEY", "env-openai-1234")
    monkeypatch.setenv("BOUND_KEY", "env-bound-1234")
    assert api_key(OPENAI, store, None) == "env-openai-1234"
    assert api_key(OPENAI, store, "OPENAI_API_KEY") == "env-openai-1234"
    assert api_key(BOUND, store, None) == "env-bound-1234"
    refused(VLLM, store, "OPENAI_API_KEY")
    refused(BOUND, store, "OPENAI_API_KEY")
    monkeypatch.delenv("BOUND_KEY")
    with pytest.raises(NodeError, match="the secret 'BOUND_KEY' is not set") as info:
        api_key(BOUND, store, None)
    assert not isinstance(info.value, SecretScopeError)
