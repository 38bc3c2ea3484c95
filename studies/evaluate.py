"""Evaluate a trained network under any evaluation switch, without retraining.

`python -m studies.evaluate CHECKPOINT [--bn-eval running|batch|precise]
[--eval-batch-size 128] [--shuffle-seed S] [--normalize ...] [--dataset ...]`

CHECKPOINT is either a checkpoint written by a run (it carries its RunConfig), or a state
dict in the common public CIFAR-ResNet layout: keys `conv1`, `bn1`, `layer1`..`layer3`
blocks of `conv1`/`bn1`/`conv2`/`bn2`, `linear`; optionally under "state_dict" and with a
`module.` prefix (DataParallel); option-A shortcuts that add the new zero channels evenly
on both sides. Depth is read from the number of blocks; such checkpoints are usually
trained on per-channel (ImageNet) normalised inputs, so pass `--normalize` to match.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from resnet_repro.config import BN_EVALS, DATASETS, NORMALIZES, RunConfig, from_dict
from resnet_repro.data import load_for_config, normalization_stats
from resnet_repro.models import CifarResNet, build_model
from resnet_repro.train import Evaluator


def load_network(path: str | Path, *, arch: str = "resnet") -> tuple[CifarResNet, RunConfig, int]:
    """The network in `path`, its config and seed (the run's own, or for a public state
    dict: depth from the blocks, option A, PyTorch-default hyperparameters, seed 0)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj and "config" in obj:  # our checkpoint
        cfg = from_dict(obj["config"])
        model = build_model(cfg.replace(bn_eval="running"))
        model.load_state_dict(obj["model"])
        return model, cfg, int(obj.get("seed", 0))
    return (*load_public_state_dict(obj, arch=arch), 0)


def load_public_state_dict(
    obj: dict[str, Any], *, arch: str = "resnet"
) -> tuple[CifarResNet, RunConfig]:
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict) or not sd:
        raise ValueError("not a state dict: expected a mapping of parameter names to tensors")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"layer1\.(\d+)\.", k))}
    if not blocks or "conv1.weight" not in sd or "linear.weight" not in sd:
        raise ValueError(
            "unrecognised layout: expected keys conv1.*, bn1.*, layer1.N.conv1.* ... "
            f"linear.*; found e.g. {sorted(sd)[:5]}"
        )
    n = max(blocks) + 1
    projections = any(".shortcut.0." in k for k in sd)
    cfg = RunConfig(arch=arch, depth=6 * n + 2, shortcut="B" if projections else "A")
    model = build_model(cfg, num_classes=sd["linear.weight"].shape[0])
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"state dict does not fit depth {cfg.depth}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model, cfg


def run_evaluation(
    model: CifarResNet,
    cfg: RunConfig,
    *,
    seed: int = 0,
    bn_eval: str = "running",
    eval_batch_size: int = 128,
    shuffle_seed: int | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Test error (%) and loss of `model` on cfg's dataset under the given switches, as
    the run of `seed` evaluates it: "precise" BN statistics from that run's batches;
    shuffle_seed S: the test order of a run with seed S (None: stored order)."""
    data = load_for_config(cfg, data_dir)
    mean, std = normalization_stats(data.train_x, cfg.normalize)
    dev = torch.device(device)
    spec = cfg.replace(
        bn_eval=bn_eval, eval_batch_size=eval_batch_size, eval_shuffle=shuffle_seed is not None
    )
    evaluator = Evaluator(
        cfg,
        seed,
        [spec],
        (data.train_x.to(dev), data.train_y.to(dev)),
        (data.test_x.to(dev), data.test_y.to(dev)),
        mean,
        std,
        torch.contiguous_format,
        order_seed=shuffle_seed,
    )
    err, loss = evaluator.test_error(model.to(dev), spec)
    return {
        "test_error": err,
        "test_loss": loss,
        "bn_eval": bn_eval,
        "eval_batch_size": eval_batch_size,
        "shuffle_seed": shuffle_seed,
        "seed": seed,
        "dataset": cfg.dataset,
        "normalize": cfg.normalize,
        "depth": cfg.depth,
        "n_test": int(data.test_x.shape[0]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m studies.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("checkpoint")
    p.add_argument("--bn-eval", default="running", choices=list(BN_EVALS))
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument(
        "--shuffle-seed",
        type=int,
        default=None,
        help="shuffled test batches, in the order a run with this seed uses",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help='the run whose training batches "precise" BN uses (default: the checkpoint\'s)',
    )
    p.add_argument("--normalize", default=None, choices=list(NORMALIZES))
    p.add_argument("--dataset", default=None, choices=list(DATASETS))
    p.add_argument(
        "--arch", default="resnet", choices=["resnet", "plain"], help="public layout only"
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    try:
        model, cfg, seed = load_network(args.checkpoint, arch=args.arch)
        changes = {k: v for k, v in (("normalize", args.normalize), ("dataset", args.dataset)) if v}
        cfg = cfg.replace(**changes) if changes else cfg
        out = run_evaluation(
            model,
            cfg,
            seed=seed if args.seed is None else args.seed,
            bn_eval=args.bn_eval,
            eval_batch_size=args.eval_batch_size,
            shuffle_seed=args.shuffle_seed,
            data_dir=args.data_dir,
            device=args.device,
        )
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{Path(args.checkpoint).name}: test error {out['test_error']:.2f}% (loss "
        f"{out['test_loss']:.4f}) on {out['n_test']} {out['dataset']} images, bn_eval "
        f"{out['bn_eval']}, batch {out['eval_batch_size']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
