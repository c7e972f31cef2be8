"""Artifacts are inert, and API answers name no server paths, against a real
``flowbuilder serve`` and Debian's chromium (Playwright) with a logged-in session."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO
from playwright.sync_api import Browser, BrowserContext
from test_api import Server, create_flow, start_server
from test_canvas import browser  # noqa: F401  (the chromium fixture)

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry

# What an attacker uploads: each reads the victim's runs with the victim's session.
STEAL = "fetch('/api/v1/runs').then(r => r.text()).then(t => { document.title = 'STOLEN ' + t; })"
HTML = f"<!doctype html><html><body><h1>hi</h1><script>{STEAL}</script></body></html>"
SVG = f'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><script>{STEAL}</script></svg>'
PAYLOADS = {
    "page.html": HTML,
    "drawing.svg": SVG,
    "notes.txt": HTML,  # an HTML body uploaded as text/plain
    "photo.png": HTML,  # ... and as image/png
}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("artifacts-sec")
    srv = start_server(
        root / "home",
        FLOWBUILDER_REQUIRE_AUTH="1",
        FLOWBUILDER_ARTIFACTS_DIR=str(root / "store"),
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    made = server.cli("keys", "create", "--name", "t", "--json")
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["key"])


@pytest.fixture(scope="module")
def client(server: Server, key: str) -> Iterator[httpx.Client]:
    with server.client(headers={"Authorization": f"Bearer {key}"}) as c:
        yield c


@pytest.fixture
def session(
    browser: Browser,  # noqa: F811  (the fixture imported from test_canvas)
    server: Server,
    key: str,
) -> Iterator[BrowserContext]:
    """A browser context logged in with the key, as the victim's browser is."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(f"{server.base}/login")
    page.get_by_test_id("login-key").fill(key)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(lambda url: "/login" not in url)
    check = page.goto(f"{server.base}/api/v1/runs")
    assert check is not None and check.status == 200, "the session reads the API"
    page.close()
    # the session is kept in the private data directory, not in the server's folder
    sessions = server.home / "sessions"
    assert stat.S_IMODE(sessions.stat().st_mode) == 0o700
    # the session cookie names the key's id; no file anywhere holds the key itself
    stored = [*sessions.glob("storage-*.json"), *(REPO / ".nicegui").glob("storage-*.json")]
    assert not any(key in p.read_text() for p in stored)
    yield context
    context.close()


def upload(client: httpx.Client, name: str, data: bytes) -> dict[str, object]:
    r = client.post("/api/v1/artifacts", files={"file": (name, data)})
    assert r.status_code == 201, r.text
    answer: dict[str, object] = r.json()
    return answer


@pytest.mark.browser
@pytest.mark.parametrize("name", list(PAYLOADS))
def test_uploaded_artifact_runs_no_script_in_the_session(
    server: Server, client: httpx.Client, session: BrowserContext, name: str
) -> None:
    """Old code: .html and .svg were served inline from the app's origin; their script
    read /api/v1/runs with the victim's session."""
    # (a comment makes each body, and so each content-addressed artifact, distinct)
    ref = upload(client, name, f"{PAYLOADS[name]}<!-- {name} -->".encode())
    reads: list[str] = []
    session.on("request", lambda r: reads.append(r.url) if "/api/v1/runs" in r.url else None)
    page = session.new_page()
    try:
        page.goto(f"{server.base}{ref['url']}")
    except Exception as exc:  # an attachment: the browser downloads it
        assert "Download is starting" in str(exc), exc
    page.wait_for_timeout(1000)
    title = page.title()
    page.close()
    assert reads == [], f"the artifact's script read {reads}"
    assert "STOLEN" not in title


def test_artifacts_are_served_inert(client: httpx.Client) -> None:
    """Attachment unless an allow-listed image/audio/PDF type; nosniff and a sandboxing
    CSP on every artifact."""
    expected = {
        "page.html": "attachment",
        "drawing.svg": "attachment",
        "notes.txt": "attachment",
        "data.json": "attachment",
        "photo.png": "inline",
        "doc.pdf": "inline",
        "memo.ogg": "inline",
    }
    for name, disposition in expected.items():
        data = PNG if name == "photo.png" else f"<b>{name}</b>".encode()
        ref = upload(client, name, data)
        r = client.get(str(ref["url"]))
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-disposition"].startswith(disposition), (name, r.headers)
        assert name in r.headers["content-disposition"]
        assert r.headers["x-content-type-options"] == "nosniff"
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp, csp
        if name != "doc.pdf":  # Chrome's PDF viewer refuses to run in a sandbox
            assert "sandbox" in csp, csp


def test_api_answers_name_no_server_paths(server: Server, client: httpx.Client) -> None:
    """Old code: the upload answer had ``path`` (the file in the artifact store), and a
    missing artifact's error named the store's folder."""
    home = str(server.home)
    store = server.env["FLOWBUILDER_ARTIFACTS_DIR"]
    ref = upload(client, "memo.txt", b"hello")
    assert set(ref) == {"kind", "id", "name", "mime", "size", "url"}, ref
    b = GraphBuilder(default_registry(), name="Takes a document")
    doc = b.add("core/input", name="doc", type="document")
    out = b.add("core/output", name="doc")
    b.link(doc, "value", out, "value")
    flow_id = create_flow(client, b.build().to_dict(), "Takes a document")
    ok = client.post(f"/api/v1/flows/{flow_id}/run", json={"doc": ref["id"]})
    assert ok.status_code == 200, ok.text
    gone = {"kind": "document", "id": "0" * 64, "name": "x.txt"}
    missing = client.post(f"/api/v1/flows/{flow_id}/run", json={"doc": gone})
    assert missing.status_code == 422, missing.text
    answers = [json.dumps(ref), ok.text, missing.text]
    for url in (
        "/api/v1/nodes",
        "/api/v1/flows",
        f"/api/v1/flows/{flow_id}",
        "/api/v1/runs",
        f"/api/v1/runs/{ok.json()['run_id']}",
        "/openapi.json",
        "/v1/models",
    ):
        r = client.get(url)
        if url == "/openapi.json" and r.status_code == 303:
            continue  # the schema sends API clients to /login until it takes a key
        assert r.status_code == 200, (url, r.text)
        answers.append(r.text)
    for text in answers:
        assert home not in text and store not in text, text[:2000]
    assert Path(store).is_dir(), "the artifacts did go to the configured store"
