"""A local PostgreSQL 15 server for change data capture (``kappalake stack up --with cdc``); optional.

The Debian binaries (``/usr/lib/postgresql/15/bin``) run a cluster of our own: ``initdb`` into
``$KAPPALAKE_HOME/stack/postgres/data`` with ``wal_level=logical`` (Debezium's ``pgoutput`` slot), listening on
127.0.0.1 only, its Unix socket in ``stack/postgres/socket``, started with ``pg_ctl`` (no systemd). PostgreSQL
refuses to run as root: as root, ``initdb``/``pg_ctl`` run as the ``postgres`` OS user (``runuser``), who owns
``stack/postgres``. When that user cannot traverse a parent of the data dir (a 0700 directory such as pytest's
``/tmp/pytest-of-root``), the cluster lives in ``/var/lib/postgresql/kappalake/<hash>`` instead (see
:attr:`PostgresServer.cluster_dir`; :meth:`PostgresServer.purge` deletes it).

``pg_hba.conf`` trusts every local and 127.0.0.1 connection: this is a throwaway local stack, never expose
it. The first ``up`` creates the role ``kappalake`` (LOGIN REPLICATION SUPERUSER), its database ``kappalake``
and the sample schema (``resources/cdc_schema.sql``: ``merchants``, ``orders``, REPLICA IDENTITY FULL); every
``up`` re-applies the (idempotent) schema.

State file ``stack/postgres.json``; as the other services ``up`` is idempotent, a state file whose server is
gone is stale and replaced, and the last port is reused when free.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from kappalake import versions
from kappalake.errors import StackError
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.broker import StackState
from kappalake.runtime.stack.service import free_port, log_tail, process_runs, read_state, stop_group

OS_USER = "postgres"
ROLE = DATABASE = "kappalake"
INSTALL = f"apt-get install -y postgresql-{versions.POSTGRES_MAJOR}"
BIN_DIRS = (Path(f"/usr/lib/postgresql/{versions.POSTGRES_MAJOR}/bin"), Path("/usr/local/bin"))
EXTERNAL_BASE = Path("/var/lib/postgresql/kappalake")
_SOCKET_MAX = 100  # sun_path holds 107 bytes; the socket file name adds ".s.PGSQL.<port>"
_HBA = """# kappalake local stack only: trust every local and 127.0.0.1 connection. Never expose this server.
local all all trust
local replication all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


def schema_sql() -> str:
    """The sample CDC schema (``merchants``, ``orders``) applied on ``up``."""
    return (resources.files("kappalake.runtime") / "resources" / "cdc_schema.sql").read_text()


def server_settings(port: int, socket_dir: Path) -> str:
    """``kappalake.conf``, included from ``postgresql.conf``: what CDC needs, and where to listen."""
    settings = {"listen_addresses": "'127.0.0.1'", "port": str(port),
                "unix_socket_directories": "'" + str(socket_dir).replace("'", "''") + "'",
                "wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10",
                "max_connections": "50", "shared_buffers": "64MB", "fsync": "on"}
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def find_binaries() -> Path:
    """The directory holding PostgreSQL 15's ``initdb``, ``pg_ctl``, ``postgres`` and ``psql``."""
    for directory in BIN_DIRS:
        if all((directory / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise StackError(f"PostgreSQL {versions.POSTGRES_MAJOR} not found (looked in "
                     f"{', '.join(str(d) for d in BIN_DIRS)}): {INSTALL}")


@dataclass(frozen=True)
class PostgresInfo:
    pid: int
    port: int
    data_dir: str
    socket_dir: str
    log_file: str
    started_at: float

    @property
    def dsn(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"


@dataclass(frozen=True)
class PostgresStatus:
    state: StackState
    server: PostgresInfo | None
    home: Path | None = None

    @property
    def dsn(self) -> str | None:
        return self.server.dsn if self.server and self.state == "running" else None


def _pid_is_ours(pid: int, data_dir: str) -> bool:
    return process_runs(pid, data_dir)


def _wait_gone(pid: int, timeout: float = 15.0) -> None:
    """Until ``pid`` no longer exists, zombie included: the postmaster is not our child, and a new one refuses
    to start while the pid in ``postmaster.pid`` exists (here init reaps orphans only every few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.1)


def _reachable(path: Path) -> bool:
    """Every existing parent of ``path`` can be traversed by other users (the ``postgres`` user)."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents if parent.exists())


class PostgresServer:
    """Start, stop and inspect the local PostgreSQL under one data directory."""

    def __init__(self, layout: HomeLayout | None = None) -> None:
        self.layout = layout or HomeLayout.from_env()
        self.dir = self.layout.stack / "postgres"
        self.state_file = self.layout.stack / "postgres.json"
        self.location_file = self.dir / "location"
        self.last_port_file = self.dir / "last-port"

    @property
    def cluster_dir(self) -> Path:
        """Holds ``data``, ``socket`` and ``postgres.log``: ``stack/postgres``, or, as root when the ``postgres``
        user cannot traverse a parent of the data dir (pytest's 0700 tmp dirs, which pytest re-chmods at every
        session start), ``/var/lib/postgresql/kappalake/<hash>``; fixed at the first ``up`` (``location``)."""
        try:
            return Path(self.location_file.read_text().strip())
        except OSError:
            pass
        if os.geteuid() != 0 or _reachable(self.dir):
            return self.dir
        return EXTERNAL_BASE / hashlib.sha1(str(self.dir).encode()).hexdigest()[:16]

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.cluster_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """``<cluster>/socket``, or a short directory under /tmp when that path is too long for a socket."""
        own = self.cluster_dir / "socket"
        if len(str(own)) <= _SOCKET_MAX - 20:
            return own
        return Path("/tmp") / f"kappalake-pg-{hashlib.sha1(str(self.dir).encode()).hexdigest()[:12]}"

    # ------------------------------------------------------------------ inspection
    def status(self) -> PostgresStatus:
        """running / stopped / stale (state file left by a server that is gone)."""
        info = read_state(self.state_file, PostgresInfo, "PostgreSQL server")
        if info is None:
            return PostgresStatus("stopped", None, self.layout.home)
        return PostgresStatus("running" if _pid_is_ours(info.pid, info.data_dir) else "stale", info,
                              self.layout.home)

    def dsn(self) -> str:
        """The running server's DSN; StackError if it is not running."""
        status = self.status()
        if status.state != "running" or status.server is None:
            raise StackError(f"the local PostgreSQL is not running ({status.state}; data dir {self.layout.home}); "
                             "start it with 'kappalake stack up --with cdc'")
        return status.server.dsn

    def psql(self, sql: str, database: str = DATABASE, user: str = ROLE, port: int | None = None) -> str:
        """Run ``sql`` with ``psql`` over 127.0.0.1 (unaligned, tuples only); StackError on failure."""
        port = port or int(self.dsn().rsplit(":", 1)[1].split("/")[0])
        psql = find_binaries() / "psql"
        command = [str(psql) if psql.exists() else "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                   "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", database]
        result = subprocess.run(command, input=sql, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise StackError(f"psql on 127.0.0.1:{port}/{database} failed: {result.stderr.strip()[-500:]}")
        return result.stdout.strip()

    # ------------------------------------------------------------------ lifecycle
    def up(self, timeout: float = 120.0) -> PostgresStatus:
        """Start the server unless it runs already; ensure role, database and schema; return the status."""
        status = self.status()
        if status.state == "running" and status.server is not None:
            self._bootstrap(status.server.port)
            return status
        if status.state == "stale":
            self.state_file.unlink(missing_ok=True)
        return self._start(status.server, timeout)

    def _as_owner(self, command: list[str]) -> list[str]:
        """``command`` as the ``postgres`` OS user when we are root (PostgreSQL refuses root)."""
        if os.geteuid() != 0:
            return command
        if not shutil.which("runuser"):
            raise StackError(f"running as root, PostgreSQL must run as the '{OS_USER}' user, but 'runuser' is missing")
        return ["runuser", "-u", OS_USER, "--", *command]

    def _give_to_owner(self, *paths: Path) -> None:
        """As root: ``paths`` belong to the ``postgres`` user."""
        if os.geteuid() != 0:
            return
        try:
            owner = pwd.getpwnam(OS_USER)
        except KeyError:
            raise StackError(f"running as root, PostgreSQL must run as the '{OS_USER}' OS user, which does not "
                             f"exist; install PostgreSQL with: {INSTALL}") from None
        for path in paths:
            os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)

    def _run(self, command: list[str], what: str, timeout: float) -> None:
        result = subprocess.run(self._as_owner(command), capture_output=True, text=True, timeout=timeout + 30,
                                cwd=self.cluster_dir)
        if result.returncode != 0:
            raise StackError(f"{what} failed (exit {result.returncode}): "
                             f"{(result.stderr or result.stdout).strip()[-800:]}\nlast lines of {self.log_file}:\n"
                             f"{log_tail(self.log_file)}")

    def _initdb(self, binaries: Path) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._run([str(binaries / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                   "--encoding=UTF8", "--locale=C"], f"initdb of {self.data_dir}", 120)
        (self.data_dir / "pg_hba.conf").write_text(_HBA)  # rewrites the postgres user's file: owner stays
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# kappalake local stack\ninclude_if_exists = 'kappalake.conf'\n")

    def _start(self, previous: PostgresInfo | None, timeout: float) -> PostgresStatus:
        binaries = find_binaries()
        cluster = self.cluster_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        for directory in (cluster, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            self._give_to_owner(directory)
        self.location_file.write_text(str(cluster))
        if os.geteuid() == 0 and not _reachable(cluster / "data"):
            raise StackError(f"the '{OS_USER}' user cannot reach {cluster} (a parent directory lacks o+x); "
                             "give it the search bit or set KAPPALAKE_HOME elsewhere")
        self._initdb(binaries)
        self._stop_orphan(binaries)
        preferred = previous.port if previous else None
        if preferred is None and self.last_port_file.is_file():
            preferred = int(self.last_port_file.read_text().strip() or 0) or None
        port, socket_dir = free_port(preferred), self.socket_dir
        (self.data_dir / "kappalake.conf").write_text(server_settings(port, socket_dir))
        self.last_port_file.write_text(str(port))
        self._give_to_owner(self.data_dir / "kappalake.conf")
        self._run([str(binaries / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                   "-t", str(int(timeout)), "-o", f"-p {port} -k {shlex.quote(str(socket_dir))}", "start"],
                  f"starting PostgreSQL on 127.0.0.1:{port}", timeout)
        pid = self._postmaster_pid()
        if pid is None:
            raise StackError(f"PostgreSQL started but {self.data_dir}/postmaster.pid is missing; last lines of "
                             f"{self.log_file}:\n{log_tail(self.log_file)}")
        info = PostgresInfo(pid=pid, port=port, data_dir=str(self.data_dir), socket_dir=str(socket_dir),
                            log_file=str(self.log_file), started_at=time.time())
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(info), indent=1))
        try:
            self._bootstrap(port)
        except StackError:
            self.down()
            raise
        return PostgresStatus("running", info, self.layout.home)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _stop_orphan(self, binaries: Path) -> None:
        """A server still running on our data dir without a state file (state removed by hand): stop it; a
        killed one: wait until it is gone."""
        pid = self._postmaster_pid()
        if pid is not None and _pid_is_ours(pid, str(self.data_dir)):
            self._run([str(binaries / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                      "stopping a PostgreSQL left running without a state file", 60)
        elif pid is not None:
            _wait_gone(pid)  # a killed postmaster not reaped yet

    def _bootstrap(self, port: int) -> None:
        """Role ``kappalake`` (LOGIN REPLICATION SUPERUSER), its database and the sample schema; idempotent."""
        self.psql(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN "
                  f"CREATE ROLE {ROLE} LOGIN REPLICATION SUPERUSER; END IF; END $$;",
                  database="postgres", user="postgres", port=port)
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", database="postgres",
                         user="postgres", port=port):
            self.psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}", database="postgres", user="postgres", port=port)
        self.psql(schema_sql(), port=port)

    def down(self, timeout: float = 60.0) -> StackState:
        """Stop the server (``pg_ctl stop -m fast``, SIGKILL if that fails); return the state it was in."""
        status = self.status()
        if status.server is not None and status.state == "running":
            pid, data_dir = status.server.pid, status.server.data_dir
            try:
                self._run([str(find_binaries() / "pg_ctl"), "-D", data_dir, "-m", "fast", "-w", "-t",
                           str(int(timeout)), "stop"], "stopping PostgreSQL", timeout)
            except (StackError, subprocess.TimeoutExpired):
                stop_group(pid, lambda p: _pid_is_ours(p, data_dir), 5.0)
        self.state_file.unlink(missing_ok=True)
        return status.state

    def purge(self) -> None:
        """Stop the server and delete its cluster (data, log) wherever it lives; the next ``up`` starts afresh."""
        self.down()
        for directory in (self.socket_dir, self.cluster_dir, self.dir):
            shutil.rmtree(directory, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server's process group (crash tests) and wait until it is gone; the state file stays
        (reported stale, replaced by the next ``up``)."""
        status = self.status()
        if status.server is not None and status.state == "running":
            pid = status.server.pid
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            _wait_gone(pid)
