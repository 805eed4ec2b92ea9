"""A throwaway PostgreSQL server for tests: initdb into a temp folder, start, stop.

Uses Debian's `postgresql` package (the test command installs it). The
server refuses to run as root, so under root it runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is missing: run the tests through `make test`, "
                           "which installs Debian's postgresql package")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """Its folder is made under the system temp dir, which the `postgres` user can reach."""

    def __init__(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="groundwork-pg-"))
        self.root = root
        self.data = root / "pgdata"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        root.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(root, "postgres", "postgres")
            os.chmod(root, 0o755)
        self._run([_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "groundwork",
                   "--no-sync", "-E", "UTF8"])
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-l", str(root / "server.log"), "-w",
                   "-o", f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=50", "start"])
        deadline = time.monotonic() + 30
        while subprocess.run([_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; see {root / 'server.log'}")
            time.sleep(0.2)
        self._run([_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                   "groundwork", "studies"])
        self.url = f"postgresql://groundwork@127.0.0.1:{self.port}/studies"

    def _run(self, cmd: list[str]) -> None:
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.root)

    def stop(self) -> None:
        try:
            self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
