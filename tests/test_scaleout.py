"""Scale-out: workers joining a study from outside, SIGKILL and heartbeat recovery with
exactly-once cells, PostgreSQL, the SLURM launcher (submitit's local executor and a fake
SLURM executor) and storage passwords kept out of every output.

PostgreSQL: the URL comes from RESNET_REPRO_TEST_PG_URL (set by .ci/run); without it the
test starts a throwaway cluster with the Debian binaries (/usr/lib/postgresql/*/bin),
owned by the `postgres` user when run as root. It skips when neither works, and fails
under REQUIRE_SYSTEM_DEPS=1.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import require_or_skip
from optuna.trial import TrialState

from ablations import Cell
from resnet_repro.config import RunConfig
from studies import launch, store
from studies import run as run_cli
from studies import worker as worker_cli

ROOT = Path(__file__).resolve().parent.parent
# Heartbeats every second, a dead worker's trial is stale after 3: no test waits 60 s.
FAST_HEARTBEAT = {"RESNET_REPRO_HEARTBEAT_INTERVAL": "1", "RESNET_REPRO_GRACE_PERIOD": "3"}


def _fast_heartbeat(monkeypatch) -> None:
    """Heartbeats every second, a 3-second grace period (FAST_HEARTBEAT), in this process."""
    for k, v in FAST_HEARTBEAT.items():
        monkeypatch.setenv(k, v)


def _cells(name: str, seeds: int, iterations: int, eval_every: int) -> list[Cell]:
    cfg = RunConfig(
        dataset="synthetic",
        depth=8,
        batch_size=16,
        subset=256,
        eval_batch_size=256,
        iterations=iterations,
        milestones=(iterations // 2,),
        eval_every=eval_every,
    )
    return [Cell(name, "base", 8, s, cfg) for s in range(seeds)]


def _new_study(url: str, name: str, cells: list[Cell]) -> optuna.Study:
    st = store.create_or_load(store.open_storage(url), name)
    assert store.enqueue(st, cells, "smoke") == len(cells)
    return st


def _complete_by_cell(st: optuna.Study) -> Counter:
    return Counter(
        store.cell_key(t)
        for t in store.trials(st)
        if t.state == TrialState.COMPLETE and store.cell_key(t)
    )


def _spawn_worker(name: str, url: str, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    """`python -m studies.worker` with the URL in the environment (not in argv)."""
    cmd = [sys.executable, "-m", "studies.worker", name, "--out", str(out), "--device", "cpu"]
    cmd += ["--threads", "1", "--wandb", "disabled", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", RESNET_REPRO_STORAGE=url, **FAST_HEARTBEAT)
    with open(log, "w") as f:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.time())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


# --- passwords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, password, shown",
    [
        ("postgresql://u:s3cret@db:5432/x", "s3cret", "postgresql://u:***@db:5432/x"),
        ("postgresql+psycopg2://u:s3c@r/et@db/x", "s3c@r/et", "postgresql+psycopg2://u:***@db/x"),
        ("postgresql://u:s3c%40ret@db/x", "s3c@ret", "postgresql://u:***@db/x"),
        ("postgresql://u@db/x?password=s3cret&sslmode=require", "s3cret", None),
        ("postgresql://db/x", None, "postgresql://db/x"),
        ("sqlite:////tmp/a:b/study.db", None, "sqlite:////tmp/a:b/study.db"),
    ],
)
def test_redact_hides_every_password_form(url, password, shown):
    red = store.redact(url)
    if shown is not None:
        assert red == shown
    if password is not None:
        assert password not in red
        text = store.scrub(f"failed at {url}: password {password} rejected", url)
        assert password not in text and "s3c" not in text


def test_worker_error_on_unreachable_postgres_shows_no_password(tmp_path, capsys):
    url = "postgresql://resnet:s3cret-pw@127.0.0.1:9/nodb"
    code = worker_cli.main(["s", "--storage", url, "--out", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot open storage" in err
    assert "s3cret-pw" not in err and "resnet:***@127.0.0.1" in err
    with pytest.raises(RuntimeError) as e:
        store.open_storage(url)
    assert "s3cret-pw" not in str(e.value)


def _fake_slurm(bindir: Path) -> Path:
    """`srun` and `sbatch` stand-ins: sbatch keeps a copy of the script it is given and
    answers as SLURM does. Returns where the scripts go."""
    bindir.mkdir()
    kept = bindir / "submitted"
    kept.mkdir()
    (bindir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {kept}/job.sh\necho "Submitted batch job 4242"\n'
    )
    for tool in ("srun", "sbatch"):
        (bindir / tool).chmod(0o755)
    return kept


def test_slurm_submission_passes_options_and_shows_no_password(tmp_path, capsys, monkeypatch):
    kept = _fake_slurm(tmp_path / "bin")
    monkeypatch.delenv("RESNET_REPRO_STORAGE", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    url = "postgresql://resnet:s3cret-pw@db.example:5432/studies"
    args = run_cli.parse_args(
        ["crop_ablation", "--launcher", "slurm", "--workers", "3", "--storage", url]
        + ["--out", str(tmp_path), "--partition", "gpu", "--account", "lab", "--time-limit", "90"]
        + ["--gpus-per-worker", "2", "--cpus-per-worker", "6", "--mem-gb", "20"]
    )
    assert launch.submit_slurm(args, url) == 0
    out = capsys.readouterr()
    assert "s3cret-pw" not in out.out + out.err
    assert "submitted 3 workers (slurm) as job 4242" in out.out
    assert "resnet:***@db.example" in out.out
    script = (kept / "job.sh").read_text()
    assert "s3cret-pw" not in script
    for flag in (
        "--export=ALL",  # the jobs inherit the storage URL from the environment
        "--partition=gpu",
        "--account=lab",
        "--time=90",
        "--gpus-per-node=2",
        "--cpus-per-task=6",
        "--mem=20GB",
        "--array=0-2%3",
        "--signal=USR2@",
        "--job-name=resnet-repro-crop_ablation",
    ):
        assert f"#SBATCH {flag}" in script, flag
    # The pickled job: a checkpointable WorkerJob with the worker's arguments.
    folder = tmp_path / "crop_ablation" / "slurm"
    [submitted] = [p for p in folder.glob("*.pkl") if "4242_0" in p.name]
    delayed = pickle.loads(submitted.read_bytes())
    assert isinstance(delayed.function, launch.WorkerJob)
    (argv,) = delayed.args
    # The password stays out of the job files: the jobs read the URL from the environment.
    assert b"s3cret-pw" not in submitted.read_bytes()
    assert argv[:3] == ["crop_ablation", "--storage-env", "RESNET_REPRO_STORAGE"]
    assert argv[argv.index("--threads") + 1] == "6"
    assert "RESNET_REPRO_STORAGE" not in os.environ  # set for the submission only
    monkeypatch.setenv("RESNET_REPRO_STORAGE", url)
    assert worker_cli.storage_url(worker_cli.parse_args(argv)) == url
    monkeypatch.delenv("RESNET_REPRO_STORAGE")
    assert worker_cli.main(argv) == 2
    assert "--storage-env RESNET_REPRO_STORAGE: the environment variable is not set" in (
        capsys.readouterr().err
    )
    # submitit calls checkpoint(*args) on preemption and resubmits what it returns.
    again = delayed.function.checkpoint(argv)
    assert isinstance(again.function, launch.WorkerJob) and again.args == (argv,)
    pickle.loads(pickle.dumps(again))


# --- recovery, in this process -------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_release_requeues_the_running_cell(tmp_path):
    url = store.default_storage(tmp_path, "rel")
    st = _new_study(url, "rel", _cells("rel", 1, 4, 2))
    running = st.ask()  # a worker took the cell
    w = worker_cli.Worker("rel", url, out=tmp_path, device="cpu", wandb_mode="disabled")
    job = launch.WorkerJob()
    job._worker = w
    assert not w.release()  # nothing running in this worker
    w.current_trial_ids = [running._trial_id]
    job.checkpoint(["rel"])  # what submitit calls on preemption
    trials = store.trials(st)
    assert trials[0].state == TrialState.FAIL
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]
    assert store.cell_key(trials[1]) == store.cell_key(trials[0])


def _take_in_rounds(url, name, rounds, barrier, results, use_ask):
    st = store.load(store.open_storage(url, heartbeat=False), name)
    for _ in range(rounds):
        waiting = [t for t in store.trials(st) if t.state == TrialState.WAITING]
        barrier.wait()  # every process takes at the same moment
        if use_ask:  # how study.optimize pops an enqueued trial
            results.put(st.ask()._trial_id)
        else:
            results.put(next((t._trial_id for t in waiting if store.take_waiting(st, t)), None))
        barrier.wait()


@pytest.mark.parametrize("use_ask", [True, False], ids=["optimize_pop", "take_waiting"])
def test_sqlite_workers_taking_at_once_never_take_one_cell_twice(tmp_path, use_ask):
    import multiprocessing

    url, name, procs, rounds = store.default_storage(tmp_path, "race"), "race", 4, 6
    st = _new_study(url, name, _cells(name, procs * rounds, 4, 2))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [
        ctx.Process(target=_take_in_rounds, args=(url, name, rounds, barrier, results, use_ask))
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    taken = [results.get(timeout=120) for _ in range(procs * rounds)]
    for w in workers:
        w.join(timeout=60)
    assert None not in taken and len(set(taken)) == len(taken) == procs * rounds
    assert {t.state for t in store.trials(st)} == {TrialState.RUNNING}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_cell_taken_but_never_claimed_is_requeued_after_the_grace_period(tmp_path, monkeypatch):
    _fast_heartbeat(monkeypatch)
    url = store.default_storage(tmp_path, "unclaimed")
    st = _new_study(url, "unclaimed", _cells("unclaimed", 2, 4, 2))
    # A worker killed between popping a cell and claiming it: RUNNING, no heartbeat, no pid.
    lost, alive = store.trials(st)
    st._storage.set_trial_state_values(lost._trial_id, TrialState.RUNNING)
    assert store.take_waiting(st, alive)  # claimed by this (live) process
    assert store.recover(st) == 0  # within the grace period: it may still be claimed
    time.sleep(4)
    with store.Heartbeats(st, [alive._trial_id]):
        assert store.recover(st) == 1
    states = [t.state for t in store.trials(st)]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert store.cell_key(store.trials(st)[2]) == store.cell_key(lost)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_pack_mates_are_kept_alive_by_heartbeats_and_released_together(tmp_path, monkeypatch):
    _fast_heartbeat(monkeypatch)
    url = store.default_storage(tmp_path, "mates")
    st = _new_study(url, "mates", _cells("mates", 3, 4, 2))
    first, second, third = store.trials(st)
    assert store.take_waiting(st, second) and store.take_waiting(st, third)
    assert not store.take_waiting(st, second)  # taken already: nobody takes it twice
    attrs = store.trials(st)[1].user_attrs
    assert attrs["pid"] == os.getpid() and attrs[store.CLAIM] == second.number
    # Beating, the mates outlive the grace period; a silent one is failed and re-queued.
    with store.Heartbeats(st, [second._trial_id]):
        time.sleep(5)
        store.recover(st)  # what a worker does when its queue is empty
    states = [t.state for t in store.trials(st)]
    assert states[:3] == [TrialState.WAITING, TrialState.RUNNING, TrialState.FAIL]
    assert [store.cell_key(t) for t in store.trials(st)[3:]] == [store.cell_key(third)]
    # A pack is released as a whole (preemption): every cell it holds goes back.
    w = worker_cli.Worker("mates", url, out=tmp_path, device="cpu", wandb_mode="disabled")
    running = st.ask()  # the trial optimize would hand the worker: the first cell
    assert store.cell_key(store.trials(st)[running.number]) == store.cell_key(first)
    w.current_trial_ids = [running._trial_id, second._trial_id]
    assert w.release()
    waiting = Counter(store.cell_key(t) for t in store.trials(st) if t.state == TrialState.WAITING)
    assert waiting == Counter({store.cell_key(t): 1 for t in (first, second, third)})
    assert store.complete(st, second._trial_id, {"status": "finished"}, 1.0) is False


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_heartbeat_requeues_the_cell_of_a_silent_remote_worker(tmp_path, monkeypatch):
    _fast_heartbeat(monkeypatch)
    url = store.default_storage(tmp_path, "hb")
    st = _new_study(url, "hb", _cells("hb", 1, 4, 2))
    # A worker on another machine took the cell, beat once, and vanished.
    lost = st.ask()
    for k, v in {"host": "elsewhere", "pid": 1, store.CLAIM: lost.number}.items():
        lost.set_user_attr(k, v)
    st._storage.record_heartbeat(lost._trial_id)
    w = worker_cli.Worker(
        "hb", url, out=tmp_path, device="cpu", threads=1, wandb_mode="disabled", show_progress=False
    )
    t0 = time.time()
    assert w.run() == 1
    assert time.time() - t0 < 30
    trials = store.trials(st)
    assert trials[0].state == TrialState.FAIL
    assert _complete_by_cell(st) == Counter({"base|8|0": 1})


# --- worker processes --------------------------------------------------------------------


@pytest.mark.slow
def test_sqlite_two_workers_one_killed_mid_cell_every_cell_exactly_once(tmp_path):
    name = "kill"
    url = store.default_storage(tmp_path, name)
    cells = _cells(name, 3, 20, 10)
    st = _new_study(url, name, cells)
    procs = [
        _spawn_worker(name, url, tmp_path, tmp_path / f"w{i}.log", "--checkpoint-every", "5")
        for i in range(2)
    ]
    by_pid = {p.pid: p for p in procs}
    ckdir = tmp_path / name / "checkpoints"
    killed, deadline = None, time.time() + 120
    try:
        while killed is None and time.time() < deadline:
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
            for t in store.trials(st):
                a = t.user_attrs
                if t.state != TrialState.RUNNING or a.get(store.CLAIM) != t.number:
                    continue
                if a.get("pid") in by_pid and (ckdir / f"{a['train_id']}.pt").exists():
                    victim = by_pid[a["pid"]]
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    killed = (t.number, store.cell_key(t))
                    break
        assert killed is not None, "every cell finished before a worker could be killed"
        survivor = next(p for p in procs if p.returncode is None)
        assert _wait([survivor], 120) == [0]
    finally:
        _wait(procs, 1)
    done = _complete_by_cell(st)
    assert done == Counter({c.key: 1 for c in cells}), done
    assert store.trials(st)[killed[0]].state == TrialState.FAIL
    resumed = store.result_of(store.finished(st)[killed[1]])
    assert resumed["resumed_from"] > 0
    assert resumed["curves"]["iteration"] == [10, 20]


@contextlib.contextmanager
def _throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL cluster in a temporary directory on a free 127.0.0.1 port, with a
    password-protected user and database; removed afterwards."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    bindir = Path(bins[-1]).parent if bins else None
    if bindir is None and shutil.which("initdb"):
        bindir = Path(shutil.which("initdb")).parent  # type: ignore[arg-type]
    require_or_skip(bindir is not None, "PostgreSQL is not installed (apt-get install postgresql)")
    root = os.geteuid() == 0
    as_pg = ["runuser", "-u", "postgres", "--"] if root else []
    tmp = Path(tempfile.mkdtemp(prefix="resnet-repro-pg-"))
    password = uuid.uuid4().hex
    (tmp / "pw").write_text(password)
    if root:
        shutil.chown(tmp, "postgres")
        shutil.chown(tmp / "pw", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp / "data"

    def pg(*cmd: str) -> None:
        subprocess.run([*as_pg, *cmd], check=True, capture_output=True, timeout=120)

    started = False
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres"]
        pg(*initdb, "-A", "scram-sha-256", f"--pwfile={tmp / 'pw'}")
        opts = f"-h 127.0.0.1 -p {port} -k {tmp} -c fsync=off -c full_page_writes=off"
        log = str(tmp / "log")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", log, "-w", "start")
        started = True
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(Exception):
                pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url = os.environ.get("RESNET_REPRO_TEST_PG_URL")
    if url:
        yield url
        return
    try:
        with _throwaway_postgres() as url:
            yield url
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or b"").decode(errors="replace")[-500:]
        require_or_skip(False, f"could not start a throwaway PostgreSQL: {detail}")


@pytest.mark.slow
def test_postgres_three_workers_every_cell_exactly_once(pg_url, tmp_path):
    drivers = [m for m in ("psycopg2", "psycopg") if importlib.util.find_spec(m) is not None]
    require_or_skip(bool(drivers), "no PostgreSQL driver (pip install -e '.[postgres]')")
    name = f"pg-{uuid.uuid4().hex[:8]}"
    cells = _cells(name, 4, 10, 5)
    try:
        st = _new_study(pg_url, name, cells)
    except RuntimeError as e:
        require_or_skip(False, f"PostgreSQL at {store.redact(pg_url)} unreachable: {e}")
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [_spawn_worker(name, pg_url, tmp_path, log) for log in logs]
    try:
        assert _wait(procs, 180) == [0, 0, 0], [log.read_text()[-2000:] for log in logs]
        assert _complete_by_cell(st) == Counter({c.key: 1 for c in cells})
        ran = [int(log.read_text().split(": ran ")[1].split()[0]) for log in logs]
        assert sum(ran) == len(cells)
        password = pg_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        assert all(password not in log.read_text() for log in logs)
    finally:
        optuna.delete_study(study_name=name, storage=store.open_storage(pg_url))


# --- SLURM launcher through submitit's local executor ------------------------------------


@pytest.mark.slow
def test_submitit_local_job_array_runs_a_smoke_study(tmp_path, capsys, monkeypatch):
    for k, v in {"OMP_NUM_THREADS": "1", **FAST_HEARTBEAT}.items():
        monkeypatch.setenv(k, v)
    argv = ["stem_pool_ablation", "--seeds", "1", "--depths", "8", "--out", str(tmp_path)]
    argv += ["--budget", "smoke", "--dataset", "synthetic", "--wandb", "disabled"]
    argv += ["--set", "iterations=10", "--set", "milestones=5", "--set", "eval_every=5"]
    argv += ["--set", "batch_size=16", "--set", "subset=256"]
    argv += ["--launcher", "slurm", "--cluster", "local", "--workers", "2", "--device", "cpu"]
    assert run_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 2 workers (local)" in out
    st = store.load(store.open_storage(store.default_storage(tmp_path, argv[0])), argv[0])
    assert _complete_by_cell(st) == Counter({"no_pool|8|0": 1, "pool|8|0": 1})
    logs = list((tmp_path / argv[0] / "slurm").glob("*_log.out"))
    assert len(logs) == 2 and all("ran " in p.read_text() for p in logs)
