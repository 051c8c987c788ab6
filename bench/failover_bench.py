"""Failover under load: kill -9 one of three upstreams mid-run and count what
the clients saw.

    python -m bench.failover_bench [--requests 30000] [--clients 16] [--kill-at 0.33]

Three fake upstreams and the gateway run as processes of their own; a pool of
clients sends chat requests until `--requests` are answered (and stops after
`--seconds` whatever happens). When `--kill-at` of them are answered, one
upstream gets SIGKILL. Every request still in flight on it, and every one sent
to it before the gateway notices, must move to another upstream: the figure to
watch is the number of non-200 answers, which should be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp

from .gateway_config import write_gateway_config
from .procs import ProcessSet
from .targets import REPO, free_port
from .wrk import CHAT_BODY
from . import control


@dataclass
class Outcome:
    statuses: Counter
    answered: int
    killed_after: int
    seconds: float

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def report(self) -> str:
        shown = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items(), key=lambda kv: str(kv[0])))
        return (f"{self.answered} requests in {self.seconds:.1f} s, one of three upstreams killed (SIGKILL) "
                f"after {self.killed_after}: {self.failed} not 200 ({shown})")


def start(procs: ProcessSet, workdir: str) -> tuple[str, str, list]:
    from proxy.cli.accounts import create_user_and_key  # the gateway's own CLI code, imported late

    fakes = []
    for name in "abc":
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = procs.spawn(f"fake-{name}", [sys.executable, "-m", "bench.fake", "--port", str(port), "--name", name],
                           cwd=REPO)
        control.wait_until(proc, control.answers(url + "/_fake/stats"), timeout=30)
        fakes.append((url, proc))
    port = free_port()
    config = write_gateway_config(os.path.join(workdir, "gateway-config"), [u for u, _ in fakes], port=port)
    _, key = create_user_and_key(config.db_path, "failover@bench.local", "bench account password",
                                 config.plan, "bench", bcrypt_rounds=config.bcrypt_rounds)
    url = f"http://127.0.0.1:{port}"
    gateway = procs.spawn("gateway", [sys.executable, "-m", "proxy", "serve", "--config", config.config_dir,
                                      "--port", str(port)], cwd=REPO)
    authorization = f"Bearer {key}"
    control.wait_until(gateway, control.answers(url + "/v1/models", headers={"Authorization": authorization}),
                       timeout=60)
    return url, authorization, fakes


async def load(url: str, authorization: str, victim, *, requests: int, clients: int, kill_at: float,
               seconds: float) -> Outcome:
    statuses: Counter = Counter()
    answered = 0
    killed_after = -1
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    headers = {"Authorization": authorization, "Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal answered, killed_after
        while answered < requests and time.monotonic() < deadline:
            try:
                async with session.post(url + "/v1/chat/completions", data=CHAT_BODY, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1
            answered += 1
            if killed_after < 0 and answered >= requests * kill_at:
                killed_after = answered
                os.kill(victim.pid, signal.SIGKILL)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return Outcome(statuses, answered, killed_after, time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-at", type=float, default=1 / 3)
    parser.add_argument("--seconds", type=float, default=300.0, help="stop after this long whatever happens")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bm-failover-") as workdir, ProcessSet(workdir) as procs:
            url, authorization, fakes = start(procs, workdir)
            outcome = asyncio.run(load(url, authorization, fakes[2][1], requests=args.requests,
                                       clients=args.clients, kill_at=args.kill_at, seconds=args.seconds))
            print(f"run {run + 1}: {outcome.report()}", flush=True)


if __name__ == "__main__":
    main()
