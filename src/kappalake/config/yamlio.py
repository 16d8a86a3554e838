"""YAML reading that rejects duplicate keys and can point at the line of a key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kappalake.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate and non-scalar mapping keys (PyYAML silently keeps the last
    duplicate) and reports a value its tag cannot build (``!!int abc``) as a YAML error at its line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # PyYAML's tag constructors fail with whatever the bad value provokes
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.tag} value {_shorten(node)}: {exc}", node.start_mark,
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain name, not a list or mapping", key_node.start_mark,
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {key!r} (first at line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _shorten(node: yaml.Node) -> str:
    value = node.value if isinstance(node, yaml.ScalarNode) else f"<{type(node).__name__}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _cycle_path(value: Any, trail: tuple[Any, ...] = (), open_ids: frozenset[int] = frozenset()) -> tuple[Any, ...] | None:
    """Key path at which ``value`` contains itself (a recursive YAML alias such as ``x: &a [*a]``), else None."""
    if not isinstance(value, (dict, list)):
        return None
    if id(value) in open_ids:
        return trail
    inner = open_ids | {id(value)}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        found = _cycle_path(child, trail + (key,), inner)
        if found is not None:
            return found
    return None


class YamlDocument:
    """A parsed YAML mapping plus its node tree, for line lookups in error messages."""

    def __init__(self, path: Path, data: dict[str, Any], node: yaml.Node | None) -> None:
        self.path = path
        self.data = data
        self.node = node

    def line_of(self, key_path: tuple[Any, ...], exact: bool = False) -> int | None:
        """1-based line of the deepest key of ``key_path`` present in the file.

        With ``exact``, None unless the whole of ``key_path`` is present.
        """
        node, line = self.node, None
        for key in key_path:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
                if match is None:
                    return None if exact else line
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return None if exact else line
        return line


def read_yaml(path: Path) -> YamlDocument:
    """Read a YAML file whose top level is a mapping; raise ConfigError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read file: {exc}") from None
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply to read") from None
    if data is None:
        raise ConfigError(f"{path}: file is empty; expected a mapping of settings")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    doc = YamlDocument(path, data, node)
    try:
        cycle = _cycle_path(data)
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply to read") from None
    if cycle is not None:
        line = doc.line_of(cycle)
        where = f"{path}:{line}" if line else str(path)
        dotted = ".".join(str(k) for k in cycle)
        raise ConfigError(f"{where}: {dotted}: a YAML alias refers to itself; configuration must not be recursive")
    return doc
