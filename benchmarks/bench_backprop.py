"""Speed of chapter 01's hand-written backward pass against torch.autograd, in the same process.

One training step (forward, backward, SGD update) of `utils.scratch.MLPScratch` is timed against
the same network as an `nn.Sequential` trained with autograd and `torch.optim.SGD`, on the same
batches. The ratio (scratch time / autograd time) is what matters: the hand-written version should
cost about the same as autograd (it does the same matrix products). Results are appended to
benchmarks/results/backprop.md with the device name and date.

    python benchmarks/bench_backprop.py [--device cpu|cuda] [--batch 256] [--steps 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from pathlib import Path

import torch
from torch import nn

import utils
from utils.scratch import MLPScratch

RESULTS = Path(__file__).parent / "results" / "backprop.md"


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_steps(step, steps: int, dev: torch.device, repeats: int = 5) -> float:
    """Median seconds per step over `repeats` runs of `steps` steps (after a warm-up)."""
    for _ in range(10):
        step()
    sync(dev)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(dev)
        runs.append((time.perf_counter() - start) / steps)
    return sorted(runs)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sizes", default="64,256,256,10")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to the results")
    args = parser.parse_args()
    dev = utils.device(args.device)
    utils.seed_everything(0)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    x = torch.randn(args.batch, sizes[0], device=dev)
    y = torch.randint(0, sizes[-1], (args.batch,), device=dev)
    lr = 0.1

    scratch = MLPScratch(sizes, seed=0, device=dev)

    def scratch_step():
        _, grads = scratch.loss(x, y)
        scratch.step(grads, lr)

    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    ref = nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(ref.parameters(), lr=lr)

    def autograd_step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()

    t_scratch = time_steps(scratch_step, args.steps, dev)
    t_ref = time_steps(autograd_step, args.steps, dev)
    ratio = t_scratch / t_ref
    row = (
        f"| {dt.date.today().isoformat()} | {device_name(dev)} | torch {torch.__version__} | {sizes} | "
        f"{args.batch} | {1e3 * t_scratch:.3f} | {1e3 * t_ref:.3f} | {ratio:.2f} |"
    )
    print("date | device | torch | sizes | batch | scratch ms/step | autograd ms/step | ratio")
    print(row)
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        if not RESULTS.exists():
            RESULTS.write_text(
                "# Hand-written backward (chapter 01) vs torch.autograd\n\n"
                "One SGD training step of the same MLP; ratio = scratch / autograd (lower is faster; "
                "1.0 is parity). Produced by `python benchmarks/bench_backprop.py`.\n\n"
                "| date | device | torch | sizes | batch | scratch ms/step | autograd ms/step | ratio |\n"
                "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
            )
        with RESULTS.open("a") as fh:
            fh.write(row + "\n")


if __name__ == "__main__":
    main()
