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

Heartbeat timing: every HEARTBEAT_INTERVAL seconds a running trial records a heartbeat; a
trial silent for GRACE_PERIOD seconds is failed and re-queued by the next worker that
looks. The environment variables RESNET_REPRO_HEARTBEAT_INTERVAL and
RESNET_REPRO_GRACE_PERIOD override both (tests use a few seconds).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
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
# User attribute: the number of the trial its host/pid attributes were set for. A re-queued
# trial copies its predecessor's attributes; this tells a stale copy from a live claim.
CLAIM = "claim"

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats and their retry callback are marked experimental in Optuna 5 but are the
# supported way to re-queue the cells of dead workers.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(out: str | os.PathLike, study: str) -> str:
    path = Path(out).resolve() / study / "study.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def redact(url: str) -> str:
    """The URL with any password replaced by ***: the one in the user info (everything up
    to the last @, so an unescaped @ in a password is covered too) and a `password=` query
    parameter (libpq accepts both)."""
    url = re.sub(r"(://[^:/@]*:)(.*)(@[^@]*)$", r"\1***\3", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def scrub(text: str, url: str) -> str:
    """`text` (an error message, a log line) with the URL and its password, raw or
    percent-decoded, replaced by their redacted forms."""
    from urllib.parse import unquote

    text = text.replace(url, redact(url))
    secrets = re.findall(r"://[^:/@]*:(.*)@[^@]*$", url)
    secrets += re.findall(r"[?&]password=([^&]*)", url, flags=re.IGNORECASE)
    for secret in secrets:
        for form in {secret, unquote(secret)}:
            if form:
                text = text.replace(form, "***")
    return text


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace period) in seconds: HEARTBEAT_INTERVAL and GRACE_PERIOD, or the
    environment's RESNET_REPRO_HEARTBEAT_INTERVAL and RESNET_REPRO_GRACE_PERIOD."""
    values = []
    for name, default in (
        ("HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL),
        ("GRACE_PERIOD", GRACE_PERIOD),
    ):
        raw = os.environ.get(f"RESNET_REPRO_{name}", str(default))
        try:
            values.append(int(raw))
        except ValueError:
            raise ValueError(
                f"RESNET_REPRO_{name}={raw!r}: allowed values are integers >= 1 (seconds)"
            ) from None
    interval, grace = values
    if interval < 1 or grace <= interval:
        raise ValueError(
            f"heartbeat interval {interval} s and grace period {grace} s: allowed are an "
            "interval >= 1 and a grace period longer than the interval"
        )
    return interval, grace


def driver_url(url: str) -> str:
    """`postgresql://` with the PostgreSQL driver that is installed: SQLAlchemy 2.1 reads
    it as psycopg 3, the `postgres` extra installs psycopg2. Other URLs are unchanged."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    import importlib.util

    for module, dialect in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{dialect}://{url.split('://', 1)[1]}"
    return url  # SQLAlchemy's own error names the missing module


def open_storage(url: str, heartbeat: bool = True) -> RDBStorage:
    kwargs: dict[str, Any] = {}
    sqlite = url.startswith("sqlite")
    if sqlite:
        # Several local workers write to one file: wait for the lock instead of failing.
        # isolation_level None: the driver emits no BEGIN of its own (see _immediate).
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60, "isolation_level": None}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat:
            interval, grace = heartbeat_settings()
            kwargs.update(
                heartbeat_interval=interval,
                grace_period=grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRY
                ),
            )
        try:
            storage = RDBStorage(driver_url(url), **kwargs)
        except Exception as e:  # noqa: BLE001 - name the storage, hide the password
            msg = scrub(f"cannot open storage {redact(url)}: {e}", url)
            raise RuntimeError(msg) from None
    if sqlite:
        _immediate(storage)
    return storage


def _immediate(storage: RDBStorage) -> None:
    """Every SQLite transaction starts with BEGIN IMMEDIATE (the write lock at once).

    Taking a WAITING trial reads its state and then writes RUNNING; SQLite ignores the row
    lock Optuna asks for, and its deferred transactions let two processes both read
    WAITING and both take the trial (seen with 4 workers starting together). Holding the
    write lock from the first read makes the check and the write one step. PostgreSQL
    honours the row lock (SELECT ... FOR UPDATE)."""
    from sqlalchemy import event

    event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    storage.engine.dispose()  # connections opened before the listener start afresh


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


class ConfigMismatch(ValueError):
    """Cells whose (variant, depth, seed) the study already holds with another config."""


def check_configs(by_cell: dict[str, list[FrozenTrial]], cells: Iterable[Cell]) -> None:
    """Refuse to mix configs in one study: a cell's results are only comparable with the
    cells trained by the same protocol (budget, dataset, `--set` values, catalog)."""
    for cell in cells:
        old = next((t.user_attrs.get("config") for t in by_cell.get(cell.key, [])), None)
        if old is None:
            continue
        before, now = json.loads(old), cell.config.to_dict()
        changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in now.items() if before.get(k) != v]
        if changed:
            raise ConfigMismatch(
                f"study {cell.study!r} already holds cell {cell.key} trained with another "
                f"config ({'; '.join(changed[:6])}); results of different protocols do not "
                "mix: give this run its own --out (or --storage), or delete the old study"
            )


def enqueue(study: optuna.Study, cells: Iterable[Cell], budget: str) -> int:
    """Enqueue every cell that has no trial yet, or whose trials all failed without a
    live retry (a crash that is worth running again: it resumes from its checkpoint).
    Returns the number enqueued. Finished cells (done or diverged) are never re-queued.
    Raises ConfigMismatch, enqueuing nothing, if a cell exists with another config."""
    cells = list(cells)
    by_cell: dict[str, list[FrozenTrial]] = {}
    for t in trials(study):
        if key := cell_key(t):
            by_cell.setdefault(key, []).append(t)
    check_configs(by_cell, cells)
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


def host_id() -> str:
    """This machine and PID namespace: hostname, boot id and PID-namespace inode, so that
    two containers sharing a hostname (e.g. with host networking) are told apart."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(
                os.readlink(path) if path.endswith("pid") else Path(path).read_text().strip()
            )
        except OSError:
            parts.append("?")
    return "/".join(parts)


def claim(trial: optuna.Trial) -> None:
    """Record which process runs `trial` (user attributes host, host_id, pid, claim)."""
    for key, value in _claim_attrs(trial.number).items():
        trial.set_user_attr(key, value)


def _claim_attrs(number: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "host_id": host_id(), "pid": os.getpid(), CLAIM: number}


def take_waiting(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Move the WAITING trial to RUNNING for this process, as `study.optimize` does when
    it pops one; False if another worker took it first. The caller keeps its heartbeat
    (`Heartbeats`) and finishes it (`complete` or `requeue`)."""
    storage = study._storage
    # Beat first: a trial that is RUNNING always has a heartbeat, so a kill at any moment
    # leaves it for the stale check (a beat on a trial another worker wins is harmless).
    storage.record_heartbeat(trial._trial_id)
    try:
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    try:
        for key, value in _claim_attrs(trial.number).items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # failed meanwhile (e.g. re-queued by a recovering worker)
    return True


def complete(study: optuna.Study, trial_id: int, result: dict[str, Any], value: float) -> bool:
    """Store the result of a trial taken by `take_waiting` and mark it COMPLETE (result
    first: a cell is finished once it is COMPLETE with a result). False if the trial was
    failed meanwhile (its re-queued copy then finds the final checkpoint)."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, RESULT, json.dumps(result))
        return storage.set_trial_state_values(trial_id, TrialState.COMPLETE, values=[value])
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def fail(study: optuna.Study, trial_id: int, error: str) -> None:
    """Mark a trial taken by `take_waiting` FAIL with its error, as `study.optimize` does
    for the trial whose objective raised (a rerun of `studies.run` queues it again)."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, "error", error[:2000])
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


class Heartbeats:
    """Records the heartbeat of trials taken outside `study.optimize` every heartbeat
    interval (`optimize` does so only for its own trial), in a daemon thread."""

    def __init__(self, study: optuna.Study, trial_ids: Iterable[int]) -> None:
        self.storage, self.trial_ids = study._storage, list(trial_ids)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat_once(self) -> None:
        for trial_id in self.trial_ids:
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception:  # noqa: BLE001 - a missed beat; the next one may work
                pass

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval() or HEARTBEAT_INTERVAL
        while not self.stop.wait(interval):
            self._beat_once()

    def __enter__(self) -> Heartbeats:
        if self.trial_ids:
            self._beat_once()
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def requeue(study: optuna.Study, trial_id: int) -> bool:
    """Fail the RUNNING trial `trial_id` and re-queue its cell, as the heartbeat check does
    after the grace period. False if it was no longer running (another process won)."""
    storage = study._storage
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another process got there first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    callback(study, storage.get_trial(trial_id))
    return True


def requeue_dead_local(study: optuna.Study) -> int:
    """Fail and re-queue RUNNING trials whose worker ran on this host and has died (a
    killed local run need not wait for the heartbeat grace period). Returns the count.
    Only trials claimed by their own number count: a re-queued copy carries its dead
    predecessor's pid until a worker claims it."""
    host, hid = socket.gethostname(), host_id()
    n = 0
    for t in trials(study):
        attrs = t.user_attrs
        if t.state != TrialState.RUNNING or attrs.get("host") != host:
            continue
        if attrs.get(CLAIM, t.number) != t.number or attrs.get("host_id", hid) != hid:
            continue
        pid = attrs.get("pid")
        if pid is None or _alive(int(pid)):
            continue
        n += requeue(study, t._trial_id)
    return n


# (study, trial id) -> when this process first saw the RUNNING trial unclaimed (monotonic).
_UNCLAIMED_SINCE: dict[tuple[str, int], float] = {}


def requeue_unclaimed(study: optuna.Study) -> int:
    """Fail and re-queue RUNNING cell trials that stay unclaimed for the grace period.

    A live worker claims a trial (`claim`) within moments of taking it; one killed in
    between leaves a trial with neither a claim nor, when `study.optimize` took it, a
    heartbeat, which the stale check never sees. Timed by this process's own clock from
    the first time it saw the trial unclaimed (the trials' start times come from the
    clocks of other machines). Returns the count."""
    _, grace = heartbeat_settings()
    now, n, seen = time.monotonic(), 0, set()
    for t in trials(study):
        if t.state != TrialState.RUNNING or cell_key(t) is None:
            continue
        if t.user_attrs.get(CLAIM) == t.number:
            continue
        key = (study.study_name, t._trial_id)
        seen.add(key)
        if now - _UNCLAIMED_SINCE.setdefault(key, now) > grace:
            n += requeue(study, t._trial_id)
    for key in [k for k in _UNCLAIMED_SINCE if k[0] == study.study_name and k not in seen]:
        del _UNCLAIMED_SINCE[key]  # claimed or finished since
    return n


def recover(study: optuna.Study) -> int:
    """Re-queue the cells of dead workers: local ones at once, others once their heartbeat
    is older than the grace period, and trials nobody claimed. Returns the number
    re-queued locally or unclaimed."""
    n = requeue_dead_local(study) + requeue_unclaimed(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return n


def wait_for_orphans(study: optuna.Study, own_trial: int | None = None) -> bool:
    """Called by a worker whose queue is empty while other workers may still run cells:
    keep re-queueing the cells of dead workers for up to one grace period (plus two
    heartbeats), the longest a dead worker's trial can look alive. True as soon as a cell
    is waiting (go and take it); False once no other cell trial is running or the wait is
    over (the running ones have live workers). A worker that dies after that leaves its
    cell RUNNING until the next worker or `studies.run` looks."""
    interval, grace = heartbeat_settings()
    deadline = time.monotonic() + grace + 2 * interval
    while True:
        recover(study)
        states = [
            t.state for t in trials(study) if cell_key(t) is not None and t.number != own_trial
        ]
        if TrialState.WAITING in states:
            return True
        if TrialState.RUNNING not in states or time.monotonic() > deadline:
            return False
        time.sleep(min(interval, 5))


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
