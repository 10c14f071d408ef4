"""Transfer learning with any network that follows the backbone contract (chapter 09).

* Freezing: :func:`freeze` / :func:`unfreeze` a module, :func:`freeze_backbone` (everything but the
  classifier and the last ``train_stages`` stages), :func:`freeze_batchnorm` (running statistics
  kept as they are while the rest trains: :func:`utils.train.fit` leaves modules in eval mode).
* :func:`discriminative_param_groups`: one optimizer group per part of the network (the head, then
  the stages from the last to the first, then the stem), the learning rate shrinking by ``factor``
  at each step down, as ULMFiT's discriminative fine-tuning.
* Frozen features: :func:`embed` (the pooled features of the last stage, or of any stage, for a
  whole data set), :func:`linear_probe` (multinomial logistic regression on them, by L-BFGS; its
  weights can initialise the head of a fine-tuned network) and :func:`knn_predict`.
* :func:`adabn`: AdaBN, batch-norm statistics re-estimated on the data of a new domain, no labels.

Every function works on CPU and GPU; models are changed in place where the name says so
(``freeze``, ``adabn``) and returned for chaining.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from utils.common import check_model, eval_mode, model_device, move_to

__all__ = [
    "adabn",
    "batchnorm_layers",
    "discriminative_param_groups",
    "embed",
    "freeze",
    "freeze_backbone",
    "freeze_batchnorm",
    "knn_predict",
    "linear_probe",
    "unfreeze",
]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


# --------------------------------------------------------------------------------------------
# Freezing
# --------------------------------------------------------------------------------------------


def freeze(module: nn.Module) -> nn.Module:
    """Stop every parameter of ``module`` from training (``requires_grad = False``); returns it."""
    for p in check_model(module, "module").parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Let every parameter of ``module`` train again (``requires_grad = True``); returns it."""
    for p in check_model(module, "module").parameters():
        p.requires_grad_(True)
    return module


def _check_backbone(model: Any) -> nn.Module:
    check_model(model)
    missing = [a for a in ("stages", "get_classifier") if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} does not follow the backbone contract (no {', '.join(missing)}): "
            "build it with utils.models"
        )
    return model


def freeze_backbone(model: nn.Module, train_stages: int = 0) -> nn.Module:
    """Freeze the whole network except its classifier and its last ``train_stages`` stages (chapter 09).

    ``train_stages=0`` is feature extraction (only the head trains); ``len(model.stages)`` leaves only
    the stem frozen. Gradual unfreezing calls it with a growing ``train_stages``. Batch-norm layers in
    frozen parts still update their running statistics in train mode: add :func:`freeze_batchnorm`.
    """
    _check_backbone(model)
    stages = model.stages
    if (
        isinstance(train_stages, bool)
        or not isinstance(train_stages, int)
        or not 0 <= train_stages <= len(stages)
    ):
        raise ValueError(f"train_stages must be an int in [0, {len(stages)}], got {train_stages!r}")
    freeze(model)
    for stage in stages[len(stages) - train_stages :]:
        unfreeze(stage)
    unfreeze(model.get_classifier())
    return model


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``model`` in the order of ``model.modules()``."""
    return [m for m in check_model(model).modules() if isinstance(m, _BN)]


def freeze_batchnorm(model: nn.Module, *, affine: bool = False) -> list[nn.Module]:
    """Put every batch-norm layer of ``model`` in eval mode: it normalises with its running statistics
    and stops updating them, even while the rest of the model trains (``fit`` keeps such layers in
    eval mode; a later ``model.train()`` undoes it). ``affine=True`` also freezes their scale and
    shift. Returns the layers. Chapter 09 compares fine-tuning with and without it."""
    layers = batchnorm_layers(model)
    for m in layers:
        m.eval()
        if affine:
            freeze(m)
    return layers


def discriminative_param_groups(
    model: nn.Module, base_lr: float, factor: float = 0.5, *, include_frozen: bool = False, **options: Any
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with learning rates that shrink towards the input (chapter 09).

    Groups, from the output down: the classifier at ``base_lr``; ``model.stages[-1]`` at
    ``base_lr * factor``; ``stages[-2]`` at ``base_lr * factor**2``; ...; finally everything else (the
    stem, and parameters outside the stages such as a ViT's position embedding) at the next power.
    Each group is ``{"params": [...], "lr": ..., "name": "head" | "stage5" | ... | "stem", **options}``
    (``options``: e.g. ``weight_decay``). Frozen parameters (``requires_grad=False``) are left out,
    and so are groups left empty, unless ``include_frozen``; every trainable parameter appears
    exactly once. Pass the list to any ``torch.optim`` optimizer.
    """
    _check_backbone(model)
    if not base_lr > 0 or not factor > 0:
        raise ValueError(f"base_lr and factor must be positive, got {base_lr} and {factor}")
    stages = model.stages
    parts = [("head", model.get_classifier())] + [
        (f"stage{i + 1}", stages[i]) for i in range(len(stages) - 1, -1, -1)
    ]
    seen: set[int] = set()
    groups = []
    for depth, (name, part) in enumerate(parts):
        params = [p for p in part.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        groups.append((name, depth, params))
    rest = [p for p in model.parameters() if id(p) not in seen]  # the stem and anything outside the stages
    groups.append(("stem", len(parts), rest))
    out = []
    for name, depth, params in groups:
        kept = [p for p in params if include_frozen or p.requires_grad]
        if kept:
            out.append({"params": kept, "lr": base_lr * factor**depth, "name": name, **options})
    if not out:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    return out


# --------------------------------------------------------------------------------------------
# Frozen features: embeddings, linear probe, k nearest neighbours
# --------------------------------------------------------------------------------------------


def _batches(data: Any, batch_size: int) -> Iterable[torch.Tensor]:
    """Image batches from a tensor (N, C, H, W), a dataset of (image, label) items or a loader."""
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(data.shape)}")
        return (data[i : i + batch_size] for i in range(0, len(data), batch_size))
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size)
    return (b[0] if isinstance(b, (tuple, list)) else b["image"] if isinstance(b, dict) else b for b in data)


def _length(data: Any, batch_size: int) -> int | None:
    try:
        n = len(data)
    except TypeError:
        return None
    return -(-n // batch_size) if isinstance(data, (torch.Tensor, torch.utils.data.Dataset)) else n


def embed(
    model: nn.Module,
    data: Any,
    *,
    stage: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Embeddings (N, D) of every image of ``data``, on the CPU (chapter 09).

    ``data``: images (N, C, H, W) already preprocessed for the model, a dataset of ``(image, label)``
    items (e.g. ``utils.data.animals(preprocess=weights)``) or a loader. The embedding is the
    globally average-pooled output of the last stage (``model.forward_head(forward_features(x),
    pre_logits=True)``: D = ``num_features``), or the average over positions of the feature map of
    ``model.stages[stage]`` (D = ``stage_channels[stage]``). Eval mode and no gradients; the model's
    modes are restored.
    """
    _check_backbone(model)
    if stage is not None:
        n_stages = len(model.stages)
        if isinstance(stage, bool) or not isinstance(stage, int) or not -n_stages <= stage < n_stages:
            raise ValueError(f"stage must be an int in [-{n_stages}, {n_stages}), got {stage!r}")
        stage %= n_stages
    device = model_device(model) if device is None else torch.device(device)
    chunks = []
    batches = _batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=_length(data, batch_size), desc="embeddings", unit="batch")
    with eval_mode(model), torch.inference_mode():
        for x in batches:
            x = move_to(x, device)
            if stage is None:
                h = model.forward_head(model.forward_features(x), pre_logits=True)
            else:
                model.check_input(x)
                h = model.stem(x)
                for s in model.stages[: stage + 1]:
                    h = s(h)
                h = model.as_feature_map(h).mean(dim=(2, 3))  # (N, stage_channels[stage])
            chunks.append(h.float().cpu())
    if not chunks:
        raise ValueError("data holds no images")
    return torch.cat(chunks)


def _check_features(x: Any, y: Any, name: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (N, D), got {getattr(x, 'shape', type(x).__name__)}")
    y = torch.as_tensor(y)
    if y.shape != (len(x),) or y.is_floating_point():
        raise ValueError(f"labels must be integers of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
    return x, y.long().to(x.device)


def linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    l2: float = 1e-3,
    num_classes: int | None = None,
    max_iter: int = 200,
    standardize: bool = True,
) -> nn.Linear:
    """A linear classifier on frozen features: multinomial logistic regression (chapter 09).

    Minimises ``mean cross-entropy + l2 / 2 * ||W||^2`` (the bias is not penalised) with full-batch
    L-BFGS in float64 on the features standardised with their own mean and standard deviation
    (``standardize``), then folds the standardisation into the returned ``nn.Linear(D, C)`` (float32,
    on the features' device), which takes the raw features: it can become a fine-tuned network's
    head. ``l2 = 1 / (C_sklearn * N)`` gives scikit-learn's ``LogisticRegression(C=C_sklearn)``.
    """
    x, y = _check_features(features, labels)
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes - 1}], got {int(y.min())}..{int(y.max())}")
    xd = x.double()
    mean = xd.mean(0) if standardize else torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    std = xd.std(0, unbiased=False).clamp_min(1e-8) if standardize else torch.ones_like(mean)
    xs = (xd - mean) / std
    w = torch.zeros(classes, x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w.T + b, y) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    head = nn.Linear(x.shape[1], classes, device=x.device)
    with torch.no_grad():
        weight = w / std  # W (x - m) / s + b = (W / s) x + (b - (W / s) m)
        head.weight.copy_(weight.float())
        head.bias.copy_((b - weight @ mean).float())
    return head


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query: torch.Tensor,
    k: int = 5,
    *,
    metric: str = "cosine",
    batch_size: int = 1024,
) -> torch.Tensor:
    """Labels (M,) of ``query`` (M, D) by a majority vote of its ``k`` nearest training features
    (N, D) (chapter 09). ``metric``: ``"cosine"`` (1 - cosine similarity) or ``"euclidean"``. A tie
    between classes goes to the smallest label, as in scikit-learn's ``KNeighborsClassifier``."""
    x, y = _check_features(train_features, train_labels, "train_features")
    if not isinstance(query, torch.Tensor) or query.dim() != 2 or query.shape[1] != x.shape[1]:
        raise ValueError(
            f"query must be (M, {x.shape[1]}), got {getattr(query, 'shape', type(query).__name__)}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(x):
        raise ValueError(f"k must be an int in [1, {len(x)}], got {k!r}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    classes = int(y.max()) + 1
    ref = F.normalize(x.float(), dim=1) if metric == "cosine" else x.float()
    out = []
    for i in range(0, len(query), batch_size):
        q = query[i : i + batch_size].float().to(x.device)
        if metric == "cosine":
            dist = 1 - F.normalize(q, dim=1) @ ref.T  # (m, N)
        else:
            dist = torch.cdist(q, ref)  # (m, N)
        nearest = dist.topk(k, dim=1, largest=False).indices  # (m, k)
        votes = F.one_hot(y[nearest], classes).sum(dim=1)  # (m, classes)
        out.append(votes.argmax(dim=1))  # the first maximum: the smallest label among ties
    return torch.cat(out).cpu()


# --------------------------------------------------------------------------------------------
# AdaBN
# --------------------------------------------------------------------------------------------


def adabn(model: nn.Module, data: Any, *, batch_size: int = 256, progress: bool = False) -> nn.Module:
    """AdaBN (Li et al., 2016): re-estimate every batch-norm layer's running statistics on ``data``
    from a new domain, without labels; the weights do not change (chapter 09).

    One pass over ``data`` (images, a dataset or a loader, as :func:`embed`) with the batch-norm
    layers in train mode, each normalising with its batch's statistics as in training, and every other
    layer in eval mode (no dropout). Forward hooks add up each batch-norm layer's input per channel;
    afterwards ``running_mean`` is the mean of all its inputs and ``running_var`` their unbiased
    variance (over every image and position, whatever the batch sizes). The modes, momenta,
    parameters and ``num_batches_tracked`` are left as they were. Returns the model.
    """
    check_model(model)
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no batch-norm layer to adapt")
    device = model_device(model)
    sums: dict[nn.Module, list[torch.Tensor | int]] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = inputs[0].detach().double()
        dims = [0] + list(range(2, x.dim()))  # every dimension but the channels
        acc = sums.setdefault(module, [0.0, 0.0, 0])
        acc[0] = acc[0] + x.sum(dims)
        acc[1] = acc[1] + x.pow(2).sum(dims)
        acc[2] += x.numel() // x.shape[1]

    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(hook) for m in layers]
    batches = _batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=_length(data, batch_size), desc="AdaBN", unit="batch")
    saved = [(m.running_mean, m.running_var) for m in layers]
    tracked = [None if m.num_batches_tracked is None else m.num_batches_tracked.clone() for m in layers]
    try:
        model.eval()
        for m in layers:
            m.train()
        with torch.no_grad():
            for x in batches:
                model(move_to(x, device))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.train(training)
        for m, count in zip(layers, tracked):
            if count is not None:
                m.num_batches_tracked.copy_(count)
    for m, (mean0, var0) in zip(layers, saved):
        if m not in sums:
            raise ValueError(f"a batch-norm layer ({m}) saw no input: is it used in forward()?")
        s, s2, n = sums[m]
        if n < 2:
            raise ValueError("AdaBN needs at least two values per channel")
        mean = s / n
        var = (s2 - n * mean.pow(2)) / (n - 1)
        if mean0 is None:  # track_running_stats=False: nothing to adapt
            continue
        with torch.no_grad():
            mean0.copy_(mean.to(mean0.dtype))
            var0.copy_(var.clamp_min(0).to(var0.dtype))
    return model
