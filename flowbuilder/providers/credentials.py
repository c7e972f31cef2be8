"""Which API key a remote call may send, and to whom: the one place credentials are scoped.

A node's ``credential`` names a secret of the store, never an arbitrary environment
variable. For a call to endpoint ``E`` (a provider name such as ``openai`` or ``vllm``):

- the secret is the node's ``credential``, else ``E``'s own key secret
  (``api_key_secret`` in ``providers.json``; ``OPENAI_API_KEY`` for ``openai``,
  ``ANTHROPIC_API_KEY`` for ``anthropic``); none at all means the endpoint needs no key;
- a **stored secret with a scope** (``flowbuilder secrets set NAME --for openai,vllm``)
  is sent only to the endpoints its scope names;
- a **stored secret without a scope** (stored without ``--for``, or before scopes
  existed) is sent only to an endpoint that names it as its key secret (a binding an
  admin made with ``providers add-endpoint --api-key-secret``, or the built-in one) or to
  the built-in provider whose default variable has its name (``OPENAI_API_KEY`` to
  ``openai``);
- an **environment variable** is read only as such an endpoint key (the endpoint's own
  key secret, or its provider's default variable), never because a node named it.

Anything else fails before any request with :class:`SecretScopeError`, which names the
secret and the endpoint and never the value.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from flowbuilder.errors import NodeError
from flowbuilder.providers.config import BUILTIN, Endpoint
from flowbuilder.secrets import NAME_PATTERN, SecretStore

NO_KEY = "no-key"
"""Sent as the API key to endpoints configured without one (the openai SDK insists on
a key; Ollama, vLLM and llama.cpp ignore it)."""


class SecretScopeError(NodeError):
    """A node would send a secret to an endpoint it is not meant for (not retried).

    ``secret`` and ``endpoint`` are names; the message never holds a value.
    """

    def __init__(self, message: str, *, secret: str, endpoint: str) -> None:
        super().__init__(message)
        self.secret, self.endpoint = secret, endpoint


def credential_name(value: str) -> str:
    """A secret's name, or empty; an API key pasted where a credential's name goes is
    refused (it would be saved in the graph file).

    Raises:
        ValueError: (pydantic reports it on the field) a value that looks like a key, or
            is not a secret's name (letters, digits, ``_ . -``).
    """
    if not value:
        return value
    looks_like_key = value.startswith(("sk-", "sk_", "xai-", "gsk_")) or len(value) > 64
    if looks_like_key or not NAME_PATTERN.match(value):
        raise ValueError(
            "this looks like an API key, not the name of one: store the key with "
            "`flowbuilder secrets set NAME` (or the settings page) and put NAME here"
            if looks_like_key
            else "a credential is the name of a stored secret (letters, digits, _ . -)"
        )
    return value


Credential = Annotated[str, AfterValidator(credential_name)]
"""The type of a node's ``credential`` parameter: the name of a stored secret (see the
module docstring for where it may be sent), never the key itself."""


def endpoint_keys(endpoint: Endpoint) -> frozenset[str]:
    """The secret names ``endpoint`` may receive without a scope naming it: its own key
    secret and its built-in provider's default variable."""
    names = {endpoint.api_key_secret} if endpoint.api_key_secret else set()
    builtin = BUILTIN.get(endpoint.name)
    if builtin is not None and builtin.kind == endpoint.kind and builtin.api_key_secret:
        names.add(builtin.api_key_secret)
    return frozenset(names)


def where(endpoint: Endpoint) -> str:
    """The endpoint as messages name it: ``endpoint 'vllm' (http://…/v1)``."""
    return f"endpoint '{endpoint.name}' ({endpoint.base_url or 'its default URL'})"


def scope_refusal(endpoint: Endpoint, name: str, secrets: SecretStore) -> str | None:
    """Why secret ``name`` may not be sent to ``endpoint`` (a sentence), or None when it
    may (see the module docstring). Reads the store, never the environment's values."""
    own = name in endpoint_keys(endpoint)
    if secrets.get(name) is None:
        if own:
            return None
        return (
            f"the credential '{name}' is not a stored secret, so nothing is sent to "
            f"{where(endpoint)}: a node's credential names a secret of the store (an "
            "environment variable serves only as an endpoint's own key). Store it with "
            f"`flowbuilder secrets set {name} --for {endpoint.name}`"
        )
    scope = secrets.scope(name)
    if scope is None:
        if own:
            return None
        return (
            f"the secret '{name}' may not be sent to {where(endpoint)}: it has no scope, "
            "and a secret without one goes only to the endpoint that names it as its key. "
            f"Allow it with `flowbuilder secrets scope {name} --for {endpoint.name}` (or "
            "the Settings page)"
        )
    if endpoint.name in scope:
        return None
    allowed = ",".join((*scope, endpoint.name))
    return (
        f"the secret '{name}' may not be sent to {where(endpoint)}: it is scoped to "
        f"{', '.join(scope)}. Allow it with `flowbuilder secrets scope {name} --for "
        f"{allowed}` (or the Settings page)"
    )


def api_key(endpoint: Endpoint, secrets: SecretStore, credential: str | None) -> str:
    """The API key for one call to ``endpoint``: the node's ``credential``, else the
    endpoint's own key secret, checked against its scope (see the module docstring).

    Raises:
        SecretScopeError: the secret may not be sent to this endpoint (before any
            request; names the secret and the endpoint).
        NodeError: the endpoint's own key is neither stored nor in the environment.
    """
    name = credential or endpoint.api_key_secret
    if name is None:
        return NO_KEY
    refusal = scope_refusal(endpoint, name, secrets)
    if refusal is not None:
        raise SecretScopeError(refusal, secret=name, endpoint=endpoint.name)
    found = secrets.resolve(name)
    if found is None:
        raise NodeError(
            f"no API key for {endpoint.label}: the secret '{name}' is not set. Store it with "
            f"`flowbuilder secrets set {name} --for {endpoint.name}` (or the settings "
            f"page), or set the environment variable {name}"
        )
    return found[0]
