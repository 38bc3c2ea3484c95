"""Start workers on SLURM through submitit: a job array of `studies.worker` processes.

`python -m studies.run STUDY --launcher slurm --workers N --storage postgresql://...`
submits N workers as one job array (submitit, https://github.com/facebookincubator/submitit).
Each worker joins the study through the shared storage, so any number of arrays (or
workers started by hand) can serve one study.

Preemption and the time limit: SLURM signals the job (USR2, 90 s ahead); submitit calls
`WorkerJob.checkpoint`, which gives the running cell back to the queue at once
(`Worker.release`) and returns the job to resubmit; submitit requeues it. The next worker
to take the cell resumes it from its checkpoint file (<out>/<study>/checkpoints/). Should
a worker die without the signal, the heartbeat re-queues its cell after the grace period.

The hidden option `--cluster local` runs the array as local processes (submitit's local
executor), `--cluster debug` in this process: both for tests.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from studies import store

MAX_TIMEOUTS = 20  # requeues of one worker job at its time limit (submitit's default: 3)


def add_slurm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SLURM (with --launcher slurm)")
    g.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    g.add_argument("--account", default=None, help="SLURM account to charge")
    g.add_argument("--time-limit", type=int, default=24 * 60, help="minutes per job (1440)")
    g.add_argument("--gpus-per-worker", type=int, default=1, help="GPUs per worker (1)")
    g.add_argument("--cpus-per-worker", type=int, default=8, help="CPU cores per worker (8)")
    g.add_argument("--mem-gb", type=int, default=32, help="memory per worker in GB (32)")
    g.add_argument("--slurm-folder", default=None, help="logs (default: OUT/STUDY/slurm)")
    # submitit cluster override: "local" runs the array as local processes, "debug" in
    # this process (tests); default: SLURM when sbatch exists.
    g.add_argument(
        "--cluster", default=None, choices=["slurm", "local", "debug"], help=argparse.SUPPRESS
    )


class WorkerJob:
    """A picklable, checkpointable submitit job: run a worker until the queue is empty.

    Called with the worker's command line (`studies.worker` arguments). submitit calls
    `checkpoint` with the same arguments on preemption or at the time limit."""

    def __init__(self) -> None:
        self._worker: Any = None  # the running studies.worker.Worker (never pickled)

    def __call__(self, argv: list[str]) -> int:
        from studies.worker import main

        def keep(worker: Any) -> None:
            self._worker = worker

        return main(argv, on_worker=keep)

    def checkpoint(self, argv: list[str]) -> Any:
        import submitit

        if self._worker is not None:
            self._worker.release()  # the running cell back to the queue now
        return submitit.helpers.DelayedSubmission(WorkerJob(), argv)

    def __getstate__(self) -> dict[str, Any]:
        return {"_worker": None}


STORAGE_ENV = "RESNET_REPRO_STORAGE"


def worker_argv(args: argparse.Namespace, url: str, threads: int | None) -> list[str]:
    """The workers' command line. A URL with a password is not in it (submitit pickles
    the arguments into job files under the shared output directory): the jobs read it
    from $RESNET_REPRO_STORAGE, which they inherit from the submission (--export=ALL)."""
    from studies.worker import worker_options

    where = ["--storage", url] if store.redact(url) == url else ["--storage-env", STORAGE_ENV]
    argv = [args.study, *where, "--out", str(Path(args.out).resolve())]
    return argv + worker_options(args, threads)


def executor_parameters(args: argparse.Namespace, cluster: str) -> dict[str, Any]:
    """submitit parameters: generic ones, and SLURM's where the cluster is SLURM."""
    params: dict[str, Any] = dict(timeout_min=args.time_limit, name=f"resnet-repro-{args.study}")
    if cluster == "slurm":
        params.update(
            slurm_partition=args.partition,
            slurm_account=args.account,
            slurm_array_parallelism=args.workers,
            gpus_per_node=args.gpus_per_worker or None,  # 0: a CPU partition, no GPU flag
            cpus_per_task=args.cpus_per_worker,
            mem_gb=args.mem_gb,
            tasks_per_node=1,
            nodes=1,
            # The jobs inherit this environment, the storage URL with it (worker_argv).
            slurm_additional_parameters={"export": "ALL"},
        )
    return {k: v for k, v in params.items() if v is not None}


def submit_slurm(args: argparse.Namespace, url: str) -> int:
    """Submit args.workers workers as one array; on the local/debug clusters wait for
    them. Returns the exit status for `studies.run`."""
    import submitit

    if args.workers < 1:
        print(f"error: --workers {args.workers}: allowed values are integers >= 1", file=sys.stderr)
        return 2
    cluster = args.cluster or "slurm"  # submitit would fall back to local processes
    if url.startswith("sqlite") and cluster not in ("local", "debug"):
        print(
            f"warning: {store.redact(url)} is a SQLite file: workers on other nodes need a "
            "shared filesystem that supports locking; prefer --storage postgresql://...",
            file=sys.stderr,
        )
    folder = Path(args.slurm_folder or Path(args.out) / args.study / "slurm").resolve()
    try:
        # A worker array may outlive many time limits: requeue each job up to MAX_TIMEOUTS.
        executor = submitit.AutoExecutor(
            folder=folder, cluster=cluster, slurm_max_num_timeout=MAX_TIMEOUTS
        )
        executor.update_parameters(**executor_parameters(args, executor.cluster))
    except (RuntimeError, ValueError) as e:  # e.g. no sbatch on this machine
        print(f"error: cannot submit to SLURM: {store.scrub(str(e), url)}", file=sys.stderr)
        return 2
    threads = args.threads or (args.cpus_per_worker if executor.cluster == "slurm" else 1)
    argv = worker_argv(args, url, threads)
    saved = os.environ.get(STORAGE_ENV)
    os.environ[STORAGE_ENV] = url  # what the jobs inherit (sbatch or local processes)
    try:
        return _submit_and_wait(args, url, executor, argv, folder)
    finally:
        if saved is None:
            os.environ.pop(STORAGE_ENV, None)
        else:
            os.environ[STORAGE_ENV] = saved


def _submit_and_wait(
    args: argparse.Namespace, url: str, executor: Any, argv: list[str], folder: Path
) -> int:
    jobs = executor.map_array(WorkerJob(), [argv] * args.workers)
    array_id = jobs[0].job_id.split("_")[0] if jobs else "-"
    print(
        f"submitted {len(jobs)} workers ({executor.cluster}) as job {array_id}; "
        f"logs in {folder}\n"
        f"watch: optuna-dashboard {store.redact(store.driver_url(url))}\n"
        f"more workers: python -m studies.worker {args.study} --storage URL --out {args.out}",
        flush=True,
    )
    if executor.cluster not in ("local", "debug"):
        return 0
    codes = []
    for job in jobs:
        try:
            codes.append(job.result())
        except Exception as e:  # noqa: BLE001 - submitit re-raises the worker's failure
            print(
                f"worker job {job.job_id} failed: {store.scrub(str(e), url)[-2000:]}",
                file=sys.stderr,
            )
            codes.append(1)
    return 0 if all(c == 0 for c in codes) else 1
