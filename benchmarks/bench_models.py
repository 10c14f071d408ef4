"""Speed of the course's readable models against torchvision's, in the same process.

One training step (forward, cross-entropy, backward, SGD update) of ``utils.models.resnet18`` and
``resnet50`` is timed against ``torchvision.models.resnet18`` / ``resnet50`` with the same weights
and the same batch, in full precision (fp32) and under bf16 autocast (fp16 too on CUDA), with the
NCHW and the channels_last memory format. The two implementations are timed in alternation
(ABAB...), so that a machine that slows down or speeds up affects both alike; the median seconds
per step give images per second, and the ratio ``utils / torchvision`` (of images per second;
1.00 = as fast, below 1 = slower) is what matters: the course's models do the same operations and
must not be slower beyond noise. Results are appended to benchmarks/results/models.md with the
device name and the date.

    python benchmarks/bench_models.py [--device cpu|cuda] [--batch 16] [--size 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

import utils
import utils.models

RESULTS = Path(__file__).parent / "results" / "models.md"


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpu = platform.processor() or platform.machine()
    try:  # the model name is more telling than the architecture
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} CPU, {torch.get_num_threads()} threads"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def make_step(model, x, y, dtype, dev):
    """One SGD training step of ``model`` on the batch ``(x, y)``, under autocast when ``dtype`` is given."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None

    def step():
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    return step


def time_pair(step_a, step_b, dev, steps: int, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median seconds per step of ``step_a`` and ``step_b``, timed in alternation."""
    for _ in range(warmup):
        step_a()
        step_b()
    sync(dev)
    runs_a, runs_b = [], []
    for _ in range(repeats):
        for step, runs in ((step_a, runs_a), (step_b, runs_b)):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync(dev)
            runs.append((time.perf_counter() - start) / steps)
    return statistics.median(runs_a), statistics.median(runs_b)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: utils.device())")
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="image size in pixels (224 for ImageNet)")
    parser.add_argument("--steps", type=int, default=2, help="steps per timed run")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per implementation (the median is kept)"
    )
    parser.add_argument(
        "--precisions",
        default=None,
        help="comma-separated: fp32, bf16, fp16 (default: fp32,bf16, plus fp16 on CUDA)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to the results")
    args = parser.parse_args()
    dev = utils.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precisions = (args.precisions or ("fp32,bf16,fp16" if dev.type == "cuda" else "fp32,bf16")).split(",")
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    utils.seed_everything(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    y = torch.randint(0, 1000, (args.batch,), device=dev)

    rows = []
    header = (
        f"{'model':<9} {'precision':<9} {'format':<14} {'utils img/s':>12} {'torchvision img/s':>18} "
        f"{'ratio':>6}"
    )
    print(f"{device_name(dev)}; batch {args.batch} of {args.size}x{args.size} px; torch {torch.__version__}")
    print(header)
    for name in args.models.split(","):
        for precision in precisions:
            for memory_format in ("NCHW", "channels_last"):
                torch.manual_seed(0)
                ref = getattr(torchvision.models, name)().to(dev)
                ours = getattr(utils.models, name)().to(dev)
                ours.load_state_dict(ref.state_dict(), strict=True)  # same weights, same work
                xb = x
                if memory_format == "channels_last":
                    ref = ref.to(memory_format=torch.channels_last)
                    ours = ours.to(memory_format=torch.channels_last)
                    xb = x.contiguous(memory_format=torch.channels_last)
                step_ours = make_step(ours, xb, y, dtypes[precision], dev)
                step_ref = make_step(ref, xb, y, dtypes[precision], dev)
                t_ours, t_ref = time_pair(step_ours, step_ref, dev, args.steps, args.repeats)
                ips_ours, ips_ref = args.batch / t_ours, args.batch / t_ref
                ratio = ips_ours / ips_ref
                rows.append((name, precision, memory_format, ips_ours, ips_ref, ratio))
                print(
                    f"{name:<9} {precision:<9} {memory_format:<14} {ips_ours:>12.1f} {ips_ref:>18.1f} "
                    f"{ratio:>6.2f}",
                    flush=True,
                )
                del ref, ours, step_ours, step_ref

    if args.no_record:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    new = not RESULTS.exists()
    with RESULTS.open("a", encoding="utf-8") as f:
        if new:
            f.write(
                "# utils.models vs torchvision.models: one training step\n\n"
                "Written by `benchmarks/bench_models.py`. Ratio = utils images/s / torchvision images/s "
                "(1.00: as fast; the two are timed in alternation in one process, median of the runs).\n"
            )
        f.write(
            f"\n## {dt.date.today().isoformat()}: {device_name(dev)}\n\n"
            f"torch {torch.__version__}, torchvision {torchvision.__version__}; "
            f"batch {args.batch} images of {args.size}x{args.size} px, 1000 classes, SGD with momentum; "
            f"median of {args.repeats} runs of "
            f"{args.steps} steps each.\n\n"
            "| model | precision | memory format | utils img/s | torchvision img/s | ratio |\n"
            "| --- | --- | --- | ---: | ---: | ---: |\n"
        )
        for name, precision, memory_format, a, b, r in rows:
            f.write(f"| {name} | {precision} | {memory_format} | {a:.1f} | {b:.1f} | {r:.2f} |\n")
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
