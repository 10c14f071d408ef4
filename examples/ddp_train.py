"""Train a small CNN on the animal silhouettes with utils.train.fit, on one process or many.

The same script runs as it is on a laptop and data-parallel under torchrun:

    python examples/ddp_train.py                                   # one process (GPU if there is one)
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py # two processes on this machine
    torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 \\
        --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=run1 examples/ddp_train.py  # 2 machines

Under torchrun, fit joins the process group (NCCL on GPUs, gloo on CPUs), wraps the model in
DistributedDataParallel, gives every process its own shard of each epoch, adds up the metrics of all
processes, and only rank 0 draws the progress bar and writes the checkpoint. ``--batch-size`` is per
process: N processes train with a global batch N times larger. Run it again with ``--resume`` to
continue from the checkpoint. See the README, "Training on several GPUs or machines".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `import utils` from a fresh clone too

import utils  # noqa: E402
import utils.data  # noqa: E402
from utils.train import distributed, fit  # noqa: E402


def small_cnn(num_classes: int = 10) -> nn.Module:
    """Two conv blocks and a linear head for 1x28x28 images (about 20k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (16, 14, 14)
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (32, 7, 7)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--subset", type=int, default=None, help="train on this many images (a quick run)")
    parser.add_argument("--checkpoint", type=Path, default=Path("ddp_train.pt"))
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    train_set = utils.data.animals("train", subset=args.subset)
    val_set = utils.data.animals("test", subset=None if args.subset is None else max(args.subset // 4, 10))
    g = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, generator=g)
    val_loader = DataLoader(val_set, batch_size=256)

    torch.manual_seed(args.seed)  # the same initial weights in every process (DDP copies rank 0's anyway)
    model = small_cnn(len(train_set.classes))
    history = fit(
        model,
        train_loader,
        val_loader,
        epochs=args.epochs,
        lr=args.lr,
        checkpoint=args.checkpoint,
        resume=args.resume,
        seed=args.seed,
    )

    if distributed.is_main_process():  # every process has the same weights and history; one prints
        print(
            f"{distributed.world_size()} process(es) on {utils.device()}: global batch "
            f"{args.batch_size * distributed.world_size()}, {history.epochs} epochs, "
            f"validation accuracy {history.val_acc[-1]:.1%}, checkpoint {args.checkpoint}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
