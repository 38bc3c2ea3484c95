"""The study store and queue: an Optuna RDB storage holding one trial per cell.

Cells (variant, depth, seed) are enqueued once as WAITING trials whose user attributes
carry the cell; workers take them through `study.optimize`, which pops WAITING trials
first and keeps heartbeats, so a dead worker's cell is failed and re-queued by
`RetryHeartbeatStaleTrialCallback` (Optuna 5; the older failed_trial_callback is
deprecated). A trial that carries no cell was sampled because the queue was empty: the
worker prunes it and stops (see GOTCHAS.md). Each finished trial stores its run's curves,
final and best errors, status and environment as user attributes; checkpoints are files.

SQLite under the output directory by default; PostgreSQL (`postgresql://...`) for workers
on several machines. Passwords in storage URLs are never printed (`redact`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ablations import Cell

HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 60  # a trial silent this long belongs to a dead worker
MAX_RETRY = 5  # re-queues of one cell before it is left failed
CELL = "cell"  # user attribute: the cell's key, set at enqueue time
RESULT = "result"  # user attribute: the run's result (JSON)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def default_storage(out: str | os.PathLike, study: str) -> str:
    path = Path(out).resolve() / study / "study.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def redact(url: str) -> str:
    """The URL with any password replaced by ***."""
    return re.sub(r"(://[^:/@]+:)([^@]*)(@)", r"\1***\3", url)


def open_storage(url: str, heartbeat: bool = True) -> RDBStorage:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several local workers write to one file: wait for the lock instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    if heartbeat:
        kwargs.update(
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return RDBStorage(url, **kwargs)
        except Exception as e:  # noqa: BLE001 - name the storage, hide the password
            raise RuntimeError(f"cannot open storage {redact(url)}: {e}") from None


def create_or_load(storage: RDBStorage, name: str) -> optuna.Study:
    """Create the study once (before any worker starts: concurrent creation fails on
    SQLite), or load it."""
    return optuna.create_study(
        study_name=name, storage=storage, direction="minimize", load_if_exists=True
    )


def load(storage: RDBStorage, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False)


def cell_key(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(CELL)


def enqueue(study: optuna.Study, cells: Iterable[Cell], budget: str) -> int:
    """Enqueue every cell that has no trial yet, or whose trials all failed without a
    live retry (a crash that is worth running again: it resumes from its checkpoint).
    Returns the number enqueued. Finished cells (done or diverged) are never re-queued."""
    by_cell: dict[str, list[FrozenTrial]] = {}
    for t in trials(study):
        if key := cell_key(t):
            by_cell.setdefault(key, []).append(t)
    n = 0
    for cell in cells:
        states = {t.state for t in by_cell.get(cell.key, [])}
        if states & {TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING}:
            continue
        study.enqueue_trial(
            {CELL: cell.key},
            user_attrs={
                CELL: cell.key,
                "variant": cell.variant,
                "depth": cell.depth,
                "seed": cell.seed,
                "budget": budget,
                "run_id": cell.run_id,
                "train_id": cell.train_id,
                "config": json.dumps(cell.config.to_dict(), sort_keys=True),
            },
            skip_if_exists=not states,  # a failed cell's params exist: enqueue it anyway
        )
        n += 1
    return n


def requeue_dead_local(study: optuna.Study) -> int:
    """Fail and re-queue RUNNING trials whose worker ran on this host and has died (a
    killed local run need not wait for the heartbeat grace period). Returns the count."""
    host = socket.gethostname()
    n = 0
    storage = study._storage
    callback = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    for t in trials(study):
        if t.state != TrialState.RUNNING or t.user_attrs.get("host") != host:
            continue
        pid = t.user_attrs.get("pid")
        if pid is None or _alive(int(pid)):
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                callback(study, storage.get_trial(t._trial_id))
                n += 1
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another process got there first
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is dead too.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def finished(study: optuna.Study) -> dict[str, FrozenTrial]:
    """cell key -> its COMPLETE trial (the first, should a duplicate ever exist)."""
    out: dict[str, FrozenTrial] = {}
    for t in trials(study):
        key = cell_key(t)
        if key and t.state == TrialState.COMPLETE and RESULT in t.user_attrs:
            out.setdefault(key, t)
    return out


def result_of(trial: FrozenTrial) -> dict[str, Any]:
    return json.loads(trial.user_attrs[RESULT])


def progress(study: optuna.Study, keys: set[str]) -> dict[str, int]:
    """Counts over the given cells: done, running, waiting, failed (no live retry)."""
    state_by: dict[str, set[TrialState]] = {}
    for t in trials(study):
        key = cell_key(t)
        if key in keys:
            state_by.setdefault(key, set()).add(t.state)
    counts = {"done": 0, "running": 0, "waiting": 0, "failed": 0, "total": len(keys)}
    for key in keys:
        s = state_by.get(key, set())
        if TrialState.COMPLETE in s:
            counts["done"] += 1
        elif TrialState.RUNNING in s:
            counts["running"] += 1
        elif TrialState.WAITING in s:
            counts["waiting"] += 1
        elif TrialState.FAIL in s:
            counts["failed"] += 1
    return counts
