"""A real PostgreSQL for the tests: initdb into a temporary directory, a free
127.0.0.1 port, fsync off (a test database never needs to survive a crash of
the machine), stopped by pg_ctl.

As root, initdb and the server run as the `postgres` user (`runuser -u
postgres --`): PostgreSQL refuses to run as root. Each test gets a database
of its own, cloned from a template that already holds every migration
(CREATE DATABASE ... TEMPLATE is a file copy, far faster than migrating).

`postgres_server` (session-wide) and `postgres_url` (a fresh database per
test) are pytest fixtures; tests skip, saying why, only when the PostgreSQL
binaries are absent.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from .redis_server import free_port


def _bindir() -> str | None:
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


BINDIR = _bindir()
SKIP_REASON = "PostgreSQL is not installed (apt-get install postgresql)"
needs_postgres = pytest.mark.skipif(BINDIR is None, reason=SKIP_REASON)
TEMPLATE = "bm_template"
CLONES_AHEAD = 3


class PostgresServer:
    def __init__(self, port: int | None = None) -> None:
        if BINDIR is None:
            raise RuntimeError(SKIP_REASON)
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="bm-pg-")
        self.data = os.path.join(self.dir, "data")
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._names = itertools.count(1)
        self._initialised = False
        self._cloner: ThreadPoolExecutor | None = None
        self._ahead: deque[Future] = deque()

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run([*prefix, *argv], check=check, capture_output=True, text=True,
                              cwd=self.dir, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self._initialised:
            self._run(os.path.join(BINDIR, "initdb"), "-D", self.data, "-U", "postgres",
                      "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8")
            self._initialised = True
        self._run(os.path.join(BINDIR, "pg_ctl"), "-D", self.data, "-w", "-t", "60",
                  "-l", os.path.join(self.dir, "log"), "-o",
                  f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(os.path.join(BINDIR, "pg_ctl"), "-D", self.data, "-w", "-m", mode, "stop",
                  check=False)

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)

    def make_template(self) -> None:
        """A database holding every migration, that each test's database is cloned from."""
        from proxy.store.postgres import PostgresStore

        self.sql(f"CREATE DATABASE {TEMPLATE}")
        store = PostgresStore(self.url(TEMPLATE), path=os.path.join(self.dir, "template"))
        store.open_sync()
        store.close_sync()

    def _clone(self) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def new_database(self) -> str:
        """A fresh database, cloned from the template. A clone takes ~60 ms of copying
        catalogs, longer than most tests: two threads keep a few ready ahead, so the
        suite's second pass does not wait for them."""
        if self._cloner is None:
            self._cloner = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pg-clone")
        while len(self._ahead) <= CLONES_AHEAD:
            self._ahead.append(self._cloner.submit(self._clone))
        url = self._ahead.popleft().result()
        self._ahead.append(self._cloner.submit(self._clone))
        return url

    def drop_database(self, url: str) -> None:
        """Drop a test's database once it is done with it, in the background: each holds
        ~5 MB of catalogs, and a pass makes over a thousand."""
        name = url.rsplit("/", 1)[1]
        if self._cloner is not None:
            self._cloner.submit(self.sql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        if self._cloner is not None:
            self._cloner.shutdown(wait=True)  # the clones ahead finish before the server stops
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    server = PostgresServer()
    server.start()
    try:
        server.make_template()
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server():
    if BINDIR is None:
        pytest.skip(SKIP_REASON)
    server = start_postgres()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    return postgres_server.new_database()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
