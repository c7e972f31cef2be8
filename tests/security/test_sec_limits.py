"""Bounded work, attacked through a real ``flowbuilder serve``: oversized bodies and
uploads, deep/long/unreadable JSON, oversized graphs, huge numbers in queries and
headers, template bombs, and CPU work that would hold up every other request.

Each test sends what an attacker would and asserts the refusal a user sees (413 or 422
naming the limit, 504 for a run past its ``?timeout``), and that the server keeps
answering other requests meanwhile.
"""

from __future__ import annotations

import json
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_api import Server, free_port, launch, server_env, start_server

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry

UPLOAD_MB = 16  # the server's upload limit here; the body limit stays at its default (10 MB)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("limits-home"),
        FLOWBUILDER_REQUIRE_AUTH="1",
        FLOWBUILDER_MAX_UPLOAD_MB=str(UPLOAD_MB),
    )
    try:
        yield server
    finally:
        try:
            server.stop()
        except Exception:  # a server that no longer answers signals is killed
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="module")
def key(srv: Server) -> str:
    made = srv.cli("keys", "create", "--name", "limits", "--json")
    assert made.returncode == 0, made.stderr
    value: str = json.loads(made.stdout)["key"]
    return value


@pytest.fixture(scope="module")
def api(srv: Server, key: str) -> Iterator[httpx.Client]:
    with srv.client(headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


def text_graph(template: str = "Hello {{ text }}!", name: str = "Greeter") -> dict[str, Any]:
    """text (Input) → Template → out (Output)."""
    b = GraphBuilder(default_registry(), name=name)
    src = b.add("core/input", name="text", type="text")
    tpl = b.add("core/template", template=template)
    out = b.add("core/output", name="out")
    b.link(src, "value", tpl, "text")
    b.link(tpl, "text", out, "value")
    return b.build().to_dict()


def published(api: httpx.Client, graph: dict[str, Any], name: str) -> str:
    r = api.post("/api/v1/flows", json={"name": name, "graph": graph})
    assert r.status_code == 201, r.text
    flow_id: str = r.json()["id"]
    assert api.post(f"/api/v1/flows/{flow_id}/publish").status_code == 200
    return flow_id


def detail_text(r: httpx.Response) -> str:
    return json.dumps(r.json().get("detail"))


# ---- raw HTTP, to see when the server answers a body it has not read yet ---------------


def raw_exchange(
    port: int, head: bytes, chunks: Iterable[bytes] = (), wait_s: float = 10.0
) -> tuple[int | None, bytes, int]:
    """Send ``head`` and then ``chunks`` until the server answers; returns (status or
    None when it did not answer within ``wait_s``, the answer's bytes, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sent = 0
    try:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # it answered while we were still sending
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        data = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            data += part
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in data[:head_end].split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(data) >= head_end + 4 + length:
                    break
    finally:
        sock.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, data, sent


def request_head(method: str, path: str, key: str, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {key}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def run_head(flow_id: str, key: str, **headers: str) -> bytes:
    """The head of a JSON ``POST /api/v1/flows/{flow_id}/run`` with these headers."""
    path = f"/api/v1/flows/{flow_id}/run"
    return request_head("POST", path, key, Content_Type="application/json", **headers)


# ---- body and upload size ---------------------------------------------------------------


def test_oversized_body_refused_by_content_length_before_it_is_sent(
    srv: Server, key: str, api: httpx.Client
) -> None:
    flow_id = published(api, text_graph(), "Body size")
    head = run_head(flow_id, key, Content_Length=str(11 * 1024 * 1024))
    status, answer, _ = raw_exchange(srv.port, head, wait_s=5)
    assert status == 413, answer[:300]
    assert b"10 MB" in answer and b"FLOWBUILDER_MAX_BODY_MB" in answer


def test_chunked_body_is_counted_while_it_is_read(srv: Server, key: str, api: httpx.Client) -> None:
    flow_id = published(api, text_graph(), "Chunked size")
    head = run_head(flow_id, key, Transfer_Encoding="chunked")
    piece = b"x" * (256 * 1024)

    def chunks() -> Iterator[bytes]:
        yield b'8\r\n{"text":\r\n'
        for _ in range(4 * 40):  # 40 MB, far more than the 10 MB limit
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    status, answer, sent = raw_exchange(srv.port, head, chunks(), wait_s=10)
    assert status == 413, answer[:300]
    assert b"FLOWBUILDER_MAX_BODY_MB" in answer
    assert sent < 30 * 1024 * 1024  # refused while reading, not after buffering it all


def test_upload_has_its_own_limit(srv: Server, key: str, api: httpx.Client) -> None:
    # above the body limit but within the upload limit: stored
    r = api.post(
        "/api/v1/artifacts", files={"file": ("big.bin", b"\0" * (12 * 1024 * 1024))}, timeout=60
    )
    assert r.status_code == 201, r.text
    head = request_head(
        "POST",
        "/api/v1/artifacts",
        key,
        Content_Type="multipart/form-data; boundary=x",
        Content_Length=str((UPLOAD_MB + 1) * 1024 * 1024),
    )
    status, answer, _ = raw_exchange(srv.port, head, wait_s=5)
    assert status == 413, answer[:300]
    assert f"{UPLOAD_MB} MB".encode() in answer and b"FLOWBUILDER_MAX_UPLOAD_MB" in answer


# ---- JSON shape: depth, string length, lone surrogates, NaN -----------------------------


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def flow_body(graph: dict[str, Any], name: str = "Shape") -> str:
    return json.dumps({"name": name, "graph": graph})


@pytest.mark.parametrize(
    ("case", "setting"),
    [
        ("deep", "FLOWBUILDER_MAX_JSON_DEPTH"),
        ("very deep", "FLOWBUILDER_MAX_JSON_DEPTH"),
        ("long string", "FLOWBUILDER_MAX_STRING_CHARS"),
        ("lone surrogate", "surrogate"),
        ("NaN", "NaN"),
    ],
)
def test_unreadable_or_oversized_json_refused_at_create_and_update(
    api: httpx.Client, case: str, setting: str
) -> None:
    graph = text_graph()
    if case == "deep":
        graph["extra"]["deep"] = nested(100)
        body = flow_body(graph)
    elif case == "very deep":  # deeper than Python's own recursion limit
        deep = "[" * 50_000 + "]" * 50_000
        body = flow_body(graph).replace('"extra": {', f'"extra": {{"deep": {deep}, ', 1)
    elif case == "long string":
        graph["nodes"][1]["properties"]["template"] = "x" * 1_000_001
        body = flow_body(graph)
    elif case == "lone surrogate":
        body = flow_body(graph).replace('"Hello ', '"Hello \\ud800', 1)
    else:
        body = flow_body(graph).replace('"pos": [', '"pos": [NaN, ', 1)
    headers = {"Content-Type": "application/json"}
    r = api.post("/api/v1/flows", content=body, headers=headers)
    assert r.status_code == 422, r.text[:300]
    assert setting in detail_text(r)

    flow_id = published(api, text_graph(), f"Update {case}")
    update = body.replace('"name": "Shape", ', "", 1)
    r = api.put(f"/api/v1/flows/{flow_id}", content=update, headers=headers)
    assert r.status_code == 422, r.text[:300]
    assert setting in detail_text(r)
    r = api.post(f"/api/v1/flows/{flow_id}/validate", content=update, headers=headers)
    assert r.status_code == 422, r.text[:300]

    # every stored flow can still be read back
    listed = api.get("/api/v1/flows")
    assert listed.status_code == 200
    for flow in listed.json():
        assert api.get(f"/api/v1/flows/{flow['id']}").status_code == 200


def test_run_inputs_with_lone_surrogate_or_long_text_refused(api: httpx.Client) -> None:
    flow_id = published(api, text_graph(), "Inputs shape")
    headers = {"Content-Type": "application/json"}
    r = api.post(f"/api/v1/flows/{flow_id}/run", content='{"text": "a\\udfff"}', headers=headers)
    assert r.status_code == 422, r.text[:300]
    assert "surrogate" in detail_text(r)
    r = api.post(f"/api/v1/flows/{flow_id}/run", json={"text": "x" * 1_000_001})
    assert r.status_code == 422, r.text[:300]
    assert "FLOWBUILDER_MAX_STRING_CHARS" in detail_text(r)
    # a multipart text field (form bodies are refused with 415 since the CSRF rules)
    r = api.post(f"/api/v1/flows/{flow_id}/run", files={"text": (None, "a" * 1_000_001)})
    assert r.status_code == 422, r.text[:300]
    runs = api.get("/api/v1/runs", params={"flow_id": flow_id})
    assert runs.status_code == 200 and runs.json() == []


def test_deep_json_in_a_form_field_refused(api: httpx.Client) -> None:
    b = GraphBuilder(default_registry(), name="JSON in")
    data = b.add("core/input", name="data", type="json")
    out = b.add("core/output", name="data")
    b.link(data, "value", out, "value")
    flow_id = published(api, b.build().to_dict(), "JSON in")
    deep = "[" * 5_000 + "]" * 5_000  # past Python's own recursion limit
    r = api.post(f"/api/v1/flows/{flow_id}/run", files={"data": (None, deep)})
    assert r.status_code == 422, r.text[:300]
    assert "FLOWBUILDER_MAX_JSON_DEPTH" in detail_text(r)
    r = api.post(f"/api/v1/flows/{flow_id}/run", files={"data": (None, '{"a": [1, 2]}')})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["outputs"] == {"data": {"a": [1, 2]}}


# ---- graph size -------------------------------------------------------------------------


def test_graph_with_too_many_nodes_or_links_refused(api: httpx.Client) -> None:
    nodes = [{"id": i, "type": "core/text", "properties": {"text": "x"}} for i in range(2_001)]
    r = api.post("/api/v1/flows", json={"name": "Huge", "graph": {"nodes": nodes}})
    assert r.status_code == 422, r.text[:300]
    assert "2,001 nodes" in detail_text(r) and "FLOWBUILDER_MAX_GRAPH_NODES" in detail_text(r)
    links = [[i, 1, 0, 2, 0, "text"] for i in range(10_001)]
    graph = {"nodes": nodes[:2], "links": links}
    r = api.post("/api/v1/flows", json={"name": "Tangled", "graph": graph})
    assert r.status_code == 422, r.text[:300]
    assert "FLOWBUILDER_MAX_GRAPH_LINKS" in detail_text(r)


# ---- huge numbers in queries, paths and headers -----------------------------------------


def test_huge_numbers_in_queries_paths_and_headers_answer_422(api: httpx.Client) -> None:
    flow_id = published(api, text_graph(), "Numbers")
    run_id = api.post(f"/api/v1/flows/{flow_id}/runs", json={"text": "n"}).json()["run_id"]
    huge = "1" + "0" * 40
    cases = [
        ("GET", f"/api/v1/runs?limit={huge}", {}),
        ("GET", f"/api/v1/runs?offset={huge}", {}),
        ("GET", f"/api/v1/runs?offset={'9' * 5000}", {}),
        ("POST", f"/api/v1/flows/{flow_id}/run?timeout=1e400", {}),
        ("POST", f"/api/v1/flows/{flow_id}/run?timeout={huge}", {}),
        ("POST", f"/api/v1/flows/{flow_id}/run?timeout=nan", {}),
        ("GET", f"/api/v1/runs/{run_id}/events?last_event_id={huge}", {}),
        ("GET", f"/api/v1/runs/{run_id}/events", {"Last-Event-ID": huge}),
        ("GET", f"/api/v1/runs/{run_id}/events", {"Last-Event-ID": "9" * 5000}),
        ("GET", f"/api/v1/flows/{flow_id}/versions/{huge}", {}),
        ("POST", f"/api/v1/flows/{flow_id}/versions/{huge}/restore", {}),
    ]
    for method, url, headers in cases:
        kwargs: dict[str, Any] = {"json": {"text": "n"}} if method == "POST" else {}
        r = api.request(method, url, headers=headers, **kwargs)
        assert r.status_code == 422, (url, headers, r.status_code, r.text[:200])
    assert api.get("/api/v1/runs?limit=1").status_code == 200


# ---- serve-flow ----------------------------------------------------------------------------


def test_serve_flow_has_the_same_limits(tmp_path: Path) -> None:
    graph = tmp_path / "greeter.json"
    graph.write_text(json.dumps(text_graph()))
    token = secrets.token_urlsafe(24)
    home = tmp_path / "home"
    home.mkdir()
    env = server_env(home, {"FLOWBUILDER_TOKEN": token})
    env.pop("FLOWBUILDER_DATABASE_URL", None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["serve-flow", str(graph), "--port", str(port)]
    proc = launch(args, env, tmp_path / "serve-flow.log", f"{base}/health")
    try:
        head = request_head(
            "POST",
            "/run",
            token,
            Content_Type="application/json",
            Content_Length=str(11 * 1024 * 1024),
        )
        status, answer, _ = raw_exchange(port, head, wait_s=5)
        assert status == 413 and b"FLOWBUILDER_MAX_BODY_MB" in answer, answer[:300]
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as c:
            r = c.post("/run?timeout=1e400", json={"text": "a"})
            assert r.status_code == 422, r.text[:300]
            deep = '{"text": "a", "x": ' + "[" * 5_000 + "]" * 5_000 + "}"
            r = c.post("/run", content=deep, headers={"Content-Type": "application/json"})
            assert r.status_code == 422 and "FLOWBUILDER_MAX_JSON_DEPTH" in r.text, r.text[:300]
            r = c.post("/run", json={"text": "Ada"})
            assert r.status_code == 200 and r.json()["outputs"] == {"out": "Hello Ada!"}, r.text
    finally:
        proc.terminate()
        proc.wait(timeout=15)


# ---- template bombs ----------------------------------------------------------------------


def _latency_during(api: httpx.Client, call: Any, delay_s: float = 0.3) -> tuple[Any, float]:
    """Run ``call`` in a thread; meanwhile time one ``GET /api/v1/flows``. Returns
    (what ``call`` returned, the GET's seconds)."""
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.setdefault("r", call()))
    worker.start()
    time.sleep(delay_s)
    t0 = time.monotonic()
    listed = api.get("/api/v1/flows", timeout=30)
    latency = time.monotonic() - t0
    worker.join(timeout=60)
    assert listed.status_code == 200
    return out.get("r"), latency


TIMED_OUT = (504, "longer than 1")
TOO_LONG = (500, "FLOWBUILDER_TEMPLATE_MAX_CHARS")
OUT_OF_MEMORY = (500, "FLOWBUILDER_TEMPLATE_MEMORY_MB")
BOMBS = [
    (
        "nested loops",
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        [TIMED_OUT],
    ),
    ("string multiplied", "{{ 'x' * 10**9 }}", [TOO_LONG]),
    ("integer power", "{{ 9 ** (10 ** 8) }}", [TOO_LONG]),
    ("output in a loop", "{% for a in range(100000) %}{{ 'x' * 100000 }}{% endfor %}", [TOO_LONG]),
    # memory bombs stop at the memory cap, or at the run's timeout if that comes first
    (
        "nested filters",
        "{{ 'x'|center(200000000)|center(400000000)|center(800000000) }}",
        [OUT_OF_MEMORY, TIMED_OUT],
    ),
    (
        "doubling a namespace",
        "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        [OUT_OF_MEMORY, TIMED_OUT],
    ),
    ("internals", "{{ ''.__class__.__mro__[1].__subclasses__() }}", [(500, "sandbox")]),
]


@pytest.mark.parametrize(("name", "template", "answers"), BOMBS, ids=[b[0] for b in BOMBS])
def test_template_bomb_is_bounded_and_the_server_keeps_answering(
    srv: Server,
    key: str,
    api: httpx.Client,
    name: str,
    template: str,
    answers: list[tuple[int, str]],
) -> None:
    flow_id = published(api, text_graph(template, name=f"Bomb {name}"), f"Bomb {name}")

    def bomb() -> tuple[httpx.Response, float]:
        t0 = time.monotonic()
        with srv.client(headers={"Authorization": f"Bearer {key}"}) as own:
            r = own.post(f"/api/v1/flows/{flow_id}/run?timeout=1", json={"text": "t"})
        return r, time.monotonic() - t0

    (r, elapsed), latency = _latency_during(api, bomb)
    assert any(r.status_code == code and says in r.text for code, says in answers), r.text[:300]
    assert elapsed < 3.0, f"the bomb took {elapsed:.1f} s to answer"
    assert latency < 1.0, f"GET /api/v1/flows took {latency:.2f} s during the bomb"


def test_trivial_template_still_renders(api: httpx.Client) -> None:
    flow_id = published(api, text_graph(), "Still fine")
    r = api.post(f"/api/v1/flows/{flow_id}/run?timeout=5", json={"text": "Ada"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == {"out": "Hello Ada!"}
    loop = published(api, text_graph("{% for w in text.split() %}[{{ w }}]{% endfor %}"), "Loop")
    r = api.post(f"/api/v1/flows/{loop}/run", json={"text": "a b c"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == {"out": "[a][b][c]"}


# ---- CPU work off the event loop -------------------------------------------------------


def big_graph(nodes: int = 2_000) -> dict[str, Any]:
    """A valid chain of ``nodes`` nodes: Text → Template → … → Template."""
    b = GraphBuilder(default_registry(), name="Big")
    prev = b.add("core/text", text="x")
    for _ in range(nodes - 1):
        tpl = b.add("core/template", template="{{ text }}.")
        b.link(prev, "text", tpl, "text")
        prev = tpl
    return b.build().to_dict()


def overtaken(
    api: httpx.Client, slow: Any, before: Any = None, times: int = 3
) -> list[tuple[float, bool]]:
    """Call ``slow()`` (an HTTP request) ``times`` times, each after ``before()``; 0.1 s
    into each, send ``GET /api/v1/runs?limit=1``. Returns, per call, (its seconds,
    whether the GET was answered first). Work on the event loop holds the GET until it
    ends; work in a thread lets the GET through."""
    found = []
    for _ in range(times):
        if before is not None:
            before()
        done: dict[str, float] = {}

        def run(done: dict[str, float] = done) -> None:
            t0 = time.monotonic()
            slow()
            done["slow"], done["took"] = time.monotonic(), time.monotonic() - t0

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.1)
        assert api.get("/api/v1/runs?limit=1", timeout=60).status_code == 200
        answered = time.monotonic()
        worker.join(timeout=120)
        found.append((done["took"], answered < done["slow"]))
    return found


def test_large_graphs_are_checked_and_compiled_off_the_event_loop(tmp_path: Path) -> None:
    # A server of its own that takes larger graphs, so checking one lasts long enough
    # (half a second or more) for a request sent meanwhile to overtake it.
    big = start_server(
        tmp_path / "home", FLOWBUILDER_REQUIRE_AUTH="1", FLOWBUILDER_MAX_GRAPH_NODES="8000"
    )
    try:
        made = big.cli("keys", "create", "--name", "validate", "--json")
        key = json.loads(made.stdout)["key"]
        with big.client(headers={"Authorization": f"Bearer {key}"}) as api:
            flow_id = published(api, text_graph(), "Validate me")
            body = {"graph": big_graph(6_000)}

            def validate() -> None:
                r = api.post(f"/api/v1/flows/{flow_id}/validate", json=body, timeout=60)
                assert r.status_code == 200 and r.json()["valid"], r.text[:300]

            validations = overtaken(api, validate)
            # /openapi.json compiles a published flow after each new version
            big_id = published(api, big_graph(6_000), "Big")
            versions = iter(range(1, 100))

            def new_version() -> None:
                graph = {**body["graph"], "extra": {"n": next(versions)}}
                assert api.put(f"/api/v1/flows/{big_id}", json={"graph": graph}).is_success

            def schema() -> None:
                r = api.get("/openapi.json", timeout=60)
                assert r.status_code == 200 and f"/api/v1/flows/{big_id}/run" in r.json()["paths"]

            schemas = overtaken(api, schema, new_version)
    finally:
        big.stop()
    print(f"validations {validations}; schemas {schemas}")
    assert sum(first for _, first in validations) >= 2, validations
    assert sum(first for _, first in schemas) >= 2, schemas
