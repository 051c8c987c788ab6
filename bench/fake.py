"""Runs the fake upstream as `bluesminds fake-upstream` does (uvloop, same
server options), without going through the CLI, so the bench's ceiling and
upstream do not depend on every CLI command importing cleanly.

    python -m bench.fake --port 8091 --name a --stream-chunks 20 --chunk-delay 0.005
"""

from __future__ import annotations

import argparse
import asyncio

from proxy.fake_upstream import run_fake_upstream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--stream-chunks", type=int, default=20)
    parser.add_argument("--chunk-delay", type=float, default=0.005)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    run_fake_upstream("127.0.0.1", args.port, stream_chunks=args.stream_chunks, chunk_delay=args.chunk_delay,
                      name=args.name)


if __name__ == "__main__":
    main()
