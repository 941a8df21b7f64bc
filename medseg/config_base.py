"""The one base of every typed config, its YAML reader and its error wording.

:class:`StrictConfig` refuses unknown keys (a misspelt key must fail, not be silently
ignored) and is frozen (components get values, never a config they could change).
:func:`config_error` turns pydantic's ``ValidationError`` into one :class:`ConfigError`
naming every bad key, where it came from (the file or ``--set``), the valid keys at that
level and a did-you-mean (:func:`medseg.registry.did_you_mean`, the registries' rule).
"""

from __future__ import annotations

import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from medseg.errors import ConfigError, MedsegError
from medseg.registry import did_you_mean


class StrictConfig(BaseModel):
    """Base of the typed configs: unknown keys are errors, parsed values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_yaml_mapping(
    path: Path, error: type[MedsegError] = ConfigError, layout: str = "configs/sample.yaml"
) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (empty file: ``{}``); ``error`` (ConfigError for
    configs, DatasetError for manifests) when it is not UTF-8 text, not YAML or not a
    mapping; ``layout`` names an example of the expected file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise error(f"{path}: not a UTF-8 text file ({err}); save it as UTF-8 YAML") from err
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({err}); fix the syntax") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise error(
            f"{path}: expected a YAML mapping of settings (key: value lines), found a "
            f"{type(raw).__name__}; see {layout} for the layout"
        )
    return raw


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X``, ``X | None``, ``Optional[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def valid_keys(loc: tuple[str | int, ...], root: type[BaseModel]) -> list[str]:
    """Keys accepted at the level of ``root`` that contains ``loc`` (the last element
    excluded)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        model = _model_class(model.model_fields[part].annotation)
    return sorted(model.model_fields) if model is not None else []


def describe_problem(
    err: dict[str, Any], root: type[BaseModel], source: str, overridden: Collection[str] = ()
) -> str:
    """One pydantic error as a sentence naming the dotted key and where it was set."""
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    where = f"--set {dotted}" if dotted in overridden else source
    if err["type"] == "extra_forbidden":
        keys = valid_keys(loc, root)
        prefix = "".join(f"{p}." for p in loc[:-1])
        hint = did_you_mean(str(loc[-1]), keys, prefix=prefix)
        hint = f" {hint}" if hint else ""
        return f"unknown key {dotted!r} in {where};{hint} valid keys here: {', '.join(keys)}"
    if err["type"] == "missing":
        return f"missing required key {dotted!r} in {where}"
    return f"{dotted or '<root>'}: {err['msg']} (got {err.get('input')!r}) in {where}"


def config_error(
    err: ValidationError,
    root: type[BaseModel],
    what: str,
    source: str,
    overridden: Collection[str] = (),
    see: str = "",
) -> ConfigError:
    """One ConfigError listing every problem in ``err`` (``what``: "training config", ...;
    ``see``: a page documenting the keys)."""
    problems = [describe_problem(e, root, source, overridden) for e in err.errors()]
    tail = f"; see {see} for the keys and their defaults" if see else ""
    return ConfigError(f"{len(problems)} problem(s) in the {what}: " + "; ".join(problems) + tail)
