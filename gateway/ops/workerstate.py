"""The state file a worker of `run --workers N` shares with its supervisor: what it serves
(recent activity, the certificates it holds, its last reload), written once a second it
changed and atomically, so the supervisor's admin port shows the workers' own truth."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.observe.activity import Activity
from gateway.pki.certfiles import HeldCert

SHARE_SECONDS = 1.0


def state_file(metrics_dir: str | Path, pid: int) -> Path:
    """Where a worker leaves its view (activity, certificates held, last reload)."""
    return Path(metrics_dir) / f"worker-{pid}.json"


def read_state(path: Path) -> dict[str, Any] | None:
    """A worker's last view, or None when it has written none (or is gone)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


async def share_state(
    path: Path,
    activity: Activity,
    held: Callable[[], list[HeldCert]],
    last_reload: Callable[[], float | None],
) -> None:
    """Write the view each second it changed (the held certificates change only by reload),
    through a temporary file and a rename: the supervisor never reads half of one."""
    written: tuple[int, float | None] | None = None
    tmp = path.with_suffix(".tmp")
    while True:
        now = (activity.version, last_reload())
        if now != written:
            written = now
            state = {
                "activity": activity.snapshot(),
                "held": [dataclasses.asdict(h) for h in held()],
                "last_reload": now[1],
            }
            tmp.write_text(json.dumps(state))
            os.replace(tmp, path)
        await asyncio.sleep(SHARE_SECONDS)
