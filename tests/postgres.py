"""A throw-away PostgreSQL server for tests: `initdb` in a temporary folder (as the unprivileged
`postgres` or `nobody` user, since it refuses root), on a loopback port, every statement logged."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

ADMIN_PASSWORD = "admin-pw-7c1e"


def _user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user to run PostgreSQL as")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A server of its own; `url()` for a user, `admin()` runs statements, `log()` is every
    statement it was sent."""

    def __init__(self) -> None:
        if shutil.which("initdb") is None and not Path("/usr/lib/postgresql").is_dir():
            pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs it)")
        self.bin = Path(shutil.which("initdb") or next(
            Path("/usr/lib/postgresql").glob("*/bin/initdb"))).resolve().parent
        self.root = Path(tempfile.mkdtemp(prefix="deltaflow-pg-"))
        self.user = _user()
        entry = pwd.getpwnam(self.user) if os.geteuid() == 0 else None
        (self.root / "pw").write_text(ADMIN_PASSWORD)
        if entry is not None:
            for path in (self.root, self.root / "pw"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.port = _free_port()
        run_as = {"user": self.user} if entry is not None else {}
        subprocess.run([self.bin / "initdb", "-D", self.root / "data", "-U", "admin",
                        "--auth=scram-sha-256", "--pwfile", self.root / "pw", "--no-locale",
                        "-E", "UTF8"], check=True, capture_output=True, **run_as)
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c log_statement=all -c fsync=off -c full_page_writes=off")
        subprocess.run([self.bin / "pg_ctl", "-D", self.root / "data", "-l",
                        self.root / "server.log", "-o", options, "-w", "start"],
                       check=True, capture_output=True, **run_as)
        self._run_as = run_as

    def url(self, user: str = "admin") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def engine(self) -> Any:
        import sqlalchemy as sa
        url = sa.engine.make_url(self.url()).set(password=ADMIN_PASSWORD)
        return sa.create_engine(url, poolclass=sa.pool.NullPool)

    def admin(self, *statements: str, **params: Any) -> None:
        import sqlalchemy as sa
        with self.engine().begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement), params)

    def load(self, name: str, frame: Any, types: dict[str, Any] | None = None) -> None:
        """Writes `frame` as table `name` (replacing it), readable by every role."""
        engine = self.engine()
        frame.to_sql(name, engine, index=False, if_exists="replace", dtype=types)
        self.admin(f'GRANT SELECT ON "{name}" TO PUBLIC')

    def log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        subprocess.run([self.bin / "pg_ctl", "-D", self.root / "data", "-m", "immediate",
                        "stop"], capture_output=True, **self._run_as)
        shutil.rmtree(self.root, ignore_errors=True)
