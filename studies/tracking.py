"""Weights & Biases logging: one W&B run per cell.

group = study, job_type = variant, name = run_id, tags (study, variant, seed, budget),
config = RunConfig plus seed and budget, curves logged against the iteration, summary
with the final and best errors. The mode is always passed to `wandb.init` (the
WANDB_MODE variable is read once per process). A W&B failure is a warning: local results
never depend on it.
"""

from __future__ import annotations

import netrc
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

from resnet_repro.config import RunConfig
from resnet_repro.train import Callback

MODES = ("auto", "online", "offline", "disabled")


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    """ "auto" is online when an API key is configured, else offline."""
    if mode not in MODES:
        raise ValueError(f"--wandb {mode!r}: allowed values are {', '.join(MODES)}")
    if mode == "auto":
        return "online" if has_api_key() else "offline"
    return mode


class WandbRun(Callback):
    """Logs one cell's run; every W&B call is guarded."""

    def __init__(
        self,
        *,
        study: str,
        variant: str,
        seed: int,
        budget: str,
        run_id: str,
        config: RunConfig,
        mode: str,
        project: str,
        directory: str | os.PathLike,
        wandb_id: str | None = None,
    ) -> None:
        """wandb_id: the W&B run id (`cell_wandb_id`); a resumed cell passes the id of its
        first start and logs into the same run."""
        self.kw = dict(
            project=project,
            id=wandb_id,
            resume="allow" if wandb_id else None,
            group=study,
            job_type=variant,
            name=run_id,
            tags=[study, variant, f"seed{seed}", budget],
            config={**config.to_dict(), "seed": seed, "budget": budget, "study": study},
            mode=mode,
            dir=str(Path(directory)),
            reinit="create_new",  # the seeds of a pack log side by side
        )
        self.run: Any = None

    def _guard(self, what: str, fn) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - logging must never cost a result
            warnings.warn(
                f"W&B {what} failed ({type(e).__name__}: {e}); results are kept locally",
                stacklevel=2,
            )
            self.run = None

    def on_start(self, cfg: RunConfig, seed: int, start_iteration: int) -> None:
        def init() -> None:
            import wandb

            Path(self.kw["dir"]).mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(**self.kw)

        self._guard("init", init)

    def on_eval(self, iteration: int, record: dict[str, float]) -> None:
        if self.run is not None:
            row = {k: v for k, v in record.items() if ":" not in k and k != "iteration"}
            self._guard("log", lambda: self.run.log(row, step=iteration))

    def on_end(self, result) -> None:
        if self.run is None:
            return
        summary = {
            "status": result.status,
            "final_test_error": result.final_test_error,
            "best_test_error": result.best_test_error,
            "best_iteration": result.best_iteration,
            "final_train_error": result.final_train_error,
            "wall_seconds": result.wall_seconds,
        }

        def finish() -> None:
            self.run.summary.update(summary)
            self.run.finish()

        self._guard("finish", finish)


def cell_wandb_id(directory: str | os.PathLike, run_id: str) -> str:
    """The W&B run id of the cell `run_id` logged under `directory`: made at the cell's
    first start and kept in `<directory>/wandb/ids/<run_id>`, so a cell resumed after a
    crash logs into the same W&B run (offline runs with one id sync into one run), while
    a study started afresh in an emptied directory gets new runs."""
    path = Path(directory) / "wandb" / "ids" / run_id
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    new = f"{run_id}-{secrets.token_hex(4)}"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new + "\n")
    os.replace(tmp, path)
    return new


class _Summary:
    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)


def replay_to_wandb(run: WandbRun, result: dict[str, Any]) -> None:
    """Log a finished result (e.g. an eval-only variant that shared a training)."""
    curves = result["curves"]
    run.on_start(None, result["seed"], 0)  # type: ignore[arg-type]
    for i, it in enumerate(curves["iteration"]):
        run.on_eval(int(it), {k: v[i] for k, v in curves.items() if len(v) > i})
    run.on_end(_Summary(result))
