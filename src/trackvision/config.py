"""params.yaml -> typed, validated config. Every error names the key, the value and what is allowed.

Validation happens once, before any stage does work, so a typo never costs a half-finished run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trackvision.data.balance import STRATEGIES
from trackvision.data.fetch import Downloader
from trackvision.data.packed import SPLITS
from trackvision.data.sources import available_sources, get_source, parse_options
from trackvision.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adam", "sgd")
FINETUNE_MODES = ("full", "linear_probe", "gradual")
PRETRAINED = ("none", "hub", "embedded")


@dataclass(frozen=True)
class DataConfig:
    source: str
    image_size: int  # images are decoded and resized to this once, at the balance stage
    min_per_class: int
    options: Any  # the source's own options dataclass (``data.<source>``)
    channels: int
    presplit: bool  # the source ships an official test split (kept as given)
    workers: int  # decoding processes at balance (0 = every core); does not change the output


@dataclass(frozen=True)
class DownloadConfig:
    mirror: str  # "" = official URLs; else every file comes from <mirror>/<file name>
    cache_dir: str  # "" = $TRACKVISION_CACHE or ~/.cache/trackvision; relative = to the repo
    retries: int
    timeout: float
    max_extract_gb: float
    checksums: dict[str, str]  # file name -> md5 replacing the published one (repacked mirrors)

    def downloader(self, root: Path) -> Downloader:
        """The Downloader these settings describe, with the cache resolved against ``root``."""
        default = os.environ.get("TRACKVISION_CACHE") or Path.home() / ".cache" / "trackvision"
        cache = Path(self.cache_dir) if self.cache_dir else Path(default)
        return Downloader(
            cache_dir=cache if cache.is_absolute() else root / cache,
            mirror=self.mirror,
            retries=self.retries,
            timeout=self.timeout,
            max_extract_bytes=int(self.max_extract_gb * (1 << 30)),
            checksums=self.checksums,
        )


@dataclass(frozen=True)
class AugmentSettings:
    """How each offline copy is made (``augment.*`` in params.yaml)."""

    copies: int
    rotation: float  # max degrees either way
    hflip: float  # probability
    crop_scale: float  # smallest area fraction kept by the random crop
    color_jitter: float  # brightness/contrast/saturation strength
    seed: int


@dataclass(frozen=True)
class BalanceConfig:
    strategy: str
    split: dict[str, float]
    seed: int


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of one model's training: ``train.*`` overridden by ``models.<name>.*``."""

    lr: float
    epochs: int
    batch_size: int
    weight_decay: float
    seed: int
    patience: int
    image_size: int
    device: str
    warmup_epochs: int
    label_smoothing: float
    shift: int  # online augmentation: max random translation in px (0 = off)
    hflip: bool  # online augmentation: random horizontal flips
    precision: str  # auto (bf16 where the device has it natively, else fp32) | fp32 | bf16 | fp16
    channels_last: bool  # NHWC memory format: oneDNN's fast convolutions (cnn 1.5x on AVX2)
    optimizer: str  # adamw | adam | sgd (momentum 0.9, Nesterov)
    grad_clip: float  # max global L2 norm of the gradients (0 = off)
    finetune: str  # full | linear_probe | gradual (see training/finetune.py)
    head_epochs: int  # gradual: epochs that train the classifier alone
    backbone_lr_scale: float  # gradual: backbone LR = lr * this once it is unfrozen
    subset: float  # share of the original training images used (stratified; learning curves)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``train.models`` with everything needed to build and train it."""

    name: str
    train: TrainSettings
    pretrained: str
    arch: dict[str, Any]  # the remaining ``models.<name>.*`` keys, passed to the model builder


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int
    latency_repeats: int  # timed batch-1 forward passes on the CPU (median reported)


@dataclass(frozen=True)
class DoctorConfig:
    strict: bool  # a `fail` finding fails the stage (after its outputs are written)
    near_duplicate_correlation: float  # structure of two thumbnails this alike = copies


@dataclass(frozen=True)
class MlflowConfig:
    enabled: bool
    tracking_uri: str  # "" = sqlite:///<repo root>/mlflow.db; MLFLOW_TRACKING_URI overrides both
    log_model: bool
    # Registered model each evaluated run becomes a version of; "{source}" = data.source; "" = off.
    registered_model: str


@dataclass(frozen=True)
class Config:
    data: DataConfig
    download: DownloadConfig
    balance: BalanceConfig
    augment: AugmentSettings
    train: TrainSettings
    models: tuple[str, ...]
    model_options: dict[str, dict[str, Any]]
    evaluate: EvaluateConfig
    doctor: DoctorConfig
    mlflow: MlflowConfig
    raw: dict[str, Any] = field(repr=False)

    def model(self, name: str) -> ModelSpec:
        """The fully resolved settings of model ``name`` (any timm name gets defaults)."""
        # Imported here: the model registry costs seconds (torch, timm) that data stages skip.
        from trackvision.models.weights import is_weights_path
        from trackvision.models.zoo import check_arch_options

        opts = dict(self.model_options.get(name) or {})
        overrides = {k: opts.pop(k) for k in list(opts) if k in _TRAIN_KEYS}
        merged = {
            **dataclasses.asdict(self.train),
            "image_size": self.input_side(name),
            **overrides,
        }
        train = _train_settings(merged, f"models.{name}")
        pretrained = str(opts.pop("pretrained", "none"))
        if pretrained not in PRETRAINED and not is_weights_path(pretrained):
            raise ConfigError(
                f"models.{name}.pretrained: {pretrained!r} is not one of {', '.join(PRETRAINED)} "
                "or a .safetensors/.pth file"
            )
        check_arch_options(name, opts)
        return ModelSpec(name, train, pretrained, opts)

    def input_side(self, name: str) -> int:
        """The side model ``name`` is trained and run at: ``models.<name>.image_size`` if set,
        else the size its pretrained weights were trained at, else ``train.image_size``."""
        opts = self.model_options.get(name) or {}
        if "image_size" in opts:
            return _int(opts, "image_size", f"models.{name}", lo=8, hi=4096)
        if str(opts.get("pretrained", "none")) != "none":
            from trackvision.models.zoo import pretrained_input_size

            native = pretrained_input_size(name)
            if native:
                return native
        return self.train.image_size

    @property
    def decode_size(self) -> int:
        """The side balance decodes images to: ``data.image_size``, or more when a model's input
        is larger (a pretrained model at its own resolution), so no model sees upscaled pixels."""
        return max(self.data.image_size, *(self.input_side(m) for m in self.models))


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_TRAIN_KEYS = _fields(TrainSettings)


# --- small typed getters: each names the full key in its error --------------------------------


def _section(raw: Any, key: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(raw).__name__} {raw!r}")
    if allowed is not None:
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
            )
    return raw


def _require(section: dict[str, Any], key: str, prefix: str) -> Any:
    if key not in section:
        raise ConfigError(f"{prefix}.{key}: missing; add it to params.yaml")
    return section[key]


def _int(section: dict, key: str, prefix: str, lo: int | None = None, hi: int | None = None) -> int:
    value = _require(section, key, prefix)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{prefix}.{key}: expected an integer, got {value!r}")
    _check_range(value, f"{prefix}.{key}", lo, hi)
    return value


def _float(
    section: dict,
    key: str,
    prefix: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float:
    value = _require(section, key, prefix)
    if isinstance(value, str):
        # YAML 1.1 reads "1e-4" as a string; accept it as the number it plainly is.
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{prefix}.{key}: expected a finite number, got {value!r}")
    if lo_open and lo is not None and value <= lo:
        raise ConfigError(f"{prefix}.{key}: must be > {lo}, got {value}")
    _check_range(float(value), f"{prefix}.{key}", lo, hi)
    return float(value)


def _check_range(value: float, key: str, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise ConfigError(f"{key}: {value} is out of range; allowed: {bounds}")


def _choice(section: dict, key: str, prefix: str, choices: tuple[str, ...]) -> str:
    value = _require(section, key, prefix)
    if value not in choices:
        raise ConfigError(f"{prefix}.{key}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _bool(section: dict, key: str, prefix: str) -> bool:
    value = _require(section, key, prefix)
    if not isinstance(value, bool):
        raise ConfigError(f"{prefix}.{key}: expected true or false, got {value!r}")
    return value


# --- sections ----------------------------------------------------------------------------------


def _train_settings(t: dict[str, Any], prefix: str) -> TrainSettings:
    return TrainSettings(
        lr=_float(t, "lr", prefix, lo=0.0, hi=10.0, lo_open=True),
        epochs=_int(t, "epochs", prefix, lo=1, hi=100_000),
        batch_size=_int(t, "batch_size", prefix, lo=1, hi=1 << 16),
        weight_decay=_float(t, "weight_decay", prefix, lo=0.0, hi=10.0),
        seed=_int(t, "seed", prefix, lo=0),
        patience=_int(t, "patience", prefix, lo=0),
        image_size=_int(t, "image_size", prefix, lo=8, hi=4096),
        device=_choice(t, "device", prefix, DEVICES),
        warmup_epochs=_int(t, "warmup_epochs", prefix, lo=0),
        label_smoothing=_float(t, "label_smoothing", prefix, lo=0.0, hi=0.99),
        shift=_int(t, "shift", prefix, lo=0, hi=256),
        hflip=_bool(t, "hflip", prefix),
        precision=_choice(t, "precision", prefix, PRECISIONS),
        channels_last=_bool(t, "channels_last", prefix),
        optimizer=_choice(t, "optimizer", prefix, OPTIMIZERS),
        grad_clip=_float(t, "grad_clip", prefix, lo=0.0),
        finetune=_choice(t, "finetune", prefix, FINETUNE_MODES),
        head_epochs=_int(t, "head_epochs", prefix, lo=0),
        backbone_lr_scale=_float(t, "backbone_lr_scale", prefix, lo=0.0, hi=10.0, lo_open=True),
        subset=_float(t, "subset", prefix, lo=0.0, hi=1.0, lo_open=True),
    )


_DATA_KEYS = ("source", "image_size", "min_per_class", "workers")


def _data(d: dict[str, Any]) -> DataConfig:
    source = get_source(str(_require(d, "source", "data")))
    extra = sorted(set(d) - {*_DATA_KEYS, *available_sources()})
    if extra:
        raise ConfigError(
            f"data: unknown key(s) {', '.join(extra)}; allowed: {', '.join(_DATA_KEYS)} "
            f"and one options block per source ({', '.join(available_sources())})"
        )
    options = parse_options(source, d.get(source.name))
    return DataConfig(
        source=source.name,
        image_size=_int(d, "image_size", "data", lo=8, hi=4096),
        min_per_class=_int(d, "min_per_class", "data", lo=1),
        options=options,
        # A source whose channel count is an option (folder) overrides its registered default.
        channels=getattr(options, "channels", source.channels),
        presplit=source.presplit,
        workers=_int(d, "workers", "data", lo=0, hi=256),
    )


def _balance(b: dict[str, Any]) -> BalanceConfig:
    split = _section(_require(b, "split", "balance"), "balance.split", SPLITS)
    ratios = {k: _float(split, k, "balance.split", lo=0.0, hi=1.0) for k in SPLITS}
    if abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ConfigError(
            f"balance.split: ratios must sum to 1, got {ratios} (sum {sum(ratios.values()):g})"
        )
    if ratios["train"] <= 0 or ratios["test"] <= 0:
        raise ConfigError(f"balance.split: train and test ratios must be > 0, got {ratios}")
    return BalanceConfig(
        strategy=_choice(b, "strategy", "balance", STRATEGIES),
        split=ratios,
        seed=_int(b, "seed", "balance", lo=0),
    )


def _augment(a: dict[str, Any]) -> AugmentSettings:
    return AugmentSettings(
        copies=_int(a, "copies", "augment", lo=0, hi=100),
        rotation=_float(a, "rotation", "augment", lo=0.0, hi=180.0),
        hflip=_float(a, "hflip", "augment", lo=0.0, hi=1.0),
        crop_scale=_float(a, "crop_scale", "augment", lo=0.05, hi=1.0),
        color_jitter=_float(a, "color_jitter", "augment", lo=0.0, hi=1.0),
        seed=_int(a, "seed", "augment", lo=0),
    )


def _model_names(t: dict[str, Any], check: bool) -> tuple[str, ...]:
    models = _require(t, "models", "train")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"train.models: expected a non-empty list of model names, got {models!r}")
    if len(set(models)) != len(models):
        raise ConfigError(f"train.models: duplicate names in {models}")
    if check:
        from trackvision.models.zoo import check_model_name

        for name in models:
            check_model_name(name, "train.models")
    return tuple(models)


def _download(d: dict[str, Any]) -> DownloadConfig:
    for key in ("mirror", "cache_dir"):
        if not isinstance(_require(d, key, "download"), str):
            raise ConfigError(
                f'download.{key}: expected a string ("" for the default), got {d[key]!r}'
            )
    return DownloadConfig(
        mirror=d["mirror"],
        cache_dir=d["cache_dir"],
        retries=_int(d, "retries", "download", lo=0, hi=20),
        timeout=_float(d, "timeout", "download", lo=0.0, hi=3600.0, lo_open=True),
        max_extract_gb=_float(d, "max_extract_gb", "download", lo=0.0, lo_open=True),
        checksums=_checksums(d),
    )


def _checksums(d: dict[str, Any]) -> dict[str, str]:
    sums = _section(_require(d, "checksums", "download") or {}, "download.checksums")
    for name, value in sums.items():
        if not (
            isinstance(value, str)
            and len(value) == 32
            and all(c in "0123456789abcdef" for c in value)
        ):
            raise ConfigError(
                f"download.checksums.{name}: expected a 32-digit lowercase md5, got {value!r}"
            )
    return dict(sums)


def _mlflow(m: dict[str, Any]) -> MlflowConfig:
    tracking_uri = _require(m, "tracking_uri", "mlflow")
    if not isinstance(tracking_uri, str):
        raise ConfigError(
            f'mlflow.tracking_uri: expected a string ("" for the default), got {tracking_uri!r}'
        )
    registered = _require(m, "registered_model", "mlflow")
    if not isinstance(registered, str) or (registered and not registered.strip()):
        raise ConfigError(
            'mlflow.registered_model: expected a name such as "{source}-classifier" '
            f'("" = do not register), got {registered!r}'
        )
    try:
        registered.format(source="source")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"mlflow.registered_model: {registered!r} may use only {{source}} ({exc!r})"
        ) from None
    return MlflowConfig(
        enabled=_bool(m, "enabled", "mlflow"),
        tracking_uri=tracking_uri,
        log_model=_bool(m, "log_model", "mlflow"),
        registered_model=registered,
    )


def parse_config(raw: Any, check_models: bool = True) -> Config:
    """Validate a params mapping (as loaded from params.yaml) into a Config.

    ``check_models=False`` skips the model entries (names, options), which need torch and timm:
    the data stages and compare do not build models and start seconds sooner without them.
    """
    sections = (
        "data",
        "download",
        "balance",
        "augment",
        "train",
        "models",
        "evaluate",
        "doctor",
        "mlflow",
    )
    root = _section(raw, "params.yaml", sections)
    for key in sections:
        if key != "models":
            _require(root, key, "params")
    t = _section(root["train"], "train", ("models", *_TRAIN_KEYS))
    model_options = _section(root.get("models") or {}, "models")
    for name, opts in model_options.items():
        _section(opts or {}, f"models.{name}")
    evaluate = _section(root["evaluate"], "evaluate", _fields(EvaluateConfig))
    doctor = _section(root["doctor"], "doctor", _fields(DoctorConfig))

    config = Config(
        data=_data(_section(root["data"], "data")),
        download=_download(_section(root["download"], "download", _fields(DownloadConfig))),
        balance=_balance(_section(root["balance"], "balance", ("strategy", "split", "seed"))),
        augment=_augment(_section(root["augment"], "augment", _fields(AugmentSettings))),
        train=_train_settings(t, "train"),
        models=_model_names(t, check_models),
        model_options={k: dict(v or {}) for k, v in model_options.items()},
        evaluate=EvaluateConfig(
            batch_size=_int(evaluate, "batch_size", "evaluate", lo=1),
            latency_repeats=_int(evaluate, "latency_repeats", "evaluate", lo=1, hi=10_000),
        ),
        doctor=DoctorConfig(
            strict=_bool(doctor, "strict", "doctor"),
            near_duplicate_correlation=_float(
                doctor, "near_duplicate_correlation", "doctor", lo=0.0, hi=1.0, lo_open=True
            ),
        ),
        mlflow=_mlflow(_section(root["mlflow"], "mlflow", _fields(MlflowConfig))),
        raw=root,
    )
    if check_models:  # resolve once now, so per-model typos fail before any work
        for name in config.models:
            config.model(name)
    return config


def load_config(path: Path, check_models: bool = True) -> Config:
    """Read and validate ``params.yaml`` (``check_models=False``: all but the model entries)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; run from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(raw, check_models)
