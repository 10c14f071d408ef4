"""One training loop for the whole course: ``fit``, ``evaluate``, ``predict``, checkpoints, and tasks.

Chapter 01 writes a training loop by hand (forward, loss, backward, step); from chapter 02 on the
chapters call :func:`fit`, which adds what every later chapter needs around those four lines:

* a progress bar (tqdm) and a :class:`History` of named metrics per epoch (loss, accuracy, mAP, ...);
* mixed precision on CUDA (bf16, or fp16 with a gradient scaler), ``channels_last``, gradient
  clipping and gradient accumulation;
* a learning-rate scheduler, early stopping on any monitored metric;
* a checkpoint written after every epoch, from which an interrupted run resumes and ends with
  exactly the weights an uninterrupted run would have reached;
* data parallelism under ``torchrun`` (``utils.train.distributed``).

What one step is belongs to a *task*: :class:`Classification` (the default: ``(inputs, targets)``
batches, ``loss_fn(model(inputs), targets)``), :class:`Detection`, :class:`Segmentation`,
:class:`Reconstruction` (autoencoders, VAEs), :class:`GAN`, :class:`Distillation`, or a
:class:`Task` subclass of your own. A typical call::

    history = fit(model, train_loader, val_loader, epochs=10, lr=1e-3, seed=0)
    utils.viz.plot_history(history)

    history = fit(detector, train_loader, val_loader, epochs=10, task=Detection(),
                  early_stopping=3, monitor="val_map")

Modules: ``loop`` (fit, evaluate, predict), ``context`` (:class:`StepContext`, what a step may use),
``tasks``, ``vision_tasks`` and ``generative`` (the tasks), ``history``, ``checkpoint``,
``distributed``.
"""

from __future__ import annotations

from utils.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from utils.train.context import PER_BATCH_SCHEDULERS, StepContext
from utils.train.generative import GAN, Reconstruction
from utils.train.history import History
from utils.train.loop import evaluate, fit, predict
from utils.train.tasks import Classification, Distillation, Task
from utils.train.vision_tasks import Detection, Segmentation

__all__ = [
    "CHECKPOINT_FORMAT",
    "GAN",
    "PER_BATCH_SCHEDULERS",
    "Classification",
    "Detection",
    "Distillation",
    "History",
    "Reconstruction",
    "Segmentation",
    "StepContext",
    "Task",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
]
