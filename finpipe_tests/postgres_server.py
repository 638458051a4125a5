"""Start a real, throwaway PostgreSQL server for tests (Debian's server binaries).

PostgreSQL refuses to run as root, so under root the server runs as the unprivileged user
`nobody`. It listens on 127.0.0.1 at a free port with trust authentication, fsync off.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

UNPRIVILEGED_USER = "nobody"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    db_name: str

    def create_database(self, name: str) -> str:
        """Create another database on the server; its SQLAlchemy URL (trust auth)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{name}"

    def env(self) -> dict[str, str]:
        """The variables the repo's dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": "trust-auth-ignores-this",
            "DAGSTER_PG_DB": self.db_name,
        }


def postgres_bin_dir() -> Path | None:
    """Newest Debian PostgreSQL bin folder, or the folder of pg_ctl on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path else None


def require_postgres_bin_dir() -> Path:
    """The bin folder; outside CI a missing server skips with the fix, in CI it fails."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        message = (
            "PostgreSQL server binaries not found: apt-get install postgresql (make test does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return bin_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_server(db_name: str = "dagster") -> Iterator[PostgresServer]:
    """A running server with database `db_name`; stopped and deleted on exit."""
    bin_dir = require_postgres_bin_dir()
    as_root = os.geteuid() == 0
    run_as = {"user": UNPRIVILEGED_USER} if as_root else {}
    workdir = Path(tempfile.mkdtemp(prefix="finpipe-pg-"))
    data, sockets, log = workdir / "data", workdir / "sock", workdir / "server.log"
    sockets.mkdir()
    if as_root:
        os.chmod(workdir, 0o755)
        shutil.chown(workdir, UNPRIVILEGED_USER)
        shutil.chown(sockets, UNPRIVILEGED_USER)
    port, user = free_port(), "finpipe"

    def run(*args: str) -> None:
        subprocess.run(
            [str(bin_dir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=workdir,
            **run_as,
        )

    try:
        run("initdb", "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", user, db_name)
        yield PostgresServer("127.0.0.1", port, user, db_name)
    except subprocess.CalledProcessError as err:
        server_log = log.read_text() if log.exists() else ""
        raise RuntimeError(f"{err.cmd} failed: {err.stderr}\n{server_log}") from err
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                **run_as,
            )
        shutil.rmtree(workdir, ignore_errors=True)
