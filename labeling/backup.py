"""Backups: one archive holding a consistent copy of the store and every file it points to.

`backup_store` copies the SQLite store with SQLite's online backup API (a
consistent snapshot while the app, annotators and jobs keep writing), keeps
only the chosen projects in that copy (the live store is never touched), and
packs it into one tar archive with the media and model artifacts its rows
reference. `manifest.json`, the archive's last member, lists every file with
its sha256 and size.

`restore_store` unpacks into a temporary folder beside the target, checks
every hash against the manifest, runs `PRAGMA integrity_check` and
`PRAGMA foreign_key_check`, brings the schema up to date, and only then moves
the store into place by renames; the database moves last, so it is the
commit point. A bad archive (truncated, tampered with, not a backup) is
refused with the reason and changes nothing; a store that already holds
projects is replaced only with `force`.

Optuna study journals (`studies/`) and job logs (`jobs/`) are working files of
runs in progress and are not backed up; a restored store has no running job.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import sqlite_utils

from labeling.errors import GroundworkError
from labeling.projects import get_project, list_projects
from labeling.store import (
    DB_FILENAME,
    SCHEMA_VERSION,
    connect,
    data_dir_of,
    schema_version,
    utcnow,
)

FORMAT = "groundwork-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILE_ROOTS = ("media", "models")  # folders of the store whose files rows point to
REPLACED = (DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm", "media", "models",
            "studies", "jobs")  # what a restore replaces in the target folder
CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 256 << 20


class _Hashing:
    """A file wrapper that hashes and counts what tarfile reads from it."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# --- backup ---------------------------------------------------------------------------------


def _keep_only(conn: sqlite3.Connection, project_ids: list[int]) -> None:
    """Delete every other project's rows from the snapshot (never from the live store).

    Child rows go by `project_id` (every per-project table has one), then rows
    of tables keyed by a deleted parent; `foreign_key_check` must come out
    clean, so a table added later without a `project_id` is noticed here,
    not in a restored store.
    """
    marks = ",".join("?" * len(project_ids))
    conn.execute("PRAGMA foreign_keys=OFF")  # explicit deletes: cascades would scan per row
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    with conn:
        for table in tables:
            columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
            key = "id" if table == "projects" else "project_id"
            if key in columns:
                conn.execute(f'DELETE FROM "{table}" WHERE {key} NOT IN ({marks})', project_ids)
        if "predictions" in tables:
            conn.execute("DELETE FROM predictions WHERE model_version_id NOT IN "
                         "(SELECT id FROM model_versions)")
        if "training_set_items" in tables:
            conn.execute("DELETE FROM training_set_items WHERE training_set_id NOT IN "
                         "(SELECT id FROM training_sets)")
        if "settings" in tables:  # per-project settings are keyed "<what>:<project id>"
            for (name,) in conn.execute("SELECT key FROM settings").fetchall():
                match = re.fullmatch(r".+:(\d+)", name)
                if match and int(match.group(1)) not in project_ids:
                    conn.execute("DELETE FROM settings WHERE key = ?", [name])
        for _ in range(10):  # rows of any other table that pointed at a deleted row
            dangling = [(t, rowid) for t, rowid, _parent, _fk in
                        conn.execute("PRAGMA foreign_key_check") if rowid is not None]
            if not dangling:
                break
            for table, rowid in dangling:
                conn.execute(f'DELETE FROM "{table}" WHERE rowid = ?', [rowid])
    left = conn.execute("PRAGMA foreign_key_check").fetchall()
    if left:
        raise GroundworkError(f"cannot cut the backup down to the chosen projects: table "
                              f"{left[0][0]!r} still points at removed rows; back up --all")
    conn.execute("VACUUM")  # the removed projects' rows leave no trace in free pages


def _summary(conn: sqlite3.Connection) -> list[dict]:
    def count(sql: str, pid: int) -> int:
        return int(conn.execute(sql, [pid]).fetchone()[0] or 0)

    return [
        {
            "id": pid,
            "name": name,
            "items": count("SELECT count(*) FROM items WHERE project_id = ?", pid),
            "labeled": count("SELECT count(DISTINCT item_id) FROM annotations WHERE project_id "
                             "= ? AND retracted_at IS NULL AND source IN ('human', 'review', "
                             "'import')", pid),
            "annotations": count("SELECT count(*) FROM annotations WHERE project_id = ?", pid),
            "models": count("SELECT count(*) FROM model_versions WHERE project_id = ?", pid),
        }
        for pid, name in conn.execute("SELECT id, name FROM projects ORDER BY id").fetchall()
    ]


def _referenced_files(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(relative path, kind) of every file the snapshot's rows point to, each once."""
    media = [r[0] for r in conn.execute(
        "SELECT DISTINCT media_path FROM items WHERE media_path IS NOT NULL ORDER BY 1")]
    models = [r[0] for r in conn.execute(
        "SELECT DISTINCT artifact_path FROM model_versions ORDER BY 1")]
    return [(p, "media") for p in media] + [(p, "model") for p in models]


def _archive_mode(path: Path, write: bool) -> str:
    gz = path.name.endswith((".tar.gz", ".tgz"))
    return ("w:gz" if gz else "w") if write else "r:*"


def backup_store(
    db: sqlite_utils.Database, out: str | Path, projects: Sequence[str] | None = None
) -> dict:
    """Write a backup of the whole store (`projects` None) or of the named projects to `out`.

    `out` is a tar archive (`.tar`, or `.tar.gz`/`.tgz` compressed), written
    under a temporary name and renamed, so an interrupted backup never leaves
    a half archive under the name. Files a row points to but that are missing
    from the store are listed in the report (`missing`) and in the manifest.
    """
    out = Path(out).expanduser().resolve()
    if out.is_dir():
        raise GroundworkError(f"{out} is a folder: give --out a file name such as backup.tar")
    if not out.parent.is_dir():
        raise GroundworkError(f"folder {out.parent} does not exist: create it first")
    chosen = [get_project(db, name) for name in dict.fromkeys(projects)] if projects \
        else list_projects(db)
    data_dir = data_dir_of(db)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        snap_path = Path(tmp) / DB_FILENAME
        snapshot = sqlite3.connect(snap_path)
        try:
            db.conn.backup(snapshot)  # SQLite's online backup: a consistent copy
            snapshot.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            if projects:
                _keep_only(snapshot, [p.id for p in chosen])
            summary = _summary(snapshot)
            files = _referenced_files(snapshot)
            version = int(snapshot.execute(
                "SELECT max(version) FROM schema_version").fetchone()[0] or 0)
        finally:
            snapshot.close()

        listed: list[dict] = []
        missing: list[str] = []
        partial = Path(tmp) / "archive.partial"
        with tarfile.open(partial, _archive_mode(out, write=True)) as tar:
            database = {"path": DB_FILENAME, "sha256": _sha256(snap_path),
                        "size": snap_path.stat().st_size}
            tar.add(snap_path, arcname=DB_FILENAME)
            for rel, kind in files:
                source = data_dir / rel
                if not _safe_name(rel) or not source.is_file():
                    missing.append(rel)
                    continue
                info = tar.gettarinfo(str(source), arcname=rel)
                with open(source, "rb") as fh:
                    hashing = _Hashing(fh)
                    tar.addfile(info, hashing)  # hashed as it is packed: what is in the archive
                listed.append({"path": rel, "kind": kind, "sha256": hashing.sha.hexdigest(),
                               "size": hashing.size})
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "created_at": utcnow(),
                "scope": "projects" if projects else "all",
                "schema_version": version,
                "projects": summary,
                "database": database,
                "files": listed,
                "missing": missing,
            }
            body = json.dumps(manifest, indent=1).encode("utf-8")
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(body), int(os.path.getmtime(snap_path)), 0o644
            tar.addfile(info, io.BytesIO(body))  # last: a cut-off archive has no manifest
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, out)
    return {
        "out": str(out),
        "scope": manifest["scope"],
        "projects": summary,
        "schema_version": version,
        "media": sum(f["kind"] == "media" for f in listed),
        "models": sum(f["kind"] == "model" for f in listed),
        "missing": missing,
        "bytes": out.stat().st_size,
    }


# --- restore --------------------------------------------------------------------------------


def _safe_name(name: str) -> bool:
    """A relative path under one of the store's file folders, with no way out of it."""
    path = PurePosixPath(name)
    return (
        not path.is_absolute()
        and "\\" not in name
        and len(path.parts) >= 2
        and path.parts[0] in FILE_ROOTS
        and all(part not in ("", ".", "..") for part in path.parts)
    )


def _store_projects(data_dir: Path) -> list[str] | None:
    """Project names in the store at `data_dir`; [] when empty or absent; None if unreadable."""
    path = data_dir / DB_FILENAME
    if not path.exists():
        return []
    # Without a -wal file the database file is complete: read it as immutable, which creates
    # no -wal/-shm beside it (looking must not change the store).
    wal = path.with_name(f"{DB_FILENAME}-wal").exists()
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro{'' if wal else '&immutable=1'}", uri=True)
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "projects" not in tables:
                return []
            return [r[0] for r in conn.execute("SELECT name FROM projects ORDER BY id")]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


def _check_target(target: Path, force: bool) -> bool:
    """Refuse to replace a store holding projects unless forced; True if there is one."""
    if target.exists() and not target.is_dir():
        raise GroundworkError(f"{target} is a file, not a store folder: pick another --data-dir")
    names = _store_projects(target)
    has_files = any((target / root).is_dir() and any((target / root).iterdir())
                    for root in FILE_ROOTS)
    if names is None:
        if not force:
            raise GroundworkError(f"the store at {target} cannot be read; pass --force to "
                                  "replace it with the backup")
        return True
    if (names or has_files) and not force:
        held = (f"{len(names)} project(s): {', '.join(names[:5])}"
                + (", ..." if len(names) > 5 else "")) if names else "media or model files"
        raise GroundworkError(
            f"the store at {target} is not empty ({held}); restore into an empty "
            "--data-dir, or pass --force to replace it (nothing was changed)")
    return bool(names or has_files)


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> tuple[str, int]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:
        raise GroundworkError(f"archive member {member.name} has no data")
    sha, size = hashlib.sha256(), 0
    with open(dest, "wb") as fh:
        for chunk in iter(lambda: source.read(CHUNK), b""):
            sha.update(chunk)
            size += len(chunk)
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return sha.hexdigest(), size


def _unpack(archive: Path, staging: Path) -> dict:
    """Extract the archive's known members into `staging`, then check them against the manifest."""
    label = archive.name
    try:
        tar = tarfile.open(archive, _archive_mode(archive, write=False))
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        what = "a zip file" if zipfile.is_zipfile(archive) else "not a readable tar archive"
        raise GroundworkError(f"{label} is not a Groundwork backup ({what}; `groundwork backup` "
                              "writes .tar or .tar.gz); nothing was changed") from None
    seen: dict[str, tuple[str, int]] = {}
    manifest_bytes: bytes | None = None
    try:
        with tar:
            for member in tar:
                name = member.name
                if name == MANIFEST:
                    if member.size > MAX_MANIFEST_BYTES or not member.isfile():
                        raise GroundworkError(f"{label}: {MANIFEST} is not a backup manifest")
                    handle = tar.extractfile(member)
                    manifest_bytes = handle.read() if handle else b""
                    if len(manifest_bytes) != member.size:
                        raise EOFError("manifest cut short")
                    continue
                if name != DB_FILENAME and not _safe_name(name):
                    raise GroundworkError(
                        f"{label} is not a Groundwork backup: unexpected member {name!r} "
                        "(a backup holds groundwork.db, media/, models/ and manifest.json); "
                        "nothing was changed")
                if not member.isfile():
                    raise GroundworkError(f"{label}: member {name!r} is not a regular file "
                                          "(links are never restored); nothing was changed")
                if name in seen:
                    raise GroundworkError(f"{label}: member {name!r} appears twice; nothing was "
                                          "changed")
                seen[name] = _copy_member(tar, member, staging / name)
                if seen[name][1] != member.size:
                    raise EOFError(f"{name} cut short")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise GroundworkError(f"{label} is truncated or damaged ({detail}); nothing was "
                              "changed") from None
    if manifest_bytes is None:
        raise GroundworkError(
            f"{label} has no {MANIFEST}: it is not a Groundwork backup, or it was cut short "
            "(the manifest is the last member); nothing was changed")
    try:
        manifest = json.loads(manifest_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GroundworkError(f"{label}: {MANIFEST} is not valid JSON ({exc}); nothing was "
                              "changed") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GroundworkError(f"{label} is not a Groundwork backup ({MANIFEST} does not say "
                              f"format {FORMAT!r}); nothing was changed")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise GroundworkError(f"{label} was written by a newer Groundwork (backup format "
                              f"{manifest.get('format_version')}); upgrade Groundwork to "
                              "restore it")
    try:
        expected = {DB_FILENAME: manifest["database"]} | {f["path"]: f
                                                         for f in manifest["files"]}
        checks = {name: (str(entry["sha256"]), int(entry["size"]))
                  for name, entry in expected.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise GroundworkError(f"{label}: {MANIFEST} is incomplete ({exc!r}); nothing was "
                              "changed") from None
    for name, (sha, size) in checks.items():
        if name not in seen:
            raise GroundworkError(f"{label} lacks {name}, which its manifest lists: the archive "
                                  "is incomplete; nothing was changed")
        if seen[name] != (sha, size):
            raise GroundworkError(
                f"{label}: {name} does not match the sha256 in the manifest (the archive was "
                "changed or damaged after the backup); nothing was changed")
    extra = sorted(set(seen) - set(checks))
    if extra:
        raise GroundworkError(f"{label}: {extra[0]} is not in the manifest (the archive was "
                              "changed after the backup); nothing was changed")
    return manifest


def _check_database(staging: Path, label: str) -> int:
    """Integrity and foreign-key checks on the unpacked store; returns its schema version."""
    conn = sqlite3.connect(staging / DB_FILENAME)
    try:
        result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            raise GroundworkError(f"{label}: the store fails PRAGMA integrity_check "
                                  f"({'; '.join(result[:3])}); nothing was changed")
        if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
            raise GroundworkError(f"{label}: the store fails PRAGMA foreign_key_check; nothing "
                                  "was changed")
        version = schema_version(sqlite_utils.Database(conn))
    except sqlite3.DatabaseError as exc:
        raise GroundworkError(f"{label}: groundwork.db is not a SQLite store ({exc}); nothing "
                              "was changed") from None
    finally:
        conn.close()
    if version > SCHEMA_VERSION:
        raise GroundworkError(f"{label} holds a store of schema version {version}, newer than "
                              f"this Groundwork ({SCHEMA_VERSION}): upgrade Groundwork first")
    return version


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(staging: Path, target: Path) -> None:
    """Move the unpacked store into place by renames; the database moves last.

    A target that does not exist (or is an empty folder) is replaced in one
    rename. Otherwise the old store's database moves out first, then its
    files; the new files move in, and the new database last. Other files in
    the folder stay. A crash midway leaves either no database (the old store
    is whole in the `.replaced-` folder beside it) or the complete new store.
    """
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        os.replace(staging, target)
        _fsync_dir(target.parent)
        return
    trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.replaced-"))
    for name in REPLACED:
        if (target / name).exists():
            os.replace(target / name, trash / name)
    for entry in sorted(staging.iterdir()):
        if entry.name != DB_FILENAME:
            os.replace(entry, target / entry.name)
    _fsync_dir(target)
    os.replace(staging / DB_FILENAME, target / DB_FILENAME)
    _fsync_dir(target)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def restore_store(archive: str | Path, data_dir: str | Path, *, force: bool = False) -> dict:
    """Restore a backup into the store folder `data_dir`; refuses a non-empty store unless forced.

    Stop the app and any job on that store first: a process holding the old
    database open keeps writing to the file that was moved away.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise GroundworkError(f"no backup file {archive}: give the path `groundwork backup` "
                              "wrote")
    target = Path(data_dir).expanduser().resolve()
    replaced = _check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.restore-"))
    try:
        manifest = _unpack(archive, staging)
        version = _check_database(staging, archive.name)
        try:
            db = connect(staging)  # brings an older backup up to this schema, in the staging copy
        except (sqlite3.DatabaseError, RuntimeError) as exc:
            raise GroundworkError(f"{archive.name}: the store cannot be opened ({exc}); nothing "
                                  "was changed") from None
        try:
            warnings = [
                f"model v{r['version']} of project {r['project_id']}: {r['artifact_path']} "
                "does not match the registry's sha256 (it will not load)"
                for r in db.query("SELECT project_id, version, artifact_path, artifact_sha256 "
                                  "FROM model_versions")
                if not (staging / r["artifact_path"]).is_file()
                or _sha256(staging / r["artifact_path"]) != r["artifact_sha256"]
            ]
            projects = [p.name for p in list_projects(db)]
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.conn.close()
        for leftover in (f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"):
            (staging / leftover).unlink(missing_ok=True)
        _swap(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "restored_to": str(target),
        "replaced": replaced,
        "projects": projects,
        "scope": manifest.get("scope"),
        "backup_created_at": manifest.get("created_at"),
        "backup_schema_version": version,
        "schema_version": SCHEMA_VERSION,
        "files": len(manifest["files"]),
        "missing_at_backup": manifest.get("missing", []),
        "warnings": warnings,
    }
