"""utils.train under torchrun: 2 CPU processes (gloo) against one process with the same global batch,
exact resume, early stopping decided once, a rank that dies, and the example script.

Each test starts `python -m torch.distributed.run --standalone --nproc_per_node=2`; together they take
well under a minute on 2 cores (most of it is importing torch in the workers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import utils
from utils.train import fit
from utils.train.distributed import ShardSampler, shard_loader

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(),
        reason="torch.distributed with gloo is not available",
    ),
    pytest.mark.timeout(300),  # a hang fails the test instead of blocking CI (the jobs take seconds)
]

# The worker: the same small runs as the reference below, under torchrun.
WORKER = textwrap.dedent('''
    import json, os, signal, sys, time
    import torch
    torch.set_num_threads(1)
    from torch.utils.data import DataLoader, Dataset, TensorDataset
    from utils.train import distributed, fit

    out, mode = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    sys.path.insert(0, os.environ["COURSE_TESTS"])
    from test_distributed import blobs, mlp, segmenter  # the data and models of the single-process references

    def run(tag, dtype=torch.float32, seed_model=0, **kw):
        model = mlp(seed_model, dtype)
        ds = blobs(dtype=dtype)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        hist = fit(model, DataLoader(ds, batch_size=8, shuffle=True), DataLoader(ds, batch_size=10),
                   optimizer=opt, device="cpu", progress=False, seed=0, **kw)
        torch.save(model.state_dict(), f"{out}/{tag}_rank{rank}.pt")
        with open(f"{out}/{tag}_rank{rank}.json", "w") as f:
            json.dump({"history": hist.as_dict(), "initial_seed": torch.initial_seed(),
                       "world": distributed.world_size()}, f)

    if mode == "train":
        run("a", epochs=4)
        run("a64", dtype=torch.float64, epochs=4)
        run("b", epochs=2, checkpoint=f"{out}/ckpt/run.pt")
        run("c", epochs=4, checkpoint=f"{out}/ckpt/run.pt", resume=True, seed_model=7)
        x, y = blobs().tensors
        model = mlp()
        bad = DataLoader(TensorDataset(x, (y + 1) % 3), batch_size=10)  # gets worse as training goes on
        hist = fit(model, DataLoader(blobs(), batch_size=8, shuffle=True), bad, epochs=30, lr=0.05,
                   early_stopping=2, device="cpu", progress=False, seed=0)
        with open(f"{out}/stop_rank{rank}.json", "w") as f:
            json.dump({"epochs": hist.epochs, "best": hist.best_epoch}, f)
        # a GAN (not wrapped in DDP: the loop averages its gradients) and a segmentation metric gathered
        # from both processes
        from test_train_tasks import ConfusionMIoU, bright_squares, gan_2d, gaussian_2d
        from utils.train import GAN, Segmentation
        gan = gan_2d()
        fit(gan, DataLoader(gaussian_2d(128), batch_size=16, shuffle=True), epochs=2, task=GAN(2), lr=1e-3,
            device="cpu", progress=False, seed=0)
        torch.save(gan.state_dict(), f"{out}/gan_rank{rank}.pt")
        seg, squares = segmenter(), bright_squares(n=16)
        hist = fit(seg, DataLoader(squares, batch_size=4), DataLoader(squares, batch_size=3), epochs=1,
                   optimizer=torch.optim.SGD(seg.parameters(), lr=0.0), device="cpu", progress=False,
                   task=Segmentation(2, ignore_index=255, metric=ConfusionMIoU))
        with open(f"{out}/seg_rank{rank}.json", "w") as f:
            json.dump(hist.as_dict(), f)
        # the example script, in the same job (one start of torchrun the less)
        sys.path.insert(0, sys.argv[3])
        import ddp_train
        ddp_train.main(["--epochs", "1", "--subset", "200", "--checkpoint", f"{out}/example.pt"])
    elif mode == "kill":
        class Deadly(Dataset):
            """Rank 1 dies (SIGKILL, as an out-of-memory kill would) at its 20th sample."""
            def __init__(self):
                self.data, self.seen = blobs(), 0
            def __len__(self):
                return len(self.data)
            def __getitem__(self, i):
                self.seen += 1
                if rank == 1 and self.seen == 20:
                    with open(f"{out}/killed_at", "w") as fh:  # when, on the wall clock
                        fh.write(repr(time.time()))
                    os.kill(os.getpid(), signal.SIGKILL)
                return self.data[i]
        fit(mlp(), DataLoader(Deadly(), batch_size=8, shuffle=True), epochs=1000, lr=0.01, device="cpu",
            progress=False, seed=0)
''')


def torchrun(
    script: Path, *args: str, timeout: float = 120, env: dict | None = None
) -> tuple[int, str, float]:
    """Run ``script`` in 2 processes; (exit code, output, seconds)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=0",
        "--monitor-interval=0.5",
        str(script),
        *args,
    ]
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "COURSE_PROGRESS": "0",
        "COURSE_TESTS": str(ROOT / "tests"),
        **(env or {}),
    }
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        full_env.pop(key, None)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def blobs(n=96, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = 3.0 * torch.randn(3, 6, generator=g)[y] + 0.5 * torch.randn(n, 6, generator=g)
    return TensorDataset(x.to(dtype), y)


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def segmenter():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))


def single_process(dtype=torch.float32):
    """One process, global batch 16, the epochs shuffled as DistributedSampler(seed=0) shuffles them."""
    model = mlp(0, dtype)
    ds = blobs(dtype=dtype)
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)  # fit calls set_epoch
    hist = fit(
        model,
        DataLoader(ds, batch_size=16, sampler=sampler),
        DataLoader(ds, batch_size=10),
        epochs=4,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        device="cpu",
        progress=False,
        seed=0,
    )
    return model, hist


def max_difference(state_a: dict, state_b: dict) -> float:
    return max((state_a[k].double() - state_b[k].double()).abs().max().item() for k in state_a)


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    code, log, seconds = torchrun(script, str(out), "train", str(ROOT / "examples"))
    assert code == 0, log[-3000:]
    return out, seconds, log


def test_two_processes_end_with_the_weights_of_one_process_with_the_same_global_batch(ddp_runs):
    out, seconds, _ = ddp_runs
    for dtype, tag, tol in ((torch.float32, "a", 1e-5), (torch.float64, "a64", 1e-12)):
        reference, hist = single_process(dtype)
        ranks = [torch.load(out / f"{tag}_rank{r}.pt", weights_only=True) for r in (0, 1)]
        assert max_difference(ranks[0], ranks[1]) == 0.0  # DDP keeps the processes identical
        diff = max_difference(ranks[0], reference.state_dict())
        # the same samples per step; only the order of the float sums differs (two half-batch means averaged
        # by the all-reduce instead of one mean over 16), a rounding error per step: 1e-5 in float32 after
        # 24 SGD steps with momentum, 1e-12 in float64
        assert diff < tol, (dtype, diff)
        print(f"{dtype}: max |w_2proc - w_1proc| = {diff:.2e} (torchrun run: {seconds:.1f} s)")
        logs = [json.loads((out / f"{tag}_rank{r}.json").read_text()) for r in (0, 1)]
        for log in logs:
            del log["history"]["epoch_time"]  # (each process's own clock)
        assert logs[0]["world"] == 2 and logs[0]["history"] == logs[1]["history"]  # metrics all-reduced
        # the validation metrics are those of the whole validation set, each sample counted once
        assert logs[0]["history"]["val_loss"] == pytest.approx(hist.val_loss, rel=1e-5)
        assert logs[0]["history"]["train_acc"] == pytest.approx(hist.train_acc, abs=1e-12)
    seeds = [json.loads((out / f"a_rank{r}.json").read_text())["initial_seed"] for r in (0, 1)]
    assert seeds == [0, 1]  # each process its own random stream: seed + rank


def test_resume_under_ddp_is_exact_and_only_rank_0_writes(ddp_runs):
    out, _, _ = ddp_runs
    a, c = (torch.load(out / f"{tag}_rank0.pt", weights_only=True) for tag in ("a", "c"))
    assert max_difference(a, c) == 0.0
    ha, hc = (json.loads((out / f"{tag}_rank0.json").read_text())["history"] for tag in ("a", "c"))
    assert ha["train_loss"] == hc["train_loss"] and ha["val_loss"] == hc["val_loss"]
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["run.pt"]  # no temporary file left behind
    state = torch.load(out / "ckpt" / "run.pt", weights_only=True)
    assert state["epoch"] == 4 and len(state["rng"]) == 2  # the random state of each process


def test_early_stopping_is_decided_once_for_all_processes(ddp_runs):
    out, _, _ = ddp_runs
    stops = [json.loads((out / f"stop_rank{r}.json").read_text()) for r in (0, 1)]
    assert stops[0] == stops[1] and stops[0]["epochs"] < 30 and stops[0]["best"] == stops[0]["epochs"] - 3


def test_a_killed_rank_ends_the_job_with_an_error_instead_of_a_hang(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    code, log, seconds = torchrun(
        script, str(tmp_path), "kill", timeout=150, env={"COURSE_DDP_TIMEOUT": "20"}
    )
    ended = time.time()
    assert code != 0, log[-3000:]
    # measured from the kill, not from the start (starting two processes that import torch takes a while
    # on a busy machine): with a 20 s collective timeout the job must be over well within a minute
    after_kill = ended - float((tmp_path / "killed_at").read_text())
    assert after_kill < 60, f"the job took {after_kill:.0f} s to fail after the kill ({seconds:.0f} s in all)"
    assert "SIGKILL" in log or "exitcode" in log.lower(), log[-3000:]


def test_a_gan_stays_identical_across_processes_and_epoch_end_metrics_count_every_sample(ddp_runs):
    from test_train_tasks import ConfusionMIoU, bright_squares, gan_2d

    from utils.train import Segmentation, evaluate

    out, _, _ = ddp_runs
    gans = [torch.load(out / f"gan_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert max_difference(gans[0], gans[1]) == 0.0 and max_difference(gans[0], gan_2d().state_dict()) > 1e-3
    logs = [json.loads((out / f"seg_rank{r}.json").read_text()) for r in (0, 1)]
    reference = evaluate(
        segmenter(),
        DataLoader(bright_squares(n=16), batch_size=16),
        task=Segmentation(2, ignore_index=255, metric=ConfusionMIoU),
    )
    for log in logs:  # the 16 validation images were split 8 / 8 and the metric saw all of them
        assert log["val_miou"][0] == pytest.approx(reference["miou"], rel=1e-6)
        assert log["val_loss"][0] == pytest.approx(reference["loss"], rel=1e-6)


def test_the_example_script_runs_under_torchrun(ddp_runs):
    out, _, log = ddp_runs  # the worker ran examples/ddp_train.py's main() after its own runs
    assert "2 process(es) on cpu: global batch 128, 1 epochs" in log and (out / "example.pt").is_file()
    assert log.count("process(es) on") == 1  # printed by rank 0 only


# ---------------------------------------------------------------------------------------------
# In one process: the pieces that do not need a process group
# ---------------------------------------------------------------------------------------------
def test_shard_sampler_splits_without_padding_and_outside_torchrun_nothing_changes():
    shards = [list(ShardSampler(10, 3, r)) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]] and [
        len(ShardSampler(10, 3, r)) for r in range(3)
    ] == [4, 3, 3]
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert len(ShardSampler(1, 4, 3)) == 0
    with pytest.raises(TypeError, match="must be a torch.utils.data.DataLoader"):
        shard_loader([1, 2], train=True, seed=0, name="train_loader")
    loader = DataLoader(blobs(), batch_size=8, sampler=torch.utils.data.WeightedRandomSampler([1.0] * 96, 96))
    with pytest.raises(TypeError, match="sampler of its own"):
        shard_loader(loader, train=True, seed=0, name="train_loader")


def test_shard_loader_keeps_the_loader_settings(monkeypatch):
    import utils.train.distributed as d

    monkeypatch.setattr(d, "world_size", lambda: 2)
    monkeypatch.setattr(d, "rank", lambda: 1)

    def collate(samples):
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])

    g = torch.Generator()
    loader = DataLoader(blobs(), batch_size=8, shuffle=True, collate_fn=collate, generator=g, drop_last=True)
    rebuilt, sampler = shard_loader(loader, train=True, seed=5, name="train_loader")
    assert (
        isinstance(sampler, DistributedSampler)
        and sampler.shuffle
        and sampler.seed == 5
        and sampler.rank == 1
    )
    assert (
        rebuilt.batch_size == 8
        and rebuilt.collate_fn is collate
        and rebuilt.generator is g
        and rebuilt.drop_last
    )
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert first != list(sampler) and len(first) == 48
    _, shard = shard_loader(DataLoader(blobs(), batch_size=10), train=False, seed=0, name="val_loader")
    assert isinstance(shard, ShardSampler) and list(shard)[:3] == [1, 3, 5]


def test_device_follows_local_rank(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert utils.device() == torch.device("cuda", 1)
    assert utils.device("cuda") == torch.device("cuda", 1)
    assert utils.device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="LOCAL_RANK=1 but this machine has 1 GPU"):
        utils.device()
    monkeypatch.delenv("LOCAL_RANK")
    assert utils.device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert utils.device("cpu") == torch.device("cpu")


def test_outside_torchrun_fit_is_a_single_process_run(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    loader = DataLoader(blobs(), batch_size=16)
    model = mlp()
    fit(model, loader, epochs=1, device="cpu", progress=False)
    assert not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="launch the script with torchrun"):
        fit(model, loader, epochs=1, device="cpu", progress=False)
