"""params.yaml -> typed, validated config. Every error names the key, the value and what is allowed.

The schema is declared once, as pydantic models; validation happens once, before any stage does
work, so a typo never costs a half-finished run. Pydantic's errors are turned into one line that
names the full key (``_error_line``); the checks pydantic has no word for (ratios that sum to 1,
md5 digests, a source's own options, model names) are validators that say it themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trackvision.data.balance import STRATEGIES
from trackvision.data.fetch import Downloader
from trackvision.data.sources import available_sources, get_source, parse_options
from trackvision.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adam", "sgd")
FINETUNE_MODES = ("full", "linear_probe", "gradual")
PRETRAINED = ("none", "hub", "embedded")


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads "1e-4" as a string; accept it as the number it plainly is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


MD5 = r"^[0-9a-f]{32}$"
STUDY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# What each pattern means, for the error line.
PATTERNS = {MD5: "a 32-digit lowercase md5", STUDY_NAME: "letters, digits, '_', '.', '-'"}

Number = Annotated[float, BeforeValidator(_yaml_number), Field(allow_inf_nan=False)]
Side = Annotated[int, Field(ge=8, le=4096)]


class _Section(BaseModel):
    """A block of params.yaml: exactly these keys, of exactly these types."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(_Section):
    source: str
    image_size: Side  # images are decoded and resized to this once, at the balance stage
    min_per_class: Annotated[int, Field(ge=1)]
    workers: Annotated[int, Field(ge=0, le=256)]  # decoding processes; does not change the output
    options: Any = None  # the source's own options dataclass (``data.<source>``)
    channels: int = 0
    presplit: bool = False  # the source ships an official test split (kept as given)

    @model_validator(mode="before")
    @classmethod
    def _source_options(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or "source" not in raw:
            return raw
        if not isinstance(raw["source"], str):
            raise ValueError(f"source: expected a source name, got {raw['source']!r}")
        source = get_source(raw["source"])
        blocks = set(available_sources())
        extra = sorted(set(raw) - set(cls.model_fields) - blocks)
        if extra:
            raise ValueError(
                f"unknown key(s) {', '.join(extra)}; allowed: source, image_size, min_per_class, "
                f"workers and one options block per source ({', '.join(sorted(blocks))})"
            )
        options = parse_options(source, raw.get(source.name))
        fields = {k: v for k, v in raw.items() if k not in blocks}
        return {
            **fields,
            "options": options,
            # A source whose channel count is an option (folder) overrides its default.
            "channels": getattr(options, "channels", source.channels),
            "presplit": source.presplit,
        }


class DownloadConfig(_Section):
    mirror: str  # "" = official URLs; else every file comes from <mirror>/<file name>
    cache_dir: str  # "" = $TRACKVISION_CACHE or ~/.cache/trackvision; relative = to the repo
    retries: Annotated[int, Field(ge=0, le=20)]
    timeout: Annotated[Number, Field(gt=0, le=3600)]
    max_extract_gb: Annotated[Number, Field(gt=0)]
    # file -> md5 replacing the published one (repacked mirrors)
    checksums: dict[str, Annotated[str, Field(pattern=MD5)]] | None

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
            checksums=dict(self.checksums or {}),
        )


class AugmentSettings(_Section):
    """How each offline copy is made (``augment.*`` in params.yaml)."""

    copies: Annotated[int, Field(ge=0, le=100)]
    rotation: Annotated[Number, Field(ge=0, le=180)]  # max degrees either way
    hflip: Annotated[Number, Field(ge=0, le=1)]  # probability
    crop_scale: Annotated[Number, Field(ge=0.05, le=1)]  # smallest area fraction kept
    color_jitter: Annotated[Number, Field(ge=0, le=1)]  # brightness/contrast/saturation strength
    seed: Annotated[int, Field(ge=0)]


class SplitRatios(_Section):
    train: Annotated[Number, Field(gt=0, le=1)]
    val: Annotated[Number, Field(ge=0, le=1)]
    test: Annotated[Number, Field(gt=0, le=1)]

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitRatios:
        ratios = self.model_dump()
        if abs(sum(ratios.values()) - 1.0) > 1e-6:
            raise ValueError(f"ratios must sum to 1, got {ratios} (sum {sum(ratios.values()):g})")
        return self


class BalanceConfig(_Section):
    strategy: Literal[STRATEGIES]
    split: SplitRatios
    seed: Annotated[int, Field(ge=0)]
    group_near_copies: bool  # near-copies go to one split together (false: split, then warn)

    @field_validator("split", mode="after")
    @classmethod
    def _as_dict(cls, split: SplitRatios) -> Any:
        return split.model_dump()  # the split functions take {split: ratio}


class TrainSettings(_Section):
    """Hyperparameters of one model's training: ``train.*`` overridden by ``models.<name>.*``."""

    lr: Annotated[Number, Field(gt=0, le=10)]
    epochs: Annotated[int, Field(ge=1, le=100_000)]
    batch_size: Annotated[int, Field(ge=1, le=1 << 16)]
    weight_decay: Annotated[Number, Field(ge=0, le=10)]
    seed: Annotated[int, Field(ge=0)]
    patience: Annotated[int, Field(ge=0)]
    image_size: Side
    device: Literal[DEVICES]
    warmup_epochs: Annotated[int, Field(ge=0)]
    label_smoothing: Annotated[Number, Field(ge=0, le=0.99)]
    shift: Annotated[int, Field(ge=0, le=256)]  # online augmentation: max translation in px
    hflip: bool  # online augmentation: random horizontal flips
    precision: Literal[PRECISIONS]  # auto: bf16 where the device has it natively, else fp32
    channels_last: bool  # NHWC memory format: oneDNN's fast convolution kernels
    optimizer: Literal[OPTIMIZERS]  # sgd: momentum 0.9, Nesterov
    grad_clip: Annotated[Number, Field(ge=0)]  # max global L2 norm of the gradients (0 = off)
    finetune: Literal[FINETUNE_MODES]  # see training/finetune.py
    head_epochs: Annotated[int, Field(ge=0)]  # gradual: epochs that train the classifier alone
    backbone_lr_scale: Annotated[Number, Field(gt=0, le=10)]  # gradual: backbone LR = lr * this
    subset: Annotated[Number, Field(gt=0, le=1)]  # share of the training images (learning curves)


class TrainSection(TrainSettings):
    """``train:``: the shared hyperparameters and the models to train."""

    models: list[str] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _distinct(cls, models: list[str], info: ValidationInfo) -> list[str]:
        if len(set(models)) != len(models):
            raise ValueError(f"duplicate names in {models}")
        for name in models:
            # dvc.yaml's train and evaluate stages depend on the param models.<name>, and DVC
            # reads every "." in a param as a level of nesting.
            if "." in name:
                raise ValueError(
                    f"{name!r}: a model name cannot contain '.' (dvc.yaml depends on "
                    f"models.<name>); use the architecture's name, {name.split('.')[0]!r}"
                )
        if _checking_models(info):
            from trackvision.models.zoo import check_model_name

            for name in models:
                check_model_name(name, "train.models")
        return models

    def shared(self) -> dict[str, Any]:
        """The hyperparameters every model starts from (``models.<name>`` overrides them)."""
        return self.model_dump(exclude={"models"})


def _pretrained(value: str) -> str:
    from trackvision.models.weights import is_weights_path

    if value not in PRETRAINED and not is_weights_path(value):
        raise ValueError(
            f"{value!r} is not one of {', '.join(PRETRAINED)} or a .safetensors/.pth file"
        )
    return value


class ModelEntry(BaseModel):
    """``models.<name>``: where its weights come from, its input side, and the rest: ``train.*``
    keys that override the shared ones, then the builder's options (checked by the model zoo)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    pretrained: Annotated[str, AfterValidator(_pretrained)] = "none"
    image_size: Side | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The keys beyond ``pretrained`` and ``image_size``."""
        return dict(self.model_extra or {})


class ModelSpec(BaseModel):
    """One entry of ``train.models`` with everything needed to build and train it."""

    model_config = ConfigDict(frozen=True)

    name: str
    train: TrainSettings
    pretrained: str
    arch: dict[str, Any]  # the remaining ``models.<name>.*`` keys, passed to the model builder


class EvaluateConfig(_Section):
    batch_size: Annotated[int, Field(ge=1)]
    latency_repeats: Annotated[int, Field(ge=1, le=10_000)]  # timed batch-1 CPU passes (median)


class DoctorConfig(_Section):
    strict: bool  # a `fail` finding fails the stage (after its outputs are written)
    near_duplicate_correlation: Annotated[Number, Field(gt=0, le=1)]  # thumbnails this alike


class MlflowConfig(_Section):
    enabled: bool
    tracking_uri: str  # "" = sqlite:///<repo root>/mlflow.db; MLFLOW_TRACKING_URI overrides both
    log_model: bool
    # Registered model each evaluated run becomes a version of; "{source}" = data.source; "" = off.
    registered_model: str

    @field_validator("registered_model")
    @classmethod
    def _template(cls, name: str) -> str:
        if name and not name.strip():
            raise ValueError(
                'expected a name such as "{source}-classifier" ("" = do not register), '
                f"got {name!r}"
            )
        try:
            name.format(source="source")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{name!r} may use only {{source}} ({exc!r})") from None
        return name


TUNE_METRICS = ("val_accuracy", "val_loss")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")


class SearchDimension(_Section):
    """One key of ``tune.space``: a range (``low``, ``high``, ``log``) or a list of ``choices``."""

    low: Number | None = None
    high: Number | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDimension:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("expected either choices: [a, b, ...] (non-empty) or low/high")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"expected low < high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        return self

    @property
    def is_int(self) -> bool:
        return (
            self.low is not None and float(self.low).is_integer() and float(self.high).is_integer()
        )


class PrunerConfig(_Section):
    kind: Literal[PRUNERS]
    startup_trials: Annotated[int, Field(ge=0)]  # trials that always finish before any is pruned
    warmup_epochs: Annotated[int, Field(ge=0)]  # epochs every trial runs before it can be pruned


class TuneConfig(_Section):
    """``trackvision tune``: an Optuna study whose trials are DVC experiments of one model."""

    study: Annotated[str, Field(min_length=1, pattern=STUDY_NAME)]
    storage: str  # "" = sqlite:///<repo root>/optuna.db
    model: Annotated[str, Field(min_length=1)]
    trials: Annotated[int, Field(ge=1, le=100_000)]  # finished trials, counted over every worker
    metric: Literal[TUNE_METRICS]  # the best epoch's value on the validation split
    sampler: Literal[SAMPLERS]
    seed: Annotated[int, Field(ge=0)]
    pruner: PrunerConfig
    space: dict[str, SearchDimension] = Field(min_length=1)


def _checking_models(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("check_models"))


def _entry(value: Any) -> Any:
    return {} if value is None else value  # `resnet18:` (an empty entry) means no settings


class Config(_Section):
    """The whole of params.yaml, validated; the models' settings resolved on demand."""

    data: DataConfig
    download: DownloadConfig
    balance: BalanceConfig
    augment: AugmentSettings
    train: TrainSection
    models: dict[str, Annotated[ModelEntry, BeforeValidator(_entry)]]
    evaluate: EvaluateConfig
    doctor: DoctorConfig
    mlflow: MlflowConfig
    tune: TuneConfig | None = None  # read by `trackvision tune` only, never by a stage
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _every_model_has_an_entry(self, info: ValidationInfo) -> Config:
        for name in self.train.models:
            if name not in self.models:  # DVC refuses a stage whose param is missing
                raise ConfigError(
                    f"models.{name}: missing; every model in train.models needs an entry under "
                    f"models ({name}: {{}} for none): its train and evaluate stages depend on it"
                )
        if _checking_models(info):  # resolved once now, so per-model typos fail before any work
            for name in self.train.models:
                self.model(name)
        return self

    @property
    def raw(self) -> dict[str, Any]:
        """params.yaml as read (what MLflow logs and a search's overrides start from)."""
        return self._raw

    @property
    def model_names(self) -> tuple[str, ...]:
        """``train.models``: the models the pipeline trains, in order."""
        return tuple(self.train.models)

    def model(self, name: str) -> ModelSpec:
        """The fully resolved settings of model ``name`` (any timm name gets defaults)."""
        # Imported here: the model registry costs seconds (torch, timm) that data stages skip.
        from trackvision.models.zoo import check_arch_options

        entry = self.models.get(name) or ModelEntry()
        opts = entry.options
        overrides = {k: opts.pop(k) for k in list(opts) if k in TrainSettings.model_fields}
        merged = {**self.train.shared(), "image_size": self.input_side(name), **overrides}
        train = _validate(TrainSettings, merged, f"models.{name}")
        check_arch_options(name, opts)
        return ModelSpec(name=name, train=train, pretrained=entry.pretrained, arch=opts)

    def input_side(self, name: str) -> int:
        """The side model ``name`` is trained and run at: ``models.<name>.image_size`` if set,
        else the size its pretrained weights were trained at, else ``train.image_size``."""
        entry = self.models.get(name) or ModelEntry()
        if entry.image_size is not None:
            return entry.image_size
        if entry.pretrained != "none":
            from trackvision.models.zoo import pretrained_input_size

            native = pretrained_input_size(name)
            if native:
                return native
        return self.train.image_size

    @property
    def decode_size(self) -> int:
        """The side balance decodes images to: ``data.image_size``, or more when a model's input
        is larger (a pretrained model at its own resolution), so no model sees upscaled pixels."""
        return max(self.data.image_size, *(self.input_side(m) for m in self.model_names))


# --- pydantic's errors as one line naming the full key -------------------------------------


def _allowed(cls: type[BaseModel], parts: list[str]) -> list[str]:
    """The keys of the section at ``parts`` under ``cls``."""
    for part in parts:
        field = cls.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        cls = annotation
    return [k for k in cls.model_fields if k not in ("options", "channels", "presplit")]


def _error_line(exc: ValidationError, cls: type[BaseModel], prefix: str) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    parts = [str(p) for p in first["loc"]]
    key = ".".join([prefix, *parts]) if prefix else ".".join(parts) or "params.yaml"
    kind, value, ctx = first["type"], first.get("input"), first.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = parts[:-1]
        unknown = sorted(
            str(e["loc"][-1])
            for e in errors
            if e["type"] == "extra_forbidden" and [str(p) for p in e["loc"][:-1]] == parent
        )
        where = ".".join([prefix, *parent]) if prefix else ".".join(parent) or "params.yaml"
        allowed = ", ".join(_allowed(cls, parent))
        return f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {allowed}"
    if kind == "missing":
        return f"{key}: missing; add it to params.yaml"
    if kind == "literal_error":
        choices = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
        return f"{key}: {value!r} is not one of {choices}"
    if kind in ("greater_than", "less_than"):
        op, bound = (">", ctx["gt"]) if kind == "greater_than" else ("<", ctx["lt"])
        return f"{key}: must be {op} {bound}, got {value}"
    if kind in ("greater_than_equal", "less_than_equal"):
        op, bound = (">=", ctx["ge"]) if kind == "greater_than_equal" else ("<=", ctx["le"])
        return f"{key}: {value} is out of range; allowed: {op} {bound}"
    if kind in ("too_short", "list_type") and parts[-1:] == ["models"]:
        return f"{key}: expected a non-empty list of model names, got {value!r}"
    expected = {
        "int_type": "an integer",
        "float_type": "a finite number",
        "finite_number": "a finite number",
        "bool_type": "true or false",
        "string_type": 'a string ("" for the default)',
        "dict_type": "a mapping",
        "model_type": "a mapping",
    }
    if kind in expected:
        return f"{key}: expected {expected[kind]}, got {value!r}"
    if kind == "string_pattern_mismatch":
        return f"{key}: {value!r} is not {PATTERNS.get(ctx['pattern'], ctx['pattern'])}"
    if kind == "value_error":
        message = str(ctx.get("error", first["msg"]))
        if isinstance(ctx.get("error"), ConfigError):
            return message
        return f"{key}: {message}"
    return f"{key}: {first['msg']}, got {value!r}"


def _validate(
    cls: type[BaseModel], raw: Any, prefix: str = "", context: dict[str, Any] | None = None
) -> Any:
    try:
        return cls.model_validate(raw, context=context)
    except ValidationError as exc:
        raise ConfigError(_error_line(exc, cls, prefix)) from None


def parse_config(raw: Any, check_models: bool = True) -> Config:
    """Validate a params mapping (as loaded from params.yaml) into a Config.

    ``check_models=False`` skips the model names and options, which need torch and timm: the
    data stages and compare do not build models and start seconds sooner without them.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"params.yaml: expected a mapping, got {type(raw).__name__} {raw!r}")
    config = _validate(Config, raw, context={"check_models": check_models})
    config._raw = raw
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
