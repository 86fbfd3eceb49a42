"""``python -m tests.torture.starter DIR URL...``: start an orchestrator on each URL in turn, in step with others.

For each URL (round ``r``): write ``DIR/ready-r-<pid>``, wait for ``DIR/go-r``,
then immediately start a full orchestrator (store opened and migrated, flows
saved, recovery, workers) on the in-process runtime, run one flow to the end
and stop. Any exception ends the process with a traceback and a non-zero code.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from floworchestrator import Flow, Orchestrator, RunStatus, Step


async def one_round(url: str) -> None:
    orch = Orchestrator(store=url, runtime="inprocess", cron=False)
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("hello", {"a": Step("Echo", inputs={"pid": os.getpid()})}))
    async with orch:
        run = await orch.run("hello", timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run


def main(folder: Path, urls: list[str]) -> None:
    for r, url in enumerate(urls):
        (folder / f"ready-{r}-{os.getpid()}").touch()
        go = folder / f"go-{r}"
        end = time.monotonic() + 60
        while not go.exists():  # spin: every process leaves the line within a millisecond of the others
            if time.monotonic() > end:
                raise TimeoutError(f"no {go}")
            time.sleep(0.001)
        asyncio.run(one_round(url))
        print(f"round {r}: ok", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
