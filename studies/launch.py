"""Start workers on SLURM through submitit: a job array of `studies.worker` processes.

`python -m studies.run STUDY --launcher slurm --workers N --storage postgresql://...`
submits N workers as one job array. Each worker joins the study through the shared
storage, so any number of arrays (or workers started by hand) can serve one study. On
preemption or the time limit, submitit's checkpointing requeues the job: the worker's
running cell is re-queued by the heartbeat and resumed from its checkpoint file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studies import store


def add_slurm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SLURM (with --launcher slurm)")
    g.add_argument("--partition", default=None)
    g.add_argument("--account", default=None)
    g.add_argument("--time-limit", type=int, default=24 * 60, help="minutes per job")
    g.add_argument("--gpus-per-worker", type=int, default=1)
    g.add_argument("--cpus-per-worker", type=int, default=8)
    g.add_argument("--mem-gb", type=int, default=32)
    g.add_argument("--slurm-folder", default=None, help="logs (default: OUT/STUDY/slurm)")
    g.add_argument(
        "--cluster", default=None, help=argparse.SUPPRESS
    )  # submitit cluster override ("local" runs the array as local processes: tests)


class WorkerJob:
    """A picklable, checkpointable submitit job: run a worker until the queue is empty."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __call__(self) -> int:
        from studies.worker import main

        return main(self.argv)

    def checkpoint(self):  # called by submitit on preemption / time limit
        import submitit

        return submitit.helpers.DelayedSubmission(WorkerJob(self.argv))


def worker_argv(args: argparse.Namespace, url: str, threads: int | None) -> list[str]:
    argv = [args.study, "--storage", url, "--out", str(Path(args.out).resolve())]
    argv += ["--device", args.device, "--compile", args.compile]
    argv += ["--wandb", args.wandb, "--wandb-project", args.wandb_project]
    if threads:
        argv += ["--threads", str(threads)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.checkpoint_every:
        argv += ["--checkpoint-every", str(args.checkpoint_every)]
    if args.deterministic:
        argv.append("--deterministic")
    return argv


def submit_slurm(args: argparse.Namespace, url: str) -> int:
    import submitit

    if url.startswith("sqlite") and args.cluster != "local":
        print(
            f"warning: {store.redact(url)} is a SQLite file: workers on other nodes need a "
            "shared filesystem that supports locking; prefer --storage postgresql://...",
            file=sys.stderr,
        )
    folder = Path(args.slurm_folder or Path(args.out) / args.study / "slurm")
    executor = submitit.AutoExecutor(folder=folder, cluster=args.cluster)
    params = dict(timeout_min=args.time_limit, slurm_array_parallelism=args.workers)
    if executor.cluster == "slurm":
        params.update(
            slurm_partition=args.partition,
            slurm_account=args.account,
            gpus_per_node=args.gpus_per_worker,
            cpus_per_task=args.cpus_per_worker,
            mem_gb=args.mem_gb,
            slurm_job_name=f"resnet-repro-{args.study}",
        )
        params = {k: v for k, v in params.items() if v is not None}
    executor.update_parameters(**params)
    threads = args.threads or (args.cpus_per_worker if executor.cluster == "slurm" else 1)
    jobs = executor.map_array(
        lambda job: job(), [WorkerJob(worker_argv(args, url, threads)) for _ in range(args.workers)]
    )
    print(
        f"submitted {len(jobs)} workers ({executor.cluster}) as job "
        f"{jobs[0].job_id.split('_')[0] if jobs else '-'}; logs in {folder}",
        flush=True,
    )
    if executor.cluster in ("local", "debug"):
        codes = [j.result() for j in jobs]
        return 0 if all(c == 0 for c in codes) else 1
    return 0
