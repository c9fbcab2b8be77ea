"""Registry of dataset sources: ``@register_source`` one function per source, looked up by name.

A source writes ``<out_dir>/<class name>/<image files>`` (or, for a source with an official test
split, ``<out_dir>/{train,test}/<class name>/...``) and returns a summary. Its options are a
dataclass, filled from ``params.yaml`` key ``data.<source name>``; what it downloads goes through
the ``Downloader`` in its ``FetchContext``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trackvision.data.fetch import Downloader
from trackvision.errors import ConfigError


@dataclass(frozen=True)
class FetchContext:
    """What a source may use besides its options: downloader, repository root, processes."""

    downloader: Downloader
    root: Path
    workers: int = 1  # processes a source may use to build its files (0 = every usable core)


FetchFn = Callable[[Path, Any, FetchContext], dict[str, Any]]


@dataclass(frozen=True)
class Source:
    """One registered dataset source."""

    name: str
    fetch: FetchFn
    options: type
    channels: int  # colour channels its images are packed with (1 grey, 3 RGB)
    presplit: bool  # writes train/ and test/ (an official test split that balance keeps)
    description: str


_SOURCES: dict[str, Source] = {}


def register_source(
    name: str, *, options: type, channels: int, presplit: bool = False
) -> Callable[[FetchFn], FetchFn]:
    """Decorator: register ``fn(out_dir, options, context) -> summary`` as the source ``name``."""

    def wrap(fn: FetchFn) -> FetchFn:
        if name in _SOURCES:
            raise ValueError(f"source {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _SOURCES[name] = Source(name, fn, options, channels, presplit, doc[0] if doc else "")
        return fn

    return wrap


def _load_builtin() -> None:
    # Imported for their registration side effect; kept here so the registry is always complete.
    from trackvision.data.sources import (  # noqa: F401
        digits,
        fashion_mnist,
        folder,
        synthetic_text,
        text_recognition,
        tiny_imagenet,
    )


def available_sources() -> list[str]:
    """Names of every registered source."""
    _load_builtin()
    return sorted(_SOURCES)


def get_source(name: str) -> Source:
    """The source registered as ``name``; a ConfigError listing the choices otherwise."""
    _load_builtin()
    try:
        return _SOURCES[name]
    except KeyError:
        raise ConfigError(
            f"data.source: unknown source {name!r}; available: {', '.join(available_sources())}"
        ) from None


def parse_options(source: Source, raw: dict[str, Any] | None) -> Any:
    """Build the source's options dataclass from ``data.<name>``, naming any bad key."""
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(source.options)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"data.{source.name}: unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(fields) or '(none)'}"
        )
    for key, value in raw.items():
        default = fields[key].default
        if isinstance(default, bool) or default is dataclasses.MISSING:
            continue
        if isinstance(default, int | float) and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise ConfigError(f"data.{source.name}.{key}: expected a number, got {value!r}")
    opts = source.options(**raw)
    check = getattr(opts, "validate", None)
    if check is not None:
        check(f"data.{source.name}")
    return opts
