"""Speed of utils.metrics.detection.MeanAveragePrecision against pycocotools' COCOeval, in the same process.

Both evaluate the same random detections on ``--images`` images (default 5,000; about 7 objects and
20 detections per image, 20 classes, objects of every size, a few crowds). Timed:

* ours: ``update`` (all images) + ``compute`` (the twelve numbers), from the tensors a detector returns;
* COCOeval: ``evaluate`` + ``accumulate`` + ``summarize``, on COCO objects built beforehand; building
  them (``COCO.createIndex`` for the ground truth, ``loadRes`` for the detections) is timed apart and
  reported as a second ratio that includes it.

Each side runs ``--repeats`` times, alternately; the best time counts. The ratio is COCOeval's time
over ours (above 1: ours is faster; the issue asks for at least 1). The twelve numbers are compared
too. Results are appended to benchmarks/results/detection_metric.md with the machine and the date.

    python benchmarks/bench_detection_metric.py [--images 5000] [--repeats 3] [--no-record]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm.auto import tqdm

from utils.metrics.detection import COCO_STATS, MeanAveragePrecision

RESULTS = Path(__file__).parent / "results" / "detection_metric.md"


def random_detections(n_images: int, seed: int, num_classes: int = 20) -> tuple[list[dict], list[dict]]:
    """Ground truth of every size (2 to 300 pixels) and detections: jittered copies of it and false alarms."""
    g = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_images):
        m = int(g.poisson(7))
        xy = g.uniform(0, 600, (m, 2))
        gt = np.concatenate([xy, xy + np.exp(g.uniform(np.log(2), np.log(300), (m, 2)))], 1)
        gt_labels = g.integers(1, num_classes + 1, m)
        k = min(int(g.poisson(20)), 150)
        near = gt[g.integers(0, m, k)] + g.normal(0, 8, (k, 4)) if m else np.zeros((k, 4))
        xy = g.uniform(0, 600, (k, 2))
        anywhere = np.concatenate([xy, xy + np.exp(g.uniform(np.log(2), np.log(300), (k, 2)))], 1)
        boxes = np.where((g.random(k) < 0.4)[:, None] | (m == 0), anywhere, near)
        boxes = np.concatenate(
            [np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1
        )
        labels = g.integers(1, num_classes + 1, k)
        if m:
            labels = np.where(g.random(k) < 0.7, gt_labels[g.integers(0, m, k)], labels)
        preds.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "scores": torch.tensor(g.random(k), dtype=torch.float32),
                "labels": torch.tensor(labels),
            }
        )
        targets.append(
            {
                "boxes": torch.tensor(gt, dtype=torch.float32),
                "labels": torch.tensor(gt_labels),
                "iscrowd": torch.tensor(g.random(m) < 0.03),
            }
        )
    return preds, targets


def coco_inputs(preds: list[dict], targets: list[dict]) -> tuple[COCO, list[dict]]:
    """pycocotools' ground truth (indexed) and results for the same data (xyxy -> x, y, w, h in float64)."""
    images, annotations, results = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1})
        for b, label, crowd in zip(t["boxes"].double().tolist(), t["labels"].tolist(), t["iscrowd"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label,
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
        for b, score, label in zip(
            p["boxes"].double().tolist(), p["scores"].double().tolist(), p["labels"].tolist()
        ):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": label,
                    "score": score,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                }
            )
    categories = sorted({a["category_id"] for a in annotations} | {r["category_id"] for r in results})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c} for c in categories],
        }
        gt.createIndex()
    return gt, results


def load_results(gt: COCO, results: list[dict]) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(results)


def run_cocoeval(gt: COCO, dt_: COCO) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(gt, dt_, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def run_ours(preds: list[dict], targets: list[dict]) -> np.ndarray:
    metric = MeanAveragePrecision()
    metric.update(preds, targets)
    result = metric.compute()
    return np.array([result[k] for k in COCO_STATS])


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-record", action="store_true", help="print only, do not append to the results file"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # COCOeval is single-threaded; so is ours here
    preds, targets = random_detections(args.images, args.seed)
    gt, results = coco_inputs(preds, targets)
    t_load, dt_ = timed(load_results, gt, results)
    times_coco, times_ours = [], []
    for _ in tqdm(range(args.repeats), desc="COCOeval and ours, alternately"):
        t, stats_coco = timed(run_cocoeval, gt, dt_)
        times_coco.append(t)
        t, stats_ours = timed(run_ours, preds, targets)
        times_ours.append(t)
    t_coco, t_ours = min(times_coco), min(times_ours)
    diff = float(np.abs(stats_ours - stats_coco).max())
    num_dets = sum(len(p["scores"]) for p in preds)
    num_gt = sum(len(t["labels"]) for t in targets)
    machine = f"{platform.machine()} CPU ({os.cpu_count()} cores), 1 thread"
    row = (
        f"| {dt.date.today().isoformat()} | {machine} | torch {torch.__version__}, "
        f"numpy {np.__version__}, "
        f"pycocotools {metadata.version('pycocotools')} | "
        f"{args.images} | {num_gt} | {num_dets} | {t_coco:.2f} | {t_load:.2f} | {t_ours:.2f} | "
        f"{t_coco / t_ours:.1f} | {(t_coco + t_load) / t_ours:.1f} | {diff:.1e} |"
    )
    print(
        "date | machine | versions | images | objects | detections | COCOeval s | loadRes s | ours s | "
        "ratio | ratio incl. loadRes | max |stat diff|"
    )
    print(row)
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        if not RESULTS.exists():
            RESULTS.write_text(
                "# COCO mAP: utils.metrics.detection vs pycocotools' COCOeval\n\n"
                "Random detections on N images (`python benchmarks/bench_detection_metric.py`). COCOeval s: "
                "`evaluate` + `accumulate` + `summarize` on prepared COCO objects; loadRes s: converting the "
                "detections into COCO's results object; ours s: `MeanAveragePrecision.update` (all images) + "
                "`compute`, from tensors. Best of 3 alternating runs. Ratio = COCOeval / ours (above 1: ours "
                "is faster; the goal is at least 1). max |stat diff|: the largest difference between the "
                "twelve summary numbers. The machine is shared with other work while these run: absolute "
                "times are inflated and noisy; the ratio, measured in the same run, is what counts.\n\n"
                "| date | machine | versions | images | objects | detections | COCOeval s | loadRes s "
                "| ours s | ratio | ratio incl. loadRes | max abs stat diff |\n"
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
            )
        with RESULTS.open("a") as fh:
            fh.write(row + "\n")


if __name__ == "__main__":
    main()
