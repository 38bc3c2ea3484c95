"""The study runner: every registered study end to end, kill and resume, divergence,
eval-only variants, W&B offline runs, and the command line."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import ablations
from resnet_repro.config import RunConfig
from resnet_repro.models import build_model
from studies import run as run_cli
from studies import store
from studies.evaluate import load_network, load_public_state_dict
from studies.evaluate import main as evaluate_main
from studies.tracking import cell_wandb_id

ROOT = Path(__file__).resolve().parent.parent
# The smoke budget, shrunk further so every study fits the suite's time.
TINY = [
    "--budget",
    "smoke",
    "--dataset",
    "synthetic",
    "--wandb",
    "disabled",
    "--set",
    "iterations=4",
    "--set",
    "milestones=2,3",
    "--set",
    "eval_every=2",
    "--set",
    "batch_size=16",
    "--set",
    "subset=256",
]


def _study(out: Path, name: str) -> optuna.Study:
    return store.load(store.open_storage(store.default_storage(out, name)), name)


def _complete_by_cell(st: optuna.Study) -> Counter:
    return Counter(
        store.cell_key(t)
        for t in store.trials(st)
        if t.state == TrialState.COMPLETE and store.cell_key(t)
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ablations.all_studies()))
def test_every_study_runs_end_to_end_on_smoke_budget(name, tmp_path):
    study = ablations.get(name)
    depth = min(study.depths)
    code = run_cli.main(
        [
            name,
            "--seeds",
            "1",
            "--depths",
            str(depth),
            "--out",
            str(tmp_path),
            "--threads",
            "2",
            *TINY,
        ]
    )
    assert code == 0
    st = _study(tmp_path, name)
    done = _complete_by_cell(st)
    assert set(done) == {f"{v}|{depth}|0" for v in study.variants}
    assert all(n == 1 for n in done.values())
    for t in store.finished(st).values():
        r = store.result_of(t)
        assert r["status"] in ("finished", "diverged")
        assert len(r["curves"]["test_error"]) == 2
        assert r["torch_version"] == torch.__version__ and r["git_sha"]


def test_more_seeds_run_only_the_new_ones(tmp_path):
    args = ["stem_pool_ablation", "--depths", "8", "--out", str(tmp_path), *TINY]
    assert run_cli.main([*args, "--seeds", "1"]) == 0
    first = {k: t.number for k, t in store.finished(_study(tmp_path, "stem_pool_ablation")).items()}
    assert run_cli.main([*args, "--seeds", "2"]) == 0
    st = _study(tmp_path, "stem_pool_ablation")
    after = store.finished(st)
    assert set(after) == {f"{v}|8|{s}" for v in ("no_pool", "pool") for s in (0, 1)}
    assert {k: after[k].number for k in first} == first  # old cells untouched
    assert sum(_complete_by_cell(st).values()) == 4
    assert run_cli.main([*args, "--seeds", "2"]) == 0  # nothing left: nothing runs
    assert sum(_complete_by_cell(_study(tmp_path, "stem_pool_ablation")).values()) == 4


def _results(out: Path, name: str) -> dict[str, dict]:
    return {k: store.result_of(t) for k, t in store.finished(_study(out, name)).items()}


@pytest.mark.parametrize("name, pack", [("stem_pool_ablation", 3), ("bn_eval_ablation", 2)])
def test_packed_workers_give_exactly_the_results_of_lone_runs(name, pack, tmp_path):
    args = [name, "--seeds", str(pack), "--depths", "8", "--threads", "2", *TINY]
    assert run_cli.main([*args, "--out", str(tmp_path / "lone")]) == 0
    assert run_cli.main([*args, "--out", str(tmp_path / "packed"), "--pack", str(pack)]) == 0
    lone, packed = _results(tmp_path / "lone", name), _results(tmp_path / "packed", name)
    variants = ablations.get(name).variants
    assert set(packed) == set(lone) == {f"{v}|8|{s}" for v in variants for s in range(pack)}
    assert all(n == 1 for n in _complete_by_cell(_study(tmp_path / "packed", name)).values())
    for key, a in lone.items():
        b = packed[key]
        assert b["curves"] == a["curves"], key  # bit for bit: the CPU layout is a lone run's
        for field in ("final_test_error", "best_test_error", "best_iteration", "status"):
            assert b[field] == a[field], (key, field)
    trained = [r for r in packed.values() if r["run_id"] == r["trained_by"]]
    assert {r["packed_with"] for r in trained} == {pack}
    assert {r["packed_with"] for r in lone.values()} == {1}


@pytest.mark.parametrize("pack", [1, 2])
def test_sigkill_mid_study_then_rerun_finishes_every_cell_exactly_once(pack, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "studies.run",
        "stem_pool_ablation",
        "--seeds",
        "2",
        "--depths",
        "8",
        "--out",
        str(tmp_path),
        "--threads",
        "1",
        "--checkpoint-every",
        "5",
        "--budget",
        "smoke",
        "--dataset",
        "synthetic",
        "--wandb",
        "disabled",
        "--set",
        "iterations=60",
        "--set",
        "milestones=30,45",
        "--set",
        "eval_every=20",
        "--set",
        "batch_size=16",
        "--set",
        "subset=256",
        "--pack",
        str(pack),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckdir = tmp_path / "stem_pool_ablation" / "checkpoints"
    deadline = time.time() + 240
    killed_cell = None
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if not (tmp_path / "stem_pool_ablation" / "study.db").exists():
                continue
            try:
                st = _study(tmp_path, "stem_pool_ablation")
                trials = store.trials(st)
            except Exception:  # the database is being created
                continue
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING and "pid" in t.user_attrs]
            if done and running:
                ck = ckdir / f"{running[0].user_attrs['train_id']}.pt"
                if ck.exists() and torch.load(ck, weights_only=True)["state"]["iteration"] >= 10:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_cell = running[0].user_attrs["cell"]
                    break
    finally:
        if proc.poll() is None and killed_cell is None:
            proc.kill()
    proc.wait()
    assert killed_cell is not None, "the runner finished before it could be killed mid-cell"
    # The killed trial is left RUNNING; the rerun re-queues it and resumes it.
    assert run_cli.main(cmd[3:]) == 0
    st = _study(tmp_path, "stem_pool_ablation")
    done = _complete_by_cell(st)
    assert set(done) == {f"{v}|8|{s}" for v in ("no_pool", "pool") for s in (0, 1)}
    assert all(n == 1 for n in done.values()), done
    resumed = store.result_of(store.finished(st)[killed_cell])
    assert resumed["resumed_from"] >= 10
    assert len(resumed["curves"]["test_error"]) == 3
    if pack == 2:  # its mate (the other seed) resumed from its checkpoint as well
        variant, depth, seed = killed_cell.split("|")
        mate = store.result_of(store.finished(st)[f"{variant}|{depth}|{1 - int(seed)}"])
        assert mate["resumed_from"] >= 10 and mate["packed_with"] == 2


def test_diverging_cell_is_recorded_and_the_study_finishes(tmp_path):
    code = run_cli.main(
        [
            "stem_pool_ablation",
            "--seeds",
            "1",
            "--depths",
            "8",
            "--out",
            str(tmp_path),
            *TINY,
            "--set",
            "lr=1e30",
            "--set",
            "iterations=30",
            "--set",
            "milestones=20,25",
            "--set",
            "eval_every=10",
        ]
    )
    assert code == 0
    st = _study(tmp_path, "stem_pool_ablation")
    results = [store.result_of(t) for t in store.finished(st).values()]
    assert len(results) == 2
    assert all(r["status"] == "diverged" and "non-finite" in r["error"] for r in results)


def test_eval_only_variants_train_once_and_match_their_own_training(tmp_path):
    code = run_cli.main(
        ["bn_eval_ablation", "--seeds", "2", "--depths", "8", "--out", str(tmp_path), *TINY]
    )
    assert code == 0
    st = _study(tmp_path, "bn_eval_ablation")
    by_seed = {s: {} for s in (0, 1)}
    for k, t in store.finished(st).items():
        variant, _, seed = k.split("|")
        by_seed[int(seed)][variant] = store.result_of(t)
    for res in by_seed.values():
        assert set(res) == {"running", "precise", "batch", "batch_shuffled"}
        assert len({r["trained_by"] for r in res.values()}) == 1  # one training for all four
        assert len({r["run_id"] for r in res.values()}) == 4
        trains = {json.dumps(r["curves"]["train_loss"]) for r in res.values()}
        assert len(trains) == 1  # exactly paired: the same training curve
        assert res["batch"]["curves"]["test_error"] != res["running"]["curves"]["test_error"]
    assert len(list((tmp_path / "bn_eval_ablation" / "checkpoints").glob("*.pt"))) == 2
    # Evaluating a saved checkpoint reproduces every stored number, for either seed.
    for seed, res in by_seed.items():
        ckpt = res["running"]["checkpoint"]
        for variant, extra in [
            ("running", []),
            ("batch", ["--bn-eval", "batch"]),
            ("precise", ["--bn-eval", "precise"]),
            ("batch_shuffled", ["--bn-eval", "batch", "--shuffle-seed", str(seed)]),
        ]:
            out = tmp_path / f"eval-{seed}-{variant}.json"
            assert evaluate_main([ckpt, *extra, "--json", str(out)]) == 0
            ev = json.loads(out.read_text())
            assert ev["seed"] == seed
            assert ev["test_error"] == pytest.approx(res[variant]["final_test_error"]), variant


def test_evaluate_public_layout_gives_our_logits(tmp_path):
    ours = build_model(RunConfig(depth=20), seed=3).eval()
    with torch.no_grad():  # non-trivial running statistics
        for bn in ours.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
    public = {
        "state_dict": {
            f"module.{k}": v
            for k, v in ours.state_dict().items()
            if not k.endswith("num_batches_tracked")
        },
        "best_prec1": 91.7,
    }
    path = tmp_path / "resnet20.th"
    torch.save(public, path)
    model, cfg, seed = load_network(path)
    assert cfg.depth == 20 and cfg.shortcut == "A" and seed == 0
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ours(x), atol=1e-6)
    with pytest.raises(ValueError, match="unrecognised layout"):
        load_public_state_dict({"fc.weight": torch.zeros(10, 64)})
    code = evaluate_main(
        [str(path), "--dataset", "synthetic", "--normalize", "imagenet", "--eval-batch-size", "500"]
    )
    assert code == 0


@pytest.mark.parametrize("pack", [1, 2])
def test_wandb_offline_one_run_per_cell_with_group_and_job_type(pack, tmp_path):
    args = [
        "stem_pool_ablation",
        "--seeds",
        "2",
        "--depths",
        "8",
        "--out",
        str(tmp_path),
        "--pack",
        str(pack),
        *[a if a != "disabled" else "offline" for a in TINY],
    ]
    assert run_cli.main(args) == 0
    runs = sorted((tmp_path / "stem_pool_ablation" / "wandb").glob("offline-run-*"))
    assert len(runs) == 4
    # Each cell's W&B id is kept with the study, so a resumed cell logs into its own run.
    ids = {p.name: p.read_text().strip() for p in (runs[0].parent / "ids").iterdir()}
    assert len(ids) == 4 and all(i.startswith(run_id) for run_id, i in ids.items())
    assert {r.name.split("-", 3)[3] for r in runs} == set(ids.values())
    assert cell_wandb_id(tmp_path / "stem_pool_ablation", next(iter(ids))) == next(
        iter(ids.values())
    )
    wandb = Path(sys.executable).parent / "wandb"
    seen = Counter()
    for r in runs:
        out = subprocess.run(
            [str(wandb), "leet", "inspect", "--json", str(r)],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        rec = next(json.loads(line)["run"] for line in out.splitlines() if '"type":"run"' in line)
        assert rec["run_group"] == "stem_pool_ablation"
        assert rec["config"]["update"]["budget"] == "smoke"
        seen[(rec["job_type"], rec["config"]["update"]["seed"])] += 1
    assert seen == Counter({(v, s): 1 for v in ("no_pool", "pool") for s in (0, 1)})


def test_cli_errors_exit_2_and_name_close_matches(capsys):
    assert run_cli.main(["crop_ablaton", "--seeds", "1"]) == 2
    assert "crop_ablation" in capsys.readouterr().err
    assert run_cli.main(["crop_ablation", "--set", "crop_padd=3"]) == 2
    assert "crop_pad" in capsys.readouterr().err
    assert run_cli.main(["crop_ablation", "--set", "crop=gray"]) == 2
    assert "pad_zero" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run_cli.main(["crop_ablation", "--budget", "huge"])
    assert e.value.code == 2


def test_rerun_with_another_protocol_is_refused_and_changes_nothing(tmp_path, capsys):
    args = ["stem_pool_ablation", "--seeds", "1", "--depths", "8", "--out", str(tmp_path)]
    assert run_cli.main([*args, *TINY]) == 0
    before = {
        k: t.number for k, t in store.finished(_study(tmp_path, "stem_pool_ablation")).items()
    }
    capsys.readouterr()
    # e.g. the paper budget into the smoke study's directory, or another --set value
    assert run_cli.main([*args, *TINY, "--set", "lr=0.5", "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert "no_pool|8|0" in err and "lr 0.025 -> 0.5" in err and "--out" in err
    st = _study(tmp_path, "stem_pool_ablation")
    assert {k: t.number for k, t in store.finished(st).items()} == before
    assert len([t for t in store.trials(st) if store.cell_key(t)]) == 2  # none queued


def test_bad_depth_and_device_exit_2_before_queueing(tmp_path, capsys):
    args = ["stem_pool_ablation", "--depths", "8", "--out", str(tmp_path), *TINY]
    assert run_cli.main([*args, "--set", "depth=20"]) == 2
    assert "--depths" in capsys.readouterr().err
    assert run_cli.main([*args, "--pack", "0"]) == 2
    assert "--pack 0: allowed values are integers >= 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert run_cli.main([*args, "--device", "cuda"]) == 2
        assert "no CUDA device here" in capsys.readouterr().err
    assert run_cli.main([*args, "--device", "tpu"]) == 2
    assert "allowed values are auto, cpu, cuda, cuda:N" in capsys.readouterr().err
    assert not (tmp_path / "stem_pool_ablation" / "study.db").exists()


def test_local_worker_processes_split_the_cores_and_finish_every_cell(tmp_path):
    args = ["stem_pool_ablation", "--seeds", "2", "--depths", "8", "--out", str(tmp_path)]
    assert run_cli.main([*args, *TINY, "--workers", "2"]) == 0
    st = _study(tmp_path, "stem_pool_ablation")
    done = _complete_by_cell(st)
    assert set(done) == {f"{v}|8|{s}" for v in ("no_pool", "pool") for s in (0, 1)}
    assert all(n == 1 for n in done.values())
    pids = {t.user_attrs["pid"] for t in store.finished(st).values()}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes did the work
    logs = sorted((tmp_path / "stem_pool_ablation" / "logs").glob("worker-*.log"))
    assert len(logs) == 2 and all("ran" in log.read_text() for log in logs)


def test_list_and_dry_run(capsys):
    assert run_cli.main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ablations.all_studies())
    assert run_cli.main(["bn_eval_ablation", "--seeds", "5", "--depths", "20,56", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "40 cells, 10 trainings" in plan
    # 10 trainings x 64k x 128 images at the paper budget
    assert "81.9M training images" in plan
