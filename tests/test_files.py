"""The file-access policy (flowbuilder.files) on real folders, links and files."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import BinaryIO

import pytest
from conftest import REPO

from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.errors import InputError, NodeError
from flowbuilder.file_roots import RootsError, add_root, remove_root, stored_roots
from flowbuilder.files import FileAccess, FileAccessError
from flowbuilder.graph import save_graph
from flowbuilder.registry import Registry
from flowbuilder.settings import Settings

REFUSED = "nodes may use files under:"


@pytest.fixture
def access(home: Path) -> FileAccess:
    """The policy with no folder named: the workspace only."""
    return FileAccess(Settings.from_env())


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder that is no root (``tmp_path`` holds the data directory too)."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("not for nodes")
    return path


def secret_files(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    for name in ("secret.key", "secrets.enc", "flowbuilder.db", "providers.json"):
        (home / name).write_text(f"contents of {name}")


# ---- resolution ------------------------------------------------------------------------


def test_a_relative_path_resolves_in_the_workspace(access: FileAccess, home: Path) -> None:
    assert access.workspace == (home / "files").resolve()
    written = access.write_bytes("notes/a.txt", b"hi")
    assert written == home.resolve() / "files" / "notes" / "a.txt"
    assert access.read_bytes("notes/a.txt") == b"hi"
    assert access.read_bytes(str(written)) == b"hi"


def test_the_servers_folder_is_no_root(access: FileAccess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    with pytest.raises(FileAccessError, match="outside every folder nodes may use"):
        access.read_bytes(str(REPO / "pyproject.toml"))


@pytest.mark.parametrize("raw", ["../secret.key", "a/../../secret.key", "../files/../secrets.enc"])
def test_traversal_out_of_the_workspace_is_refused(
    access: FileAccess, home: Path, raw: str
) -> None:
    secret_files(home)
    with pytest.raises(FileAccessError) as info:
        access.read_bytes(raw, where="node 3 (Load File), field 'path'")
    message = str(info.value)
    assert message.startswith(
        f"node 3 (Load File), field 'path': '{raw}' (that is {home.resolve()}"
    )
    assert "is inside the data directory" in message
    assert f"{REFUSED} {home.resolve() / 'files'} (FLOWBUILDER_FILE_ROOTS" in message


def test_a_link_out_of_a_root_is_refused(access: FileAccess, outside: Path) -> None:
    link = access.workspace / "innocent.txt"
    link.symlink_to(outside / "secret.txt")
    with pytest.raises(FileAccessError, match=r"'innocent.txt' \(that is .*outside/secret.txt\)"):
        access.read_bytes("innocent.txt")
    (access.workspace / "docs").symlink_to(outside, target_is_directory=True)
    with pytest.raises(FileAccessError, match="outside every folder"):
        access.folder("docs")


def test_a_link_inside_a_root_is_followed(access: FileAccess) -> None:
    (access.workspace / "real.txt").write_text("real")
    (access.workspace / "alias.txt").symlink_to("real.txt")
    assert access.read_bytes("alias.txt") == b"real"
    assert access.resolve("alias.txt") == access.workspace / "real.txt"


class SwappingAccess(FileAccess):
    """The policy with an attacker acting between the check and the open: right after
    ``resolve`` passes, ``swap`` runs (it replaces a checked path with a link)."""

    swap: list[tuple[Path, Path]] = []

    def resolve(self, raw: str, *, where: str = "", write: bool = False) -> Path:
        real = super().resolve(raw, where=where, write=write)
        for path, target in self.swap:
            if path.is_dir() and not path.is_symlink():
                path.rename(path.with_name(path.name + ".moved"))
            else:
                path.unlink(missing_ok=True)
            path.symlink_to(target)
        return real


def test_a_link_swapped_in_after_the_check_is_not_followed(home: Path, outside: Path) -> None:
    access = SwappingAccess(Settings.from_env())
    work = access.workspace
    (work / "report.txt").write_text("mine")
    access.swap = [(work / "report.txt", outside / "secret.txt")]
    with pytest.raises(FileAccessError, match="changed into a link while being opened"):
        access.read_bytes("report.txt")

    for write in (False, True):  # a folder on the way, this time
        (work / "sub").mkdir()
        (work / "sub" / "secret.txt").write_text("mine")
        access.swap = [(work / "sub", outside)]
        with pytest.raises(FileAccessError, match="changed into a link while being opened"):
            if write:
                access.write_bytes("sub/planted.txt", b"x")
            else:
                access.read_bytes("sub/secret.txt")
        (work / "sub").unlink()
        (work / "sub.moved" / "secret.txt").unlink()
        (work / "sub.moved").rmdir()
    assert not (outside / "planted.txt").exists()


@pytest.mark.parametrize(
    "raw", ["C:\\Users\\me\\notes.txt", "\\\\server\\share\\x", "..\\secret.key"]
)
def test_windows_paths_are_refused(access: FileAccess, raw: str) -> None:
    with pytest.raises(FileAccessError, match="a Windows path; write it with '/' separators"):
        access.resolve(raw)


def test_a_tilde_is_the_server_users_home(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "user"
    (user / "docs").mkdir(parents=True)
    (user / "docs" / "a.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(user))
    with pytest.raises(FileAccessError, match=rf"'~/docs/a.txt' \(that is {user}/docs/a.txt\)"):
        FileAccess(Settings.from_env()).read_bytes("~/docs/a.txt")
    named = FileAccess(Settings.from_env(file_roots=(Path("~/docs").expanduser(),)))
    assert named.read_bytes("~/docs/a.txt") == b"mine"


@pytest.mark.parametrize("raw", ["", "   ", "a\0b"])
def test_empty_and_nul_paths_are_refused(access: FileAccess, raw: str) -> None:
    with pytest.raises(FileAccessError, match="not a usable path"):
        access.resolve(raw)


def test_only_regular_files_are_read(access: FileAccess) -> None:
    os.mkfifo(access.workspace / "pipe")  # opening it for reading would block
    with pytest.raises(NodeError, match="'pipe' is not a regular file"):
        access.read_bytes("pipe")
    with pytest.raises(NodeError, match=r"file not found: 'missing\.txt' \(looked for .*/files/"):
        access.read_bytes("missing.txt")
    with pytest.raises(NodeError, match=r"'gone/x\.txt' is not there: no folder .*/files/gone"):
        access.read_bytes("gone/x.txt")


# ---- the data directory's internals ----------------------------------------------------


@pytest.mark.parametrize("root", ["home", "slash"])
def test_the_data_directory_stays_out_even_when_named_as_a_root(home: Path, root: str) -> None:
    secret_files(home)
    (home / "artifacts" / "ab").mkdir(parents=True)
    (home / "artifacts" / "ab" / "abcd").write_text("an artifact")
    (home / "models" / "m").mkdir(parents=True)
    named = home if root == "home" else Path("/")
    access = FileAccess(Settings.from_env(file_roots=(named,)))
    for name in ("secret.key", "secrets.enc", "providers.json", "storage_secret", "x/y.txt"):
        with pytest.raises(FileAccessError, match="is inside the data directory"):
            access.resolve(str(home / name))
    for suffix in ("", "-wal", "-shm", "-journal"):
        with pytest.raises(FileAccessError, match="is the run store's database"):
            access.resolve(str(home / f"flowbuilder.db{suffix}"))
    with pytest.raises(FileAccessError, match="inside the artifact store"):
        access.read_bytes(str(home / "artifacts" / "ab" / "abcd"))
    with pytest.raises(FileAccessError, match=r"inside the model store \(name a model local:"):
        access.folder(str(home / "models" / "m"))
    with pytest.raises(FileAccessError, match="inside the knowledge store"):
        access.folder(str(home / "knowledge"), write=True, create=True)
    with pytest.raises(FileAccessError, match="inside the data directory"):
        access.write_bytes(str(home / "providers.json"), b"{}", overwrite=True)
    assert (home / "providers.json").read_text() == "contents of providers.json"
    assert access.write_bytes(str(home / "files" / "ok.txt"), b"ok").read_bytes() == b"ok"


def test_stores_outside_the_data_directory_stay_out(home: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    db = shared / "runs.db"
    settings = Settings.from_env(
        file_roots=(shared,),
        artifacts_dir=shared / "artifacts",
        knowledge_uri=str(shared / "kb"),
        database_url=f"sqlite:///{db}",
    )
    access = FileAccess(settings)
    assert access.write_bytes(str(shared / "fine.txt"), b"ok")
    with pytest.raises(FileAccessError, match="inside the artifact store"):
        access.resolve(str(shared / "artifacts" / "x"))
    with pytest.raises(FileAccessError, match="inside the knowledge store"):
        access.resolve(str(shared / "kb" / "t.lance"))
    with pytest.raises(FileAccessError, match="the run store's database"):
        access.resolve(f"{db}-wal")


def test_python_and_flowbuilder_are_never_written(home: Path) -> None:
    access = FileAccess(Settings.from_env(file_roots=(Path("/"),)))
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for target in (site / "planted.pth", REPO / "flowbuilder" / "planted.py"):
        with pytest.raises(FileAccessError, match="a folder Python loads code from"):
            access.write_bytes(str(target), b"/nowhere\n")
        assert not target.exists()
    assert access.read_bytes(str(REPO / "flowbuilder" / "files.py"))  # reading is fine


# ---- writing ---------------------------------------------------------------------------


def test_overwrite_is_off_unless_asked(access: FileAccess) -> None:
    access.write_bytes("keep.txt", b"original")
    with pytest.raises(NodeError, match=r"'keep\.txt' exists and 'overwrite' is off"):
        access.write_bytes("keep.txt", b"new")
    assert (access.workspace / "keep.txt").read_bytes() == b"original"
    access.write_bytes("keep.txt", b"new", overwrite=True)
    assert (access.workspace / "keep.txt").read_bytes() == b"new"
    with pytest.raises(NodeError, match="is a folder"):
        access.write_bytes("examples", b"x", overwrite=True)


def test_a_failed_write_leaves_nothing_behind(access: FileAccess) -> None:
    def half(fh: BinaryIO) -> None:
        fh.write(b"half of it")
        raise OSError("disk full")

    (access.workspace / "out").mkdir()
    with pytest.raises(NodeError, match=r"cannot write 'out/new\.txt': disk full"):
        access.write("out/new.txt", half)
    assert list((access.workspace / "out").iterdir()) == []
    access.write_bytes("out/old.txt", b"old")
    with pytest.raises(NodeError, match="disk full"):
        access.write("out/old.txt", half, overwrite=True)
    assert [p.name for p in (access.workspace / "out").iterdir()] == ["old.txt"]
    assert (access.workspace / "out" / "old.txt").read_bytes() == b"old"


def test_a_replaced_file_keeps_its_mode(access: FileAccess) -> None:
    target = access.workspace / "notes.txt"
    access.write_bytes("notes.txt", b"one\n")
    target.chmod(0o640)
    access.write_bytes("notes.txt", b"two\n", overwrite=True)
    assert target.stat().st_mode & 0o777 == 0o640


def test_an_executable_file_is_never_replaced(access: FileAccess) -> None:
    target = access.workspace / "script.sh"
    access.write_bytes("script.sh", b"echo 1\n")
    assert target.stat().st_mode & 0o111 == 0  # what nodes write is never executable
    target.chmod(0o750)
    with pytest.raises(FileAccessError, match="an executable file"):
        access.write_bytes("script.sh", b"echo 2\n", overwrite=True)
    assert target.read_bytes() == b"echo 1\n"


def test_hidden_names_below_a_root_are_never_written(access: FileAccess) -> None:
    for raw in (".bashrc", "project/.git/config", ".ssh/authorized_keys"):
        with pytest.raises(FileAccessError, match="hidden file or folder"):
            access.write_bytes(raw, b"x")
    access.write_bytes("project/notes.txt", b"x")


def test_the_default_hidden_data_directory_keeps_its_workspace_writable(tmp_path: Path) -> None:
    access = FileAccess(Settings.from_env(home=tmp_path / ".flowbuilder"))  # ~/.flowbuilder
    written = access.write_bytes("out/x.txt", b"x")
    assert written == access.workspace / "out" / "x.txt"


def test_uploads_keep_their_names(access: FileAccess) -> None:
    assert access.save_upload("memo.ogg", b"one") == "uploads/memo.ogg"
    assert access.save_upload("memo.ogg", b"one") == "uploads/memo.ogg"
    other = access.save_upload("../../memo.ogg", b"two")
    assert other.startswith("uploads/memo-") and other.endswith(".ogg")
    assert access.read_bytes(other) == b"two"
    assert access.save_upload(".env", b"x") == "uploads/env"


# ---- knowledge base locations ----------------------------------------------------------


def test_knowledge_locations(home: Path, tmp_path: Path) -> None:
    access = FileAccess(Settings.from_env(knowledge_uri="s3://team/kb"))
    assert access.knowledge_location("") == ""
    assert access.knowledge_location("s3://team/kb") == "s3://team/kb"
    with pytest.raises(FileAccessError, match="a URI other than the configured"):
        access.knowledge_location("s3://elsewhere/kb")
    made = access.knowledge_location("kbs/mine")
    assert made == str(access.workspace / "kbs" / "mine") and Path(made).is_dir()
    with pytest.raises(FileAccessError, match="outside every folder"):
        access.knowledge_location(str(tmp_path / "kb"))
    assert not (tmp_path / "kb").exists()


# ---- roots -----------------------------------------------------------------------------


def test_the_old_variable_still_names_roots(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("FLOWBUILDER_FILE_ROOTS", f"{a}{os.pathsep}{b}")
    monkeypatch.setenv("FLOWBUILDER_ALLOWED_ROOTS", f"{b}{os.pathsep}{tmp_path / 'c'}")
    assert Settings.from_env().file_roots == (a, b, tmp_path / "c")


def test_added_roots_apply_at_once_and_stay_out_of_the_data_directory(
    access: FileAccess, home: Path, outside: Path
) -> None:
    with pytest.raises(FileAccessError):
        access.read_bytes(str(outside / "secret.txt"))
    assert add_root(home, str(outside)) == outside.resolve()
    assert add_root(home, str(outside)) == outside.resolve()  # once
    assert stored_roots(home) == [outside.resolve()]
    assert access.read_bytes(str(outside / "secret.txt")) == b"not for nodes"
    assert access.roots == (access.workspace, outside.resolve())
    for bad, why in (("relative/x", "not an absolute path"), (str(home), "inside the data")):
        with pytest.raises(RootsError, match=why):
            add_root(home, bad)
    with pytest.raises(RootsError, match="not an existing folder"):
        add_root(home, str(outside / "missing"))
    assert remove_root(home, str(outside)) and not remove_root(home, str(outside))
    with pytest.raises(FileAccessError):
        access.read_bytes(str(outside / "secret.txt"))


def test_a_new_workspace_holds_the_example_data(access: FileAccess) -> None:
    examples = access.workspace / "examples"
    assert (examples / "seed_tasks.jsonl").read_bytes() == (
        REPO / "examples" / "seed_tasks.jsonl"
    ).read_bytes()
    assert (examples / "pep8_excerpt.txt").is_file() and (examples / "jfk.ogg").is_file()
    assert not list(examples.glob("*.json"))


# ---- flow inputs -----------------------------------------------------------------------


def test_a_path_given_as_a_flow_input_goes_through_the_policy(
    registry: Registry, home: Path, outside: Path
) -> None:
    engine = Engine(registry, Settings.from_env())
    b = GraphBuilder(registry)
    doc = b.add("core/input", name="doc", type="document")
    out = b.add("core/output", name="out")
    b.link(doc, "value", out, "value")
    plan = engine.compile(b.build())
    with pytest.raises(InputError, match=r"input 'doc': '.*secret.txt' is outside every folder"):
        engine.bind_inputs(plan, {"doc": str(outside / "secret.txt")})
    (engine.scheduler.files.workspace / "a.txt").write_text("mine")
    r = asyncio.run(engine.run(b.build(), {"doc": "a.txt"}))
    assert engine.artifacts.path(r.outputs["out"]).read_text() == "mine"
    # the caller's own path (the command line's --input) is read as given
    r = asyncio.run(engine.run(b.build(), {"doc": "secret.txt"}, base_dir=outside))
    assert engine.artifacts.path(r.outputs["out"]).read_text() == "not for nodes"


def test_the_example_flows_find_their_data_from_any_folder(
    registry: Registry, home: Path, tmp_path: Path
) -> None:
    """The file nodes of the shipped examples, exactly as shipped, run by the CLI from a
    folder that is not the checkout: their relative paths resolve in the workspace."""
    b = GraphBuilder(registry)
    for name in ("finetune_smollm.json", "quantize_smollm.json"):
        graph = json.loads((REPO / "examples" / name).read_text())
        for node in graph["nodes"]:
            if "path" in node.get("properties", {}):
                params = {k: v for k, v in node["properties"].items() if k in ("path", "kind")}
                load = b.add(node["type"], **params)
                out = b.add("core/output", name=node["type"].replace("/", "_"))
                b.link(
                    load,
                    "rows" if node["type"] == "training/load_dataset" else "text",
                    out,
                    "value",
                )
    save_graph(b.build(), tmp_path / "loads.json")
    env = {**os.environ, "FLOWBUILDER_HOME": str(home)}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "flowbuilder"), "run", "loads.json", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    outputs = json.loads(proc.stdout)["outputs"]
    assert outputs["training_load_dataset"] == 175
    shipped = (REPO / "examples" / "pep8_excerpt.txt").read_text(encoding="utf-8")
    assert outputs["core_load_file"] == shipped


def test_roots_cli(home: Path, outside: Path) -> None:
    exe = str(Path(sys.executable).parent / "flowbuilder")
    env = {**os.environ, "FLOWBUILDER_HOME": str(home), "COLUMNS": "300"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, "roots", *args], env=env, capture_output=True, text=True)

    assert cli("add", str(outside)).returncode == 0
    listed = json.loads(cli("list", "--json").stdout)
    assert listed == [
        {"path": str(home / "files"), "source": "workspace"},
        {"path": str(outside.resolve()), "source": "added"},
    ]
    (home / "files").mkdir(parents=True, exist_ok=True)
    refused = cli("add", str(home / "files"))
    assert refused.returncode == 1 and "inside the data directory" in refused.stderr
    assert cli("remove", str(outside)).returncode == 0
    assert cli("remove", str(outside)).returncode == 1


def test_a_name_too_long_is_a_clear_error(access: FileAccess) -> None:
    with pytest.raises(NodeError, match=r"cannot write 'x{300}\.txt': File name too long"):
        access.write_bytes("x" * 300 + ".txt", b"data", where="node 7 (Save File)")
    left = {p.name for p in access.workspace.iterdir()} - {"examples"}
    assert not left  # no temporary file left behind
