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
from optuna.trial import TrialState

from resnet_repro.config import from_dict
from resnet_repro.train import Callback, ExecOptions, TrainResult, train
from studies import store
from studies.progress import CellProgress
from studies.tracking import WandbRun, replay_to_wandb


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
            deterministic=deterministic,
            num_threads=threads,
        )
        self.data_dir = data_dir
        self.wandb_mode, self.wandb_project = wandb_mode, wandb_project
        self.checkpoint_every = checkpoint_every
        self.show_progress = show_progress
        self.env = environment(self.exec.device, deterministic)
        self.cells_run = 0
        self.current_trial_id: int | None = None  # the trial of the cell being trained
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
        self.current_trial_id = trial._trial_id
        try:
            result = self.run_cell(trial, cfg, attrs)
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            raise
        finally:
            self.current_trial_id = None
        trial.set_user_attr(store.RESULT, json.dumps(result))
        self.cells_run += 1
        if self.on_cell_done is not None:
            self.on_cell_done()
        if result["status"] == "diverged":
            return math.inf
        return float(result["final_test_error"])

    def release(self) -> bool:
        """Give the running cell back to the queue now: fail its trial and re-queue it, as
        the heartbeat check would after the grace period; its checkpoint stays for the
        next worker. For preemption (a signal handler may call this mid-training, so a
        fresh connection is used). True if a cell was given back."""
        trial_id = self.current_trial_id
        if trial_id is None:
            return False
        try:
            storage = store.open_storage(self.storage_url, heartbeat=False)
            return store.requeue(store.load(storage, self.study_name), trial_id)
        except Exception as e:  # noqa: BLE001 - the heartbeat re-queues it later anyway
            msg = store.scrub(f"{type(e).__name__}: {e}", self.storage_url)
            print(f"worker {os.getpid()}: could not release trial {trial_id}: {msg}", flush=True)
            return False

    def siblings(self, train_id: str) -> dict[str, dict[str, Any]]:
        """Configs (by config_hash) of every cell in the study sharing this training."""
        out = {}
        for t in store.trials(self.study):
            if t.user_attrs.get("train_id") == train_id and "config" in t.user_attrs:
                cfg = json.loads(t.user_attrs["config"])
                out[from_dict(cfg).config_hash] = cfg
        return out

    def run_cell(self, trial: optuna.Trial, cfg, attrs: dict[str, Any]) -> dict[str, Any]:
        seed, train_id = int(attrs["seed"]), attrs["train_id"]
        siblings = self.siblings(train_id)
        shared = len(siblings) > 1
        lock = self.dir / "locks" / f"{train_id}.lock" if shared else None
        with _file_lock(lock):
            if shared and (cached := self.shared_result(train_id, cfg)) is not None:
                self.replay(attrs, cfg, cached)
                return cached
            variants = [from_dict(c) for h, c in siblings.items() if h != cfg.config_hash]
            callbacks: list[Callback] = [CellProgress(attrs, enabled=self.show_progress)]
            if self.wandb_mode != "disabled":
                callbacks.append(self.wandb(attrs, cfg))
            ckpt = self.dir / "checkpoints" / f"{train_id}.pt"
            res = train(
                cfg,
                seed,
                data_dir=self.data_dir,
                exec_options=self.exec,
                checkpoint_path=ckpt,
                checkpoint_every=self.checkpoint_every or cfg.eval_every,
                callbacks=callbacks,
                eval_variants=variants,
            )
            result = self.pack_result(res, ckpt)
            if shared:
                self.store_shared(train_id, res, result)
        return result

    def pack_result(self, res: TrainResult, ckpt: Path) -> dict[str, Any]:
        d = res.to_dict()
        d.pop("config")
        d.pop("evals")
        d.update(self.env, checkpoint=str(ckpt), trained_by=res.run_id)
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


def pending(study: optuna.Study) -> int:
    return sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in store.trials(study))


def add_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs", help="output directory (default: runs/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for this worker")
    p.add_argument("--compile", default="off", choices=["off", "default", "max-autotune"])
    p.add_argument("--deterministic", action="store_true", help="deterministic CUDA kernels")
    p.add_argument("--data-dir", default=None, help="where datasets are (or go)")
    p.add_argument("--wandb", default="auto", choices=["auto", "online", "offline", "disabled"])
    p.add_argument("--wandb-project", default="resnet-repro")
    p.add_argument("--checkpoint-every", type=int, default=None, help="iterations (default: eval)")


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
    add_worker_args(p)
    return p.parse_args(argv)


def storage_url(args: argparse.Namespace) -> str:
    return (
        args.storage
        or os.environ.get("RESNET_REPRO_STORAGE")
        or store.default_storage(args.out, args.study)
    )


def make_worker(args: argparse.Namespace) -> Worker:
    from studies.tracking import resolve_mode

    return Worker(
        args.study,
        storage_url(args),
        out=args.out,
        device=args.device,
        threads=args.threads,
        compile=args.compile,
        deterministic=args.deterministic,
        data_dir=args.data_dir,
        wandb_mode=resolve_mode(args.wandb),
        wandb_project=args.wandb_project,
        checkpoint_every=args.checkpoint_every,
        show_progress=sys.stderr.isatty(),
    )


def main(argv: list[str] | None = None, on_worker: Callable[[Worker], None] | None = None) -> int:
    """Run a worker until the queue is empty. `on_worker` receives the worker before it
    starts (studies.launch keeps it to release the running cell on preemption)."""
    args = parse_args(argv)
    url = storage_url(args)
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
