"""A worker: takes cells from a study's queue and trains them until none is left.

`python -m studies.worker STUDY --storage URL` joins a study from any machine (the URL may
also come from the environment variable RESNET_REPRO_STORAGE, which keeps a password out
of process listings). Each trial popped by `study.optimize` carries one cell; the worker
trains it (resuming from its checkpoint when one exists), stores the result with the
trial and moves on. A trial that carries no cell means the queue is empty: the worker
lingers while other workers' cells may be orphaned (re-queueing those of dead workers and
taking them), then prunes that trial and stops. `Worker.release` gives the running cell
back at once (SLURM preemption, see studies.launch).

Eval-only variants (differing only in `EVAL_FIELDS`, e.g. bn_eval) share one training: the
first of them to run trains with every sibling as an `eval_variant` and stores all their
results in the study (user attribute `train:<train_id>`); the siblings' trials then take
their result from there and train nothing. A file lock keeps two local workers from
training the same group at once.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from resnet_repro.config import RunConfig, from_dict
from resnet_repro.packed import train_packed
from resnet_repro.train import COMPILE_MODES, Callback, ExecOptions, TrainResult, train
from studies import store
from studies.progress import CellProgress
from studies.tracking import WandbRun, cell_wandb_id, replay_to_wandb


def environment(device: str, deterministic: bool) -> dict[str, Any]:
    """Where a run ran: device name, versions, git SHA and whether the tree was dirty."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
    sha, dirty = git_state()
    return {
        "device": device,
        "device_name": name,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "python_version": platform.python_version(),
        "git_sha": sha,
        "git_dirty": dirty,
        "host": socket.gethostname(),
        "deterministic": bool(deterministic or dev.type == "cpu"),
    }


def git_state() -> tuple[str, bool]:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
        return sha or "unknown", dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device here; allowed: auto, cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device {device!r}: allowed values are auto, cpu, cuda, cuda:N")
    return device


class Worker:
    """Runs cells of one study taken from the queue. Settings are execution options."""

    def __init__(
        self,
        study_name: str,
        storage_url: str,
        *,
        storage: RDBStorage | None = None,  # an open storage to reuse (same URL)
        out: str | os.PathLike = "runs",
        device: str = "auto",
        threads: int | None = None,
        compile: str = "off",
        channels_last: bool | None = None,
        pack: int = 1,
        deterministic: bool = False,
        data_dir: str | None = None,
        wandb_mode: str = "disabled",
        wandb_project: str = "resnet-repro",
        checkpoint_every: int | None = None,
        show_progress: bool = True,
    ) -> None:
        self.study_name = study_name
        self.storage_url = storage_url
        self.storage = storage or store.open_storage(storage_url)
        self.study = store.load(self.storage, study_name)
        self.dir = Path(out) / study_name
        self.exec = ExecOptions(
            device=resolve_device(device),
            compile=compile,
            channels_last=channels_last,
            deterministic=deterministic,
            num_threads=threads,
        )
        if not isinstance(pack, int) or pack < 1:
            raise ValueError(f"--pack {pack!r}: allowed values are integers >= 1")
        self.pack = pack
        self.data_dir = data_dir
        self.wandb_mode, self.wandb_project = wandb_mode, wandb_project
        self.checkpoint_every = checkpoint_every
        self.show_progress = show_progress
        self.env = environment(self.exec.device, deterministic)
        self.cells_run = 0
        self.current_trial_ids: list[int] = []  # the trials of the cells being trained
        self.on_cell_done: Callable[[], None] | None = None  # e.g. a study progress bar

    def run(self) -> int:
        """Work until the queue is empty; returns the number of cells this worker ran."""
        self.study.optimize(
            self.objective,
            catch=(Exception,),
            gc_after_trial=False,
            show_progress_bar=False,
        )
        return self.cells_run

    def objective(self, trial: optuna.Trial) -> float:
        key = trial.user_attrs.get(store.CELL)
        if key is None:  # sampled, not enqueued: the queue is empty
            trial.set_user_attr("empty_queue", True)
            if store.wait_for_orphans(self.study, trial.number):
                raise optuna.TrialPruned("a dead worker's cell was re-queued: take it")
            self.study.stop()
            raise optuna.TrialPruned("no enqueued cell left")
        if key in store.finished(self.study):  # finished by another trial meanwhile
            trial.set_user_attr("duplicate", True)
            raise optuna.TrialPruned(f"cell {key} already finished")
        store.claim(trial)
        attrs = trial.user_attrs
        cfg = from_dict(json.loads(attrs["config"]))
        self.current_trial_ids = [trial._trial_id]
        mates: list[FrozenTrial] = []  # filled as they are taken: release() sees them all
        given_back = True  # mates go back to the queue unless finished or failed here
        try:
            if self.pack > 1:
                self.take_mates(attrs, cfg, mates)
            cells = [attrs] + [t.user_attrs for t in mates]
            with store.Heartbeats(self.study, [t._trial_id for t in mates]):
                results = self.run_cells(cfg, cells)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"[:2000]
            trial.set_user_attr("error", error)
            for t in mates:  # failed with the same error, queued again by a rerun
                store.fail(self.study, t._trial_id, error)
            given_back = False
            raise
        else:
            for t, result in zip(mates, results[1:]):
                if not store.complete(self.study, t._trial_id, result, _value(result)):
                    print(
                        f"worker {os.getpid()}: cell {t.user_attrs[store.CELL]} was "
                        "re-queued meanwhile; its copy will find the final checkpoint",
                        file=sys.stderr,
                        flush=True,
                    )
                self._cell_done()
            given_back = False
        finally:
            if given_back:  # interrupted (KeyboardInterrupt, SystemExit): hand mates back
                for t in mates:
                    store.requeue(self.study, t._trial_id)
            self.current_trial_ids = []
        trial.set_user_attr(store.RESULT, json.dumps(results[0]))
        self._cell_done()
        return _value(results[0])

    def _cell_done(self) -> None:
        self.cells_run += 1
        if self.on_cell_done is not None:
            self.on_cell_done()

    def take_mates(self, attrs: dict[str, Any], cfg: RunConfig, mates: list[FrozenTrial]) -> None:
        """Take up to pack - 1 waiting cells to train beside the cell `attrs` into `mates`
        (and current_trial_ids): the same config (variant and depth), other seeds, the
        same eval-only siblings, no shared result yet. Each is taken from the queue as
        `study.optimize` would take it."""
        main_siblings = set(self.siblings(attrs["train_id"]))
        done = store.finished(self.study)
        seeds = {attrs["seed"]}
        for t in store.trials(self.study):
            if len(mates) == self.pack - 1:
                break
            a = t.user_attrs
            if (
                t.state != TrialState.WAITING
                or a.get(store.CELL) is None
                or a[store.CELL] in done
                or a.get("config") != attrs["config"]
                or a["seed"] in seeds
                or set(self.siblings(a["train_id"])) != main_siblings
                or self.shared_result(a["train_id"], cfg) is not None
            ):
                continue
            if store.take_waiting(self.study, t):
                seeds.add(a["seed"])
                mates.append(t)
                self.current_trial_ids.append(t._trial_id)

    def release(self) -> bool:
        """Give the running cells back to the queue now: fail their trials and re-queue
        them, as the heartbeat check would after the grace period; their checkpoints stay
        for the next worker. For preemption (a signal handler may call this mid-training,
        so a fresh connection is used). True if a cell was given back."""
        trial_ids = list(self.current_trial_ids)
        if not trial_ids:
            return False
        try:
            storage = store.open_storage(self.storage_url, heartbeat=False)
            study = store.load(storage, self.study_name)
            return any([store.requeue(study, trial_id) for trial_id in trial_ids])
        except Exception as e:  # noqa: BLE001 - the heartbeat re-queues it later anyway
            msg = store.scrub(f"{type(e).__name__}: {e}", self.storage_url)
            print(f"worker {os.getpid()}: could not release trials {trial_ids}: {msg}", flush=True)
            return False

    def siblings(self, train_id: str) -> dict[str, dict[str, Any]]:
        """Configs (by config_hash) of every cell in the study sharing this training."""
        out = {}
        for t in store.trials(self.study):
            if t.user_attrs.get("train_id") == train_id and "config" in t.user_attrs:
                cfg = json.loads(t.user_attrs["config"])
                out[from_dict(cfg).config_hash] = cfg
        return out

    def run_cells(self, cfg: RunConfig, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Train the cells (user attributes of trials of one config, distinct seeds)
        together, each resuming from its checkpoint; returns their results in order. A
        cell whose training another cell shared already takes that result instead."""
        train_ids = [a["train_id"] for a in cells]
        siblings = self.siblings(train_ids[0])  # the same for every cell (take_mates)
        shared = len(siblings) > 1
        locks = sorted(self.dir / "locks" / f"{t}.lock" for t in train_ids) if shared else []
        results: list[dict[str, Any] | None] = [None] * len(cells)
        with contextlib.ExitStack() as held:
            for lock in locks:
                held.enter_context(_file_lock(lock))
            todo = []
            for i, attrs in enumerate(cells):
                if shared and (cached := self.shared_result(train_ids[i], cfg)) is not None:
                    self.replay(attrs, cfg, cached)
                    results[i] = cached
                else:
                    todo.append(i)
            if not todo:
                return results  # type: ignore[return-value]
            variants = [from_dict(c) for h, c in siblings.items() if h != cfg.config_hash]
            ckpts = [self.dir / "checkpoints" / f"{train_ids[i]}.pt" for i in todo]
            callbacks = [self.callbacks(cells[i], cfg, first=i == todo[0]) for i in todo]
            common = dict(
                data_dir=self.data_dir,
                exec_options=self.exec,
                checkpoint_every=self.checkpoint_every or cfg.eval_every,
                eval_variants=variants,
            )
            seeds = [int(cells[i]["seed"]) for i in todo]
            if len(todo) == 1:
                runs = [
                    train(cfg, seeds[0], checkpoint_path=ckpts[0], callbacks=callbacks[0], **common)
                ]
            else:
                runs = train_packed(
                    cfg, seeds, checkpoint_paths=ckpts, callbacks_per_seed=callbacks, **common
                )
            for i, res, ckpt in zip(todo, runs, ckpts):
                results[i] = self.result_record(res, ckpt, packed_with=len(todo))
                if shared:
                    self.store_shared(train_ids[i], res, results[i])
        return results  # type: ignore[return-value]

    def callbacks(self, attrs: dict[str, Any], cfg: RunConfig, first: bool) -> list[Callback]:
        """Progress (on a terminal, a bar for the first cell of a pack only; lines in
        logs) and W&B for one cell."""
        quiet = self.show_progress and not first
        callbacks: list[Callback] = [CellProgress(attrs, enabled=self.show_progress, quiet=quiet)]
        if self.wandb_mode != "disabled":
            callbacks.append(self.wandb(attrs, cfg))
        return callbacks

    def result_record(self, res: TrainResult, ckpt: Path, packed_with: int = 1) -> dict[str, Any]:
        d = res.to_dict()
        d.pop("config")
        d.pop("evals")
        d.update(self.env, checkpoint=str(ckpt), trained_by=res.run_id, packed_with=packed_with)
        return d

    def store_shared(self, train_id: str, res: TrainResult, main: dict[str, Any]) -> None:
        """Results of every sibling (by config_hash) as one study attribute."""
        group = {from_dict(res.config).config_hash: main}
        for h, ev in res.evals.items():
            r = dict(main)
            curves = dict(main["curves"], test_error=ev["test_error"], test_loss=ev["test_loss"])
            r.update(
                run_id=f"{h[:10]}-s{res.seed}",
                curves=curves,
                final_test_error=ev["final_test_error"],
                best_test_error=ev["best_test_error"],
                best_iteration=ev["best_iteration"],
                wall_seconds=0.0,
            )
            group[h] = r
        self.study.set_user_attr(f"train:{train_id}", json.dumps(group))

    def shared_result(self, train_id: str, cfg) -> dict[str, Any] | None:
        raw = self.study.user_attrs.get(f"train:{train_id}")
        if raw is None:
            return None
        return json.loads(raw).get(cfg.config_hash)

    def wandb(self, attrs: dict[str, Any], cfg) -> WandbRun:
        return WandbRun(
            study=self.study_name,
            variant=attrs["variant"],
            seed=int(attrs["seed"]),
            budget=attrs["budget"],
            run_id=attrs["run_id"],
            config=cfg,
            mode=self.wandb_mode,
            project=self.wandb_project,
            directory=self.dir,
            wandb_id=cell_wandb_id(self.dir, attrs["run_id"]),
        )

    def replay(self, attrs: dict[str, Any], cfg, result: dict[str, Any]) -> None:
        if self.wandb_mode != "disabled":
            replay_to_wandb(self.wandb(attrs, cfg), result)


@contextlib.contextmanager
def _file_lock(path: Path | None):
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _value(result: dict[str, Any]) -> float:
    """The trial's objective value: the final test error; inf for a diverged run."""
    return math.inf if result["status"] == "diverged" else float(result["final_test_error"])


def add_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs", help="output directory (default: runs/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for this worker")
    p.add_argument(
        "--compile",
        default="off",
        choices=COMPILE_MODES,
        help="torch.compile mode, once per process (reduce-overhead: with CUDA graphs)",
    )
    p.add_argument(
        "--channels-last",
        default="auto",
        choices=["auto", "on", "off"],
        help="channels_last activations (auto: on for CUDA)",
    )
    p.add_argument(
        "--pack",
        type=int,
        default=1,
        help="train up to K seeds of one variant at once in each worker (default 1)",
    )
    p.add_argument("--deterministic", action="store_true", help="deterministic CUDA kernels")
    p.add_argument("--data-dir", default=None, help="where datasets are (or go)")
    p.add_argument("--wandb", default="auto", choices=["auto", "online", "offline", "disabled"])
    p.add_argument("--wandb-project", default="resnet-repro")
    p.add_argument("--checkpoint-every", type=int, default=None, help="iterations (default: eval)")


CHANNELS_LAST = {"auto": None, "on": True, "off": False}


def worker_options(args: argparse.Namespace, threads: int | None) -> list[str]:
    """The `studies.worker` options that pass on the execution settings of `args` (from
    `add_worker_args`), for workers started as processes or SLURM jobs."""
    argv = ["--device", args.device, "--compile", args.compile]
    argv += ["--channels-last", args.channels_last, "--pack", str(args.pack)]
    argv += ["--wandb", args.wandb, "--wandb-project", args.wandb_project]
    if threads:
        argv += ["--threads", str(threads)]
    if args.data_dir:
        argv += ["--data-dir", str(Path(args.data_dir).resolve())]
    if args.checkpoint_every:
        argv += ["--checkpoint-every", str(args.checkpoint_every)]
    if args.deterministic:
        argv.append("--deterministic")
    return argv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m studies.worker", description="Join a study and train its cells."
    )
    p.add_argument("study")
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: $RESNET_REPRO_STORAGE, else SQLite under --out)",
    )
    p.add_argument(
        "--storage-env",
        default=None,
        metavar="NAME",
        help="read the storage URL from this environment variable, which must be set "
        "(SLURM jobs: keeps a password out of the job files)",
    )
    add_worker_args(p)
    return p.parse_args(argv)


def storage_url(args: argparse.Namespace) -> str:
    if getattr(args, "storage_env", None):
        url = os.environ.get(args.storage_env)
        if not url:
            raise ValueError(
                f"--storage-env {args.storage_env}: the environment variable is not set "
                "(it holds the study's storage URL)"
            )
        return url
    return (
        args.storage
        or os.environ.get("RESNET_REPRO_STORAGE")
        or store.default_storage(args.out, args.study)
    )


def worker_settings(args: argparse.Namespace, wandb_mode: str) -> dict[str, Any]:
    """Worker keyword arguments from the options of `add_worker_args`."""
    return dict(
        out=args.out,
        device=args.device,
        threads=args.threads,
        compile=args.compile,
        channels_last=CHANNELS_LAST[args.channels_last],
        pack=args.pack,
        deterministic=args.deterministic,
        data_dir=args.data_dir,
        wandb_mode=wandb_mode,
        wandb_project=args.wandb_project,
        checkpoint_every=args.checkpoint_every,
        show_progress=sys.stderr.isatty(),
    )


def make_worker(args: argparse.Namespace) -> Worker:
    from studies.tracking import resolve_mode

    return Worker(args.study, storage_url(args), **worker_settings(args, resolve_mode(args.wandb)))


def main(argv: list[str] | None = None, on_worker: Callable[[Worker], None] | None = None) -> int:
    """Run a worker until the queue is empty. `on_worker` receives the worker before it
    starts (studies.launch keeps it to release the running cell on preemption)."""
    args = parse_args(argv)
    try:
        url = storage_url(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        worker = make_worker(args)
    except KeyError:  # optuna.load_study: "Record does not exist."
        print(
            f"error: no study {args.study!r} in {store.redact(url)}: create and fill it with "
            f"`python -m studies.run {args.study} --storage URL ...` first",
            file=sys.stderr,
        )
        return 2
    except (ValueError, RuntimeError) as e:
        print(f"error: {store.scrub(str(e), url)}", file=sys.stderr)
        return 2
    if on_worker is not None:
        on_worker(worker)
    try:
        n = worker.run()
    except Exception:  # noqa: BLE001 - print it without the storage password
        print(store.scrub(traceback.format_exc(), url), file=sys.stderr, flush=True)
        return 1
    print(f"worker {os.getpid()}: ran {n} cells in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
