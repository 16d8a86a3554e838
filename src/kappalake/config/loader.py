"""Load ``conf/``: the project file with its targets, and one YAML file per pipeline.

Layout::

    conf/kappalake.yml          targets: local / databricks / k8s (brokers, storage, ClickHouse, Spark)
    conf/pipelines/<name>.yml   one pipeline; an optional ``targets:`` section overlays it per target

Order of work per file: read YAML (duplicate keys rejected) -> overlay the target section ->
refuse literal secrets -> interpolate ``${ENV_VAR}`` -> validate with pydantic. Every failure
raises ConfigError naming the file, line, key path and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kappalake.config.interpolate import InterpolationError, interpolate, literal_secrets
from kappalake.config.format_files import resolve_format_files
from kappalake.config.models import PipelineConfig, TargetConfig
from kappalake.config.yamlio import YamlDocument, read_yaml
from kappalake.errors import ConfigError

PROJECT_FILE = "kappalake.yml"
PIPELINES_DIR = "pipelines"
TARGETS = ("local", "databricks", "k8s")

M = TypeVar("M", bound=BaseModel)


def default_conf_dir() -> Path:
    """``$KAPPALAKE_CONF`` or ``./conf``."""
    return Path(os.environ.get("KAPPALAKE_CONF", "conf")).resolve()


def default_target() -> str:
    """``$KAPPALAKE_TARGET`` or ``local``."""
    return os.environ.get("KAPPALAKE_TARGET", "local")


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively overlay mappings; lists and scalars in ``overlay`` replace those in ``base``."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _where(doc: YamlDocument, key_path: tuple[Any, ...], target: str | None) -> str:
    """``file:line`` of ``key_path``: in the target's overlay if it sets that very key, else in the base."""
    line = None
    if target is not None:
        line = doc.line_of(("targets", target) + key_path, exact=True)
    line = line or doc.line_of(key_path)
    return f"{doc.path}:{line}" if line else str(doc.path)


def _dotted(key_path: tuple[Any, ...]) -> str:
    return ".".join(str(k) for k in key_path) or "(top level)"


_KEY_PREFIX = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*): (.*)", re.DOTALL)


def _format_validation(doc: YamlDocument, error: ValidationError, target: str | None, prefix: tuple[Any, ...] = ()) -> str:
    lines = []
    for item in error.errors():
        loc = prefix + tuple(k for k in item["loc"] if k != "schema_" and not str(k).startswith("function-"))
        loc = tuple("schema" if k == "schema_" else k for k in loc)
        message = item["msg"].removeprefix("Value error, ")
        nested = _KEY_PREFIX.fullmatch(message) if item["type"] == "value_error" else None
        if nested:  # model validators name the offending key as a 'dotted.key: ' prefix; locate that key
            loc, message = loc + tuple(nested.group(1).split(".")), nested.group(2)
        shown = repr(item.get("input"))
        got = "" if item["type"] == "missing" or shown in message else f" (got {shown})"
        if item["type"] == "extra_forbidden":
            message, got = "unknown key (check the spelling; unknown keys are rejected)", ""
        if isinstance(item.get("input"), (dict, list)):
            got = ""
        lines.append(f"{_where(doc, loc, target)}: {_dotted(loc)}: {message}{got}")
    return "\n".join(lines)


def _prepare(doc: YamlDocument, target: str, env: Mapping[str, str], strip: tuple[str, ...],
             known: Sequence[str]) -> dict[str, Any]:
    data = {k: v for k, v in doc.data.items() if k not in strip}
    overlays = doc.data.get("targets") or {}
    if not isinstance(overlays, dict):
        raise ConfigError(f"{_where(doc, ('targets',), None)}: targets: expected a mapping of target name to settings")
    unknown = [name for name in overlays if name not in known]
    if unknown:
        raise ConfigError(f"{_where(doc, ('targets', unknown[0]), None)}: targets.{unknown[0]}: unknown target "
                          f"(check the spelling); expected one of {', '.join(known)}")
    overlay = overlays.get(target) or {}
    if not isinstance(overlay, dict):
        raise ConfigError(f"{_where(doc, ('targets', target), None)}: targets.{target}: expected a mapping")
    merged = deep_merge(data, overlay)
    secrets = literal_secrets(merged)
    if secrets:
        path = secrets[0]
        raise ConfigError(
            f"{_where(doc, path, target)}: {_dotted(path)}: looks like a secret written into the file; "
            "reference an environment variable instead, e.g. '${KAFKA_SASL_JAAS_CONFIG}' (secrets never live in YAML)"
        )
    try:
        return interpolate(merged, env)
    except InterpolationError as exc:
        raise ConfigError(f"{_where(doc, exc.key_path, target)}: {_dotted(exc.key_path)}: {exc}") from None


def _validate(model: type[M], doc: YamlDocument, data: dict[str, Any], target: str | None,
              prefix: tuple[Any, ...] = ()) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration\n{_format_validation(doc, exc, target, prefix)}") from None


def _builtin_env(env: Mapping[str, str] | None) -> dict[str, str]:
    from kappalake.runtime.paths import kappalake_home

    merged = dict(os.environ if env is None else env)
    merged.setdefault("KAPPALAKE_HOME", str(kappalake_home(merged)))
    return merged


def load_target(conf_dir: Path | None = None, target: str | None = None,
                env: Mapping[str, str] | None = None) -> TargetConfig:
    """Load ``kappalake.yml`` and return the settings of one target."""
    conf_dir = conf_dir or default_conf_dir()
    target = target or default_target()
    doc = read_yaml(conf_dir / PROJECT_FILE)
    targets = doc.data.get("targets")
    if not isinstance(targets, dict) or not targets:
        raise ConfigError(f"{doc.path}: targets: expected a mapping with at least one target ({', '.join(TARGETS)})")
    if target not in targets:
        raise ConfigError(f"{_where(doc, ('targets',), None)}: targets: no target named {target!r}; "
                          f"defined: {', '.join(targets)}")
    section = targets[target]
    if not isinstance(section, dict):
        raise ConfigError(f"{_where(doc, ('targets', target), None)}: targets.{target}: expected a mapping")
    defaults = doc.data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{_where(doc, ('defaults',), None)}: defaults: expected a mapping of settings shared by "
                          f"every target, got {type(defaults).__name__}")
    merged = deep_merge(defaults, section)
    environment = _builtin_env(env)
    secrets = literal_secrets(merged)
    if secrets:
        path = ("targets", target) + secrets[0]
        raise ConfigError(f"{_where(doc, path, None)}: {_dotted(path)}: looks like a secret written into the file; "
                          "reference an environment variable instead (secrets never live in YAML)")
    try:
        data = interpolate(merged, environment)
    except InterpolationError as exc:
        path = ("targets", target) + exc.key_path
        raise ConfigError(f"{_where(doc, path, None)}: {_dotted(path)}: {exc}") from None
    return _validate(TargetConfig, doc, {"name": target, **data}, None, ("targets", target))


def pipeline_files(conf_dir: Path | None = None) -> dict[str, Path]:
    """Map pipeline name (file stem) to its YAML file."""
    folder = (conf_dir or default_conf_dir()) / PIPELINES_DIR
    if not folder.is_dir():
        raise ConfigError(f"{folder}: pipelines folder not found (expected one YAML file per pipeline)")
    return {p.stem: p for p in sorted(folder.glob("*.y*ml"))}


def _target_names(pipeline_path: Path) -> list[str]:
    """Targets defined in the project file next to the pipelines folder, else the standard ones."""
    project = pipeline_path.parent.parent / PROJECT_FILE
    try:
        targets = read_yaml(project).data.get("targets") if project.is_file() else None
    except ConfigError:  # load_target reports a broken project file
        targets = None
    return list(targets) if isinstance(targets, dict) and targets else list(TARGETS)


def load_pipeline_file(path: Path, target: str | None = None, env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Load and validate one pipeline file for ``target``."""
    target = target or default_target()
    known = _target_names(path)
    if target not in known:
        raise ConfigError(f"{path}: no target named {target!r}; defined: {', '.join(known)}")
    doc = read_yaml(path)
    data = _prepare(doc, target, _builtin_env(env), strip=("targets",), known=known)
    config = _validate(PipelineConfig, doc, data, target)
    if config.name != path.stem:
        raise ConfigError(f"{_where(doc, ('name',), target)}: name: {config.name!r} must match the file name "
                          f"{path.stem!r}")
    _check_enrich_pipelines(doc, config, path.parent, target)
    try:
        return resolve_format_files(config, path.parent.parent)
    except ValueError as exc:
        raise ConfigError(f"{_where(doc, ('events', config.events.format), target)}: {exc}") from None


def _check_enrich_pipelines(doc: YamlDocument, config: PipelineConfig, folder: Path, target: str) -> None:
    """Every pipeline a gold view enriches from is declared next to this one (its silver table is the dimension)."""
    known = {p.stem for p in folder.glob("*.y*ml")}
    for view_name, view in config.gold.views.items():
        for entry in view.enrich:
            if entry.pipeline not in known:
                raise ConfigError(f"{_where(doc, ('gold', 'views', view_name, 'enrich'), target)}: gold.views."
                                  f"{view_name}.enrich: no pipeline named {entry.pipeline!r} in {folder} (its silver "
                                  f"table is the dimension); defined: {', '.join(sorted(known))}")


def load_pipeline(name: str, conf_dir: Path | None = None, target: str | None = None,
                  env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Load the pipeline called ``name`` from ``conf/pipelines/<name>.yml``."""
    files = pipeline_files(conf_dir)
    if name not in files:
        known = ", ".join(files) or "none"
        raise ConfigError(f"no pipeline named {name!r} in {(conf_dir or default_conf_dir()) / PIPELINES_DIR} "
                          f"(defined: {known})")
    return load_pipeline_file(files[name], target, env)


@dataclass(frozen=True)
class Project:
    """A target plus the pipelines declared for it."""

    conf_dir: Path
    target: TargetConfig
    pipelines: dict[str, PipelineConfig]


def load_project(conf_dir: Path | None = None, target: str | None = None,
                 env: Mapping[str, str] | None = None) -> Project:
    """Load the target and every pipeline; all files are validated."""
    conf_dir = conf_dir or default_conf_dir()
    target_config = load_target(conf_dir, target, env)
    pipelines = {name: load_pipeline_file(path, target_config.name, env)
                 for name, path in pipeline_files(conf_dir).items()}
    return Project(conf_dir, target_config, pipelines)
