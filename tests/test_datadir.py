"""The data directory's modes (flowbuilder.datadir) on real files."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from flowbuilder.datadir import private_sqlite, secure_home, sessions_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_secure_home_tightens_the_directory_and_its_own_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "artifacts").mkdir(parents=True)
    for name in ("secrets.enc", "providers.json", "token", "artifacts/ab.bin"):
        (home / name).write_text("x")
        (home / name).chmod(0o644)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    (home / "link").symlink_to(outside)
    home.chmod(0o755)
    sessions = sessions_dir(home)
    (sessions / "storage-user-1.json").write_text("{}")
    (sessions / "storage-user-1.json").chmod(0o644)
    secure_home(home)
    assert mode(home) == 0o700 and mode(sessions) == 0o700
    for name in ("secrets.enc", "providers.json", "token", "sessions/storage-user-1.json"):
        assert mode(home / name) == 0o600, name
    assert mode(home / "artifacts" / "ab.bin") == 0o644, "folders inside keep their modes"
    assert mode(outside) == 0o644, "a link is not followed"
    secure_home(tmp_path / "new" / "home")
    assert mode(tmp_path / "new" / "home") == 0o700


def test_a_shared_sticky_folder_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "someone-elses.txt").write_text("x")
    (shared / "someone-elses.txt").chmod(0o644)
    (shared / "secrets.enc").write_text("x")
    secure_home(shared)
    assert mode(shared) == 0o1777
    assert mode(shared / "someone-elses.txt") == 0o644
    assert mode(shared / "secrets.enc") == 0o600


def test_sqlite_database_and_its_journals_are_private(tmp_path: Path) -> None:
    db = tmp_path / "data" / "flowbuilder.db"
    old = os.umask(0o022)
    try:
        private_sqlite(db)
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        for suffix in ("", "-wal", "-shm"):
            assert mode(db.with_name(db.name + suffix)) == 0o600, suffix
        conn.close()
    finally:
        os.umask(old)
    db.chmod(0o644)
    private_sqlite(db)
    assert mode(db) == 0o600
