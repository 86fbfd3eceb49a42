"""A worker process: ``python -m tests.torture.worker URL --index N [options]``.

Builds the torture application on the PostgreSQL store at URL with the queue
dispatcher, starts it with workers (recovery and heartbeat included), records
its pid in ``torture_workers`` and runs until SIGTERM (graceful stop, exit 0)
or SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import psycopg

from floworchestrator.stores.postgres import PostgresStore

from .harness import QueueDispatcher, build, effects, with_app_name


async def main(args: argparse.Namespace) -> None:
    i = args.index
    store = PostgresStore(with_app_name(args.url, f"torture-store-{i}"), readers=2)
    dispatcher = QueueDispatcher(with_app_name(args.url, f"torture-harness-{i}"), copies=args.copies, concurrency=args.concurrency)
    effects.open(with_app_name(args.url, f"torture-effects-{i}"))
    orch = build(store, dispatcher, lease_seconds=args.lease, recovery_interval=args.recovery_interval,
                 stale_after=args.stale_after, shutdown_timeout=args.shutdown_timeout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await orch.start()
    try:
        async with await psycopg.AsyncConnection.connect(with_app_name(args.url, f"torture-ready-{i}"), autocommit=True) as conn:
            await conn.execute("INSERT INTO torture_workers (pid) VALUES (%s)", (os.getpid(),))
        await stop.wait()
    finally:
        await orch.stop()
        if effects.conn is not None:
            await effects.conn.close()
    print(f"worker {i} (pid {os.getpid()}) stopped", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--recovery-interval", type=float, default=1.0)
    p.add_argument("--stale-after", type=float, default=30.0)
    p.add_argument("--shutdown-timeout", type=float, default=5.0)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s worker-{a.index}[%(process)d] %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(a))
