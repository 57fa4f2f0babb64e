"""Operating the SQLite file: online backups, integrity checks, backup rotation.

These use the standard library's sqlite3 on their own connection, so they are
safe while the bot runs (WAL lets a reader copy a consistent snapshot while the
bot keeps writing).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from bot.store.migrations import MIGRATIONS, PERSONAL_TABLES

log = logging.getLogger("triagebot.store")


def backup(db: Path, target: Path) -> Path:
    """Copy `db` to `target` with SQLite's online backup API; owner-only permissions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_CREAT | os.O_WRONLY, 0o600))
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as source, \
            sqlite3.connect(partial) as copy:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    source.close()
    copy.close()
    partial.replace(target)  # never leave a half-written backup under the real name
    return target


def check(db: Path) -> tuple[bool, str]:
    """(ok, report): integrity check and schema version."""
    if not db.exists():
        return False, f"{db}: no such database"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    ok = integrity == ["ok"] and version == len(MIGRATIONS)
    lines = [f"integrity: {'ok' if integrity == ['ok'] else '; '.join(integrity[:5])}",
             f"schema version: {version} (this triagebot expects {len(MIGRATIONS)})"]
    if version < len(MIGRATIONS):
        lines.append("run `triagebot db migrate` (or just start the bot) to upgrade")
    return ok, "\n".join(lines)


def scheduled(db: Path, folder: Path, keep: int, now: float | None = None) -> Path:
    """A timestamped backup in `folder`, keeping the `keep` newest."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now or time.time()))
    made = backup(db, folder / f"triagebot-{stamp}.sqlite3")
    old = sorted(folder.glob("triagebot-*.sqlite3"))[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
    return made


def erase_from_backups(folder: Path, user_id: int) -> int:
    """Erase a person from every backup the bot wrote in `folder` (/forget), content
    overwritten; returns the number of backups changed. Copies taken elsewhere
    (`triagebot db backup PATH`, the host's own backups) are the operator's to honour."""
    changed = 0
    for path in sorted(folder.glob("triagebot-*.sqlite3")):
        try:
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA secure_delete=ON")
                deleted = sum(conn.execute(f"DELETE FROM {table} WHERE user_id = ?",
                                           (user_id,)).rowcount for table in PERSONAL_TABLES)
            conn.close()
        except sqlite3.Error as exc:  # one broken copy must not stop the others
            log.error("could not erase a person from backup %s: %s", path.name, exc)
            continue
        changed += deleted > 0
    return changed
