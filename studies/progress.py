"""Progress display: a bar for the study and one for the running cell on a terminal,
plain lines otherwise (logs, CI, SLURM output files)."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

from resnet_repro.config import RunConfig
from resnet_repro.train import Callback


def is_tty() -> bool:
    return sys.stderr.isatty()


class CellProgress(Callback):
    """The running cell: iteration, learning rate and the last errors."""

    def __init__(
        self, attrs: dict[str, Any], enabled: bool | None = None, quiet: bool = False
    ) -> None:
        """enabled: a bar (default: on a terminal), else plain lines; quiet: neither (the
        other seeds of a pack whose first seed has the bar)."""
        self.label = f"{attrs.get('variant')} d{attrs.get('depth')} s{attrs.get('seed')}"
        self.tty = is_tty() if enabled is None else enabled
        self.quiet = quiet
        self.bar: tqdm | None = None
        self.last: dict[str, float] = {}
        self.t0 = time.time()

    def on_start(self, cfg: RunConfig, seed: int, start_iteration: int) -> None:
        self.total = cfg.iterations
        if self.quiet:
            return
        if start_iteration:
            self._line(f"resuming at iteration {start_iteration}/{cfg.iterations}")
        if self.tty:
            self.bar = tqdm(
                total=cfg.iterations,
                initial=start_iteration,
                desc=self.label,
                position=1,
                leave=False,
                dynamic_ncols=True,
            )

    def on_step(self, iteration: int, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if iteration % 10 == 0:
                self.bar.set_postfix(lr=f"{lr:.3g}", **self.last, refresh=False)

    def on_eval(self, iteration: int, record: dict[str, float]) -> None:
        self.last = {
            "train": f"{record['train_error']:.1f}%",
            "test": f"{record['test_error']:.1f}%",
        }
        if self.bar is None and not self.quiet:
            self._line(
                f"it {iteration}/{self.total} lr {record['lr']:.3g} "
                f"train {record['train_error']:.2f}% test {record['test_error']:.2f}%"
            )

    def on_end(self, result) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.quiet:
            return
        self._line(
            f"{result.status}: final {result.final_test_error:.2f}% "
            f"best {result.best_test_error:.2f}% in {result.wall_seconds:.0f} s"
        )

    def _line(self, text: str) -> None:
        print(f"[{self.label}] {text}", file=sys.stderr, flush=True)


class StudyProgress:
    """Cells done of total with an ETA; `update(done)` with the current count."""

    def __init__(self, name: str, total: int, done: int, enabled: bool | None = None) -> None:
        self.name, self.total, self.done = name, total, done
        self.tty = is_tty() if enabled is None else enabled
        self.t0, self.start_done = time.time(), done
        self.bar = (
            tqdm(total=total, initial=done, desc=name, unit="cell", position=0, dynamic_ncols=True)
            if self.tty
            else None
        )

    def update(self, done: int) -> None:
        if done == self.done:
            return
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        if self.bar is None:
            rate = (done - self.start_done) / max(time.time() - self.t0, 1e-9)
            eta = (self.total - done) / rate if rate > 0 else float("nan")
            print(
                f"[{self.name}] {done}/{self.total} cells done, ETA {eta / 60:.1f} min",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
