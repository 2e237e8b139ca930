"""Typed params: one frozen dataclass per section of params.yaml, all validated once, when a stage loads them.

    params = load_params("params.yaml")      # a Params; raises ParamsError on the first bad value
    params.train_transfer.lr, params.split.val, params.seed, ...

Every error is one line naming the key, the value and what is allowed:
    train_transfer.lr='abc' is not valid; use a number > 0
Unknown keys (likely typos) and missing keys are errors too. Library code receives these objects,
or plain values, and raises plain ValueErrors that name no key; it never reads params.yaml.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

PARAMS_FILE = "params.yaml"


class ParamsError(ValueError):
    """A bad params.yaml: the message is the one line to show."""


class _Invalid(Exception):
    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


Check = Callable[[Any], Any]


def integer(lo: int, hi: int | None = None) -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise _Invalid(f"use an integer in {lo}..{hi}" if hi is not None else f"use an integer >= {lo}")
        return v
    return check


def number(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    def check(v: Any) -> float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
        ok = ok and (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            left = "(" if lo_open else "["
            right = "" if hi is None else (f", {hi:g})" if hi_open else f", {hi:g}]")
            raise _Invalid(f"use a number > {lo:g}" if hi is None and lo_open else
                           f"use a number >= {lo:g}" if hi is None else f"use a number in {left}{lo:g}{right}")
        return float(v)
    return check


def choice(*allowed: Any) -> Check:
    def check(v: Any) -> Any:
        if isinstance(v, bool) or v not in allowed:
            raise _Invalid(f"choose one of: {', '.join(map(str, allowed))}")
        return v
    return check


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid("use true or false")
    return v


def text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip() or not v.isprintable():
        raise _Invalid("use a non-empty one-line string")
    return v


def url(v: Any) -> str:
    if not isinstance(v, str) or not v.lower().startswith(("http://", "https://", "file://")):
        raise _Invalid("use an http://, https:// or file:// URL")
    return v


def user_agent(v: Any) -> str:
    if not isinstance(v, str) or not v.strip() or not v.isprintable():
        raise _Invalid("use a non-empty one-line string naming the project and a contact")
    return v


NUM_TEST_SHARDS = 20  # GLDv2's test set: images_000.tar .. images_019.tar


def shard_template(v: Any) -> str:
    """A str.format template with {shard} giving each GLDv2 test shard its own http(s)/file URL."""
    allowed = "use a URL with {shard} in it, e.g. .../test/images_{shard:03d}.tar"
    url(v)
    try:
        urls = {v.format(shard=i) for i in range(NUM_TEST_SHARDS)}
    except (KeyError, IndexError, ValueError, AttributeError):
        raise _Invalid(f"{allowed}, and no other {{...}} field") from None
    if "{shard" not in v or len(urls) != NUM_TEST_SHARDS:
        raise _Invalid(allowed)
    return v


def optional(inner: Check) -> Check:
    def check(v: Any) -> Any:
        if v is None:
            return None
        try:
            return inner(v)
        except _Invalid as e:
            raise _Invalid(f"{e.allowed} or null") from None
    return check


def either(*checks: Check) -> Check:
    def check(v: Any) -> Any:
        reasons = []
        for c in checks:
            try:
                return c(v)
            except _Invalid as e:
                reasons.append(e.allowed)
        raise _Invalid("; or ".join(reasons))
    return check


def p(check: Check, default: Any = MISSING) -> Any:
    """A params field: its check, and a default only where params.yaml may leave it out."""
    return field(default=default, metadata={"check": check})


def parse(cls: type, section: str, raw: Any) -> Any:
    """`raw` (params.yaml's mapping for `section`) as a `cls`, every value checked."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{section}={raw!r} is not valid; params.yaml needs a `{section}:` section of settings")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(known), key=str)
    if unknown:
        raise ParamsError(f"{section}.{unknown[0]} is not a known setting; known: {', '.join(known)}")
    values = {}
    for f in fields(cls):
        if f.name not in raw:
            if f.default is MISSING:
                raise ParamsError(f"{section}.{f.name} is missing; add it to params.yaml")
            continue
        try:
            values[f.name] = f.metadata["check"](raw[f.name])
        except _Invalid as e:
            raise ParamsError(f"{section}.{f.name}={raw[f.name]!r} is not valid; {e.allowed}") from None
    obj = cls(**values)
    check_whole = getattr(obj, "check", None)
    if check_whole is not None:
        try:
            check_whole()
        except _Invalid as e:
            raise ParamsError(f"{section}: {e.allowed}") from None
    return obj


# ----------------------------------------------------------------------------- the choices (one home)

DATASETS = ("synthetic", "gldv2", "folder")
AUGMENT_PRESETS = ("none", "paper", "strong")
OPTIMIZERS = ("sgd", "adam", "nadam", "adagrad", "adamw")
SCHEDULERS = ("none", "step", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")
SCRATCH_ARCHS = ("paper", "vgg")
FREEZE_POLICIES = ("none", "early", "all")
NORMALIZE = ("backbone", "dataset")
SCORES = ("knn", "msp", "knn_msp")
MAX_SYNTHETIC_KINDS = 18


# ----------------------------------------------------------------------------- the sections

@dataclass(frozen=True)
class SyntheticParams:
    num_classes: int = p(integer(2, MAX_SYNTHETIC_KINDS))
    images_per_class: int = p(integer(1))
    image_size: int = p(integer(32))
    distractor_fraction: float = p(number(0.0, 0.9))


@dataclass(frozen=True)
class Gldv2Params:
    metadata_url: str = p(url)
    category_url: str = p(url)
    min_images_per_class: int = p(integer(0))
    max_images_per_class: int | None = p(optional(integer(1)))
    max_classes: int | None = p(optional(integer(1)))
    solution_url: str = p(url)
    test_shard_url: str = p(shard_template)
    distractor_shards: int = p(integer(0, NUM_TEST_SHARDS))
    max_distractors: int | None = p(optional(integer(0)))


@dataclass(frozen=True)
class FolderParams:
    path: str = p(text)


@dataclass(frozen=True)
class DownloadParams:
    workers: int = p(integer(1))
    processes: int | str = p(either(choice("auto"), integer(1)))  # auto: one per usable core
    image_size: int = p(integer(16))
    connect_timeout: float = p(number(0.0, 3600.0, lo_open=True))
    read_timeout: float = p(number(0.0, 3600.0, lo_open=True))
    deadline: float = p(number(0.0, 86400.0, lo_open=True))  # seconds for the whole of one image, retries included
    max_retries: int = p(integer(0))
    backoff: float = p(number(0.0, 3600.0))
    max_bytes: int = p(integer(1))
    max_pixels: int = p(integer(1))
    user_agent: str = p(user_agent)


@dataclass(frozen=True)
class SplitParams:
    train: float = p(number(0.0, 1.0, lo_open=True, hi_open=True))
    val: float = p(number(0.0, 1.0, lo_open=True, hi_open=True))
    test: float = p(number(0.0, 1.0, lo_open=True, hi_open=True))
    min_images_per_class: int = p(integer(3))

    def check(self) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise _Invalid(f"train={self.train:g} + val={self.val:g} + test={self.test:g} = {total:g}; "
                           "the fractions must add up to 1")

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class ComputeStatsParams:
    image_size: int = p(integer(1))


@dataclass(frozen=True)
class TrainParams:
    """What both training stages share."""

    augment: str = p(choice(*AUGMENT_PRESETS))
    epochs: int = p(integer(1))
    batch_size: int = p(integer(1))
    optimizer: str = p(choice(*OPTIMIZERS))
    lr: float = p(number(0.0, lo_open=True))
    momentum: float = p(number(0.0, 1.0, hi_open=True))
    weight_decay: float = p(number(0.0))
    scheduler: str = p(choice(*SCHEDULERS))
    warmup_epochs: float = p(number(0.0))
    step_size: int = p(integer(1))
    gamma: float = p(number(0.0, 1.0, lo_open=True))
    label_smoothing: float = p(number(0.0, 1.0, hi_open=True))
    dropout: float = p(number(0.0, 1.0, hi_open=True))
    device: str = p(choice(*DEVICES))
    num_workers: int | str = p(either(choice("auto"), integer(0)))
    compile: bool = p(boolean)


@dataclass(frozen=True)
class ScratchParams(TrainParams):
    arch: str = p(choice(*SCRATCH_ARCHS))
    image_size: int = p(integer(32, 1024))


@dataclass(frozen=True)
class TransferParams(TrainParams):
    pretrained: bool = p(boolean)
    freeze: str = p(choice(*FREEZE_POLICIES))
    image_size: int | str = p(either(choice("native"), integer(32, 1024)))
    normalize: str = p(choice(*NORMALIZE))
    backbone_lr: float | None = p(optional(number(0.0, lo_open=True)))


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = p(integer(1))


@dataclass(frozen=True)
class TaggingParams:
    """How the tagging decision is made and chosen (landmarks.assessment)."""

    precision: float = p(number(0.0, 1.0, lo_open=True), 0.95)
    max_false_tag_rate: float = p(number(0.0, 1.0), 0.015)
    score: str = p(choice(*SCORES), "knn_msp")
    neighbours: int = p(integer(1), 3)
    held_out_classes: bool = p(boolean, True)


SECTIONS: dict[str, type] = {
    "synthetic": SyntheticParams, "gldv2": Gldv2Params, "folder": FolderParams, "download": DownloadParams,
    "split": SplitParams,
    "compute_stats": ComputeStatsParams, "train_scratch": ScratchParams, "train_transfer": TransferParams,
    "evaluate": EvaluateParams, "tagging": TaggingParams,
}
ROOT: dict[str, Check] = {"seed": integer(0), "dataset": choice(*DATASETS), "model": text}


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml, checked."""

    seed: int
    dataset: str
    model: str
    synthetic: SyntheticParams
    gldv2: Gldv2Params
    folder: FolderParams
    download: DownloadParams
    split: SplitParams
    compute_stats: ComputeStatsParams
    train_scratch: ScratchParams
    train_transfer: TransferParams
    evaluate: EvaluateParams
    tagging: TaggingParams


def check_params(raw: Any) -> Params:
    """A Params from params.yaml's parsed content; ParamsError names the first bad value."""
    if not isinstance(raw, dict):
        raise ParamsError("params.yaml is empty or not a mapping of settings")
    names = [f.name for f in fields(Params)]
    unknown = sorted(set(raw) - set(names), key=str)
    if unknown:
        raise ParamsError(f"{unknown[0]} is not a known setting; known: {', '.join(names)}")
    missing = [n for n in names if n not in raw]
    if missing:
        raise ParamsError(f"{missing[0]} is missing; params.yaml needs it")
    values: dict[str, Any] = {}
    for key, check in ROOT.items():
        try:
            values[key] = check(raw[key])
        except _Invalid as e:
            raise ParamsError(f"{key}={raw[key]!r} is not valid; {e.allowed}") from None
    for key, cls in SECTIONS.items():
        values[key] = parse(cls, key, raw[key])
    return Params(**values)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and check params.yaml (`dvc exp run -S` overrides are already written into it)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path} not found; run the stage from the project folder") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return check_params(raw)
