"""Run a study: `python -m studies.run crop_ablation --seeds 5`.

Plans every (variant, depth, seed) cell, enqueues the new ones in the study's Optuna
storage (SQLite under --out by default; `--storage postgresql://...` to share with other
machines) and runs workers until every cell is finished. Rerunning the same command
skips finished cells and resumes an interrupted one from its checkpoint; `--seeds 5`
after `--seeds 3` runs only seeds 3 and 4.

Workers: `--workers K` starts K local processes (one per GPU where there are several; on
a CPU each gets its share of the cores), or with `--launcher slurm` a SLURM job array.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import ablations
from ablations import Cell, Study
from resnet_repro.config import BUDGETS, DATASETS, field_names, parse_override
from resnet_repro.models import forward_macs
from studies import store
from studies.progress import StudyProgress
from studies.tracking import resolve_mode
from studies.worker import Worker, add_worker_args, resolve_device, worker_options, worker_settings


class UsageError(Exception):
    """Bad command-line input: exit status 2 with the message."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m studies.run",
        description="Run every (variant, depth, seed) cell of a study, resumably.",
    )
    p.add_argument("study", nargs="?", help="study name (see --list)")
    p.add_argument("--list", action="store_true", help="list the studies and their questions")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    p.add_argument("--depths", default=None, help="comma-separated, e.g. 20,56")
    p.add_argument("--budget", default="paper", choices=list(BUDGETS))
    p.add_argument("--dataset", default=None, choices=list(DATASETS))
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a RunConfig field in every cell (repeatable)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite)")
    p.add_argument("--launcher", default="local", choices=["local", "slurm"])
    p.add_argument("--dry-run", action="store_true", help="print the plan and compute")
    add_worker_args(p)
    from studies.launch import add_slurm_args

    add_slurm_args(p)
    return p.parse_args(argv)


def plan(study: Study, args: argparse.Namespace) -> list[Cell]:
    overrides = {}
    for text in args.set:
        try:
            name, value = parse_override(text)
        except ValueError as e:
            name = text.split("=", 1)[0].strip()
            close = difflib.get_close_matches(name, field_names(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(f"{e}{hint}") from None
        if name == "depth":
            raise UsageError(f"--set {text!r}: a study sets the depth per cell: use --depths")
        overrides[name] = value
    if args.dataset:
        overrides["dataset"] = args.dataset
    depths = None
    if args.depths:
        try:
            depths = tuple(int(d) for d in args.depths.split(",") if d.strip())
        except ValueError:
            raise UsageError(f"--depths {args.depths!r}: expected e.g. 20,56") from None
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: allowed values are integers >= 1")
    if args.pack < 1:
        raise UsageError(f"--pack {args.pack}: allowed values are integers >= 1")
    try:
        return study.cells(range(args.seeds), depths, budget=args.budget, **overrides)
    except ValueError as e:
        raise UsageError(str(e)) from None


def describe_plan(study: Study, cells: list[Cell]) -> str:
    """The cell plan and estimated compute (trainings, images, FLOPs)."""
    trainings: dict[str, Cell] = {}
    for c in cells:
        trainings.setdefault(c.train_id, c)
    lines = [f"study {study.name}: {study.question}"]
    lines.append(f"{len(cells)} cells, {len(trainings)} trainings (eval-only variants share)")
    flops = images = 0.0
    by_depth: dict[tuple[str, int], int] = {}
    for c in trainings.values():
        n = c.config.iterations * c.config.batch_size
        images += n
        flops += 6 * forward_macs(c.config) * n  # ~3 passes x 2 FLOPs per MAC
        by_depth[(c.variant, c.depth)] = by_depth.get((c.variant, c.depth), 0) + 1
    for (variant, depth), k in by_depth.items():
        cfg = next(c.config for c in cells if (c.variant, c.depth) == (variant, depth))
        lines.append(
            f"  {variant:<16} depth {depth:<5} trainings {k:<3} "
            f"iterations {cfg.iterations} batch {cfg.batch_size} dataset {cfg.dataset}"
        )
    lines.append(f"compute: {images / 1e6:.1f}M training images, {flops / 1e15:.2f} PFLOP")
    return "\n".join(lines)


def list_studies() -> str:
    rows = []
    for s in ablations.all_studies().values():
        rows.append(f"{s.name:<24} {s.question}")
    return "\n".join(sorted(rows))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print(list_studies())
        return 0
    if not args.study:
        print("error: name a study (python -m studies.run --list)", file=sys.stderr)
        return 2
    try:
        study = ablations.get(args.study)
        cells = plan(study, args)
        mode = resolve_mode(args.wandb)
        if args.launcher == "local":  # SLURM nodes may have devices this machine lacks
            resolve_device(args.device)
    except (KeyError, UsageError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe_plan(study, cells))
        return 0
    url = args.storage or store.default_storage(args.out, study.name)
    Path(args.out, study.name).mkdir(parents=True, exist_ok=True)
    try:
        storage = store.open_storage(url)
        st = store.create_or_load(storage, study.name)
        st.set_user_attr("question", study.question)
        requeued = store.recover(st)
        added = store.enqueue(st, cells, args.budget)
    except store.ConfigMismatch as e:
        print(f"error: {e} (storage {store.redact(url)})", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - an unreachable storage: say so, no traceback
        print(f"error: storage {store.redact(url)}: {store.scrub(str(e), url)}", file=sys.stderr)
        return 2
    keys = {c.key for c in cells}
    counts = store.progress(st, keys)
    print(
        f"{study.name}: {counts['total']} cells, {counts['done']} done, {added} queued"
        + (f", {requeued} re-queued from dead workers" if requeued else "")
        + f" (storage {store.redact(url)})",
        flush=True,
    )
    if args.launcher == "slurm":
        from studies.launch import submit_slurm

        return submit_slurm(args, url)
    t0 = time.time()
    if args.workers <= 1:
        worker = Worker(study.name, url, storage=storage, **worker_settings(args, mode))
        bar = StudyProgress(study.name, len(keys), counts["done"])
        _run_with_progress(worker, st, keys, bar)
    else:
        _run_processes(args, url, st, keys, mode)
    counts = store.progress(st, keys)
    report(study.name, st, keys, counts, time.time() - t0)
    return 0 if counts["done"] == counts["total"] else 1


def _run_with_progress(worker: Worker, st, keys: set[str], bar: StudyProgress) -> None:
    worker.on_cell_done = lambda: bar.update(bar.done + 1)
    try:
        worker.run()
    finally:
        bar.close()


def _run_processes(args, url: str, st, keys: set[str], mode: str) -> None:
    """K worker processes; GPUs round-robin, CPU cores split evenly."""
    k = args.workers
    gpus = torch.cuda.device_count() if args.device in ("auto", "cuda") else 0
    cores = os.cpu_count() or 1
    procs = []
    logs = Path(args.out, args.study, "logs")
    logs.mkdir(parents=True, exist_ok=True)
    for i in range(k):
        device = f"cuda:{i % gpus}" if gpus else args.device
        threads = args.threads or (max(1, cores // k) if not gpus else None)
        # The URL goes through the environment, so a password never shows in `ps`.
        cmd = [sys.executable, "-m", "studies.worker", args.study, "--out", args.out]
        cmd += worker_options(
            argparse.Namespace(**{**vars(args), "device": device, "wandb": mode}), threads
        )
        log = open(logs / f"worker-{i}.log", "a")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads or 1), RESNET_REPRO_STORAGE=url)
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    bar = StudyProgress(args.study, len(keys), store.progress(st, keys)["done"])
    try:
        while any(p.poll() is None for p, _ in procs):
            bar.update(store.progress(st, keys)["done"])
            time.sleep(2)
        bar.update(store.progress(st, keys)["done"])
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.terminate()
            log.close()
        bar.close()


def report(name: str, st, keys: set[str], counts: dict[str, int], seconds: float) -> None:
    done = store.finished(st)
    diverged = [k for k in keys if k in done and store.result_of(done[k])["status"] == "diverged"]
    line = f"{name}: {counts['done']}/{counts['total']} cells finished in {seconds:.0f} s"
    if diverged:
        line += f"; diverged: {', '.join(sorted(diverged))}"
    if counts["failed"]:
        line += f"; {counts['failed']} failed (rerun the command to retry them)"
    if counts["running"] or counts["waiting"]:
        line += f"; {counts['running']} running and {counts['waiting']} waiting elsewhere"
    print(line, flush=True)
    errs = [
        store.result_of(done[k])["final_test_error"]
        for k in keys
        if k in done and math.isfinite(store.result_of(done[k])["final_test_error"])
    ]
    if errs:
        print(f"final test error over finished cells: {min(errs):.2f}-{max(errs):.2f}%")


if __name__ == "__main__":
    sys.exit(main())
