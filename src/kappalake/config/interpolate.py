"""``${VAR}`` / ``${VAR:-default}`` interpolation of environment variables into config values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_URL_PASSWORD = re.compile(r"://[^/@:\s]+:(?!\$\{)[^/@\s]+@")
_SECRET_KEY = re.compile(r"(password|secret|jaas|token|credential|private[._]key|api[._]key)", re.IGNORECASE)


class InterpolationError(ValueError):
    def __init__(self, key_path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.key_path = key_path


def interpolate(value: Any, env: Mapping[str, str], key_path: tuple[Any, ...] = ()) -> Any:
    """Return ``value`` with every ``${VAR}`` in its strings replaced from ``env``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, key_path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, key_path + (i,)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    return _substitute(value, env, key_path)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _substitute(text: str, env: Mapping[str, str], key_path: tuple[Any, ...]) -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` (defaults may nest references)."""
    out: list[str] = []
    i = 0
    while True:
        start = text.find("${", i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:start])
        name_match = _NAME.match(text, start + 2)
        if not name_match:
            raise InterpolationError(key_path, f"malformed reference at {text[start:start + 20]!r}; "
                                               "expected ${NAME} or ${NAME:-default}")
        name, pos = name_match.group(0), name_match.end()
        default: str | None = None
        if text.startswith(":-", pos):
            depth, j = 1, pos + 2
            while j < len(text) and depth:
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                if text[j] == "}":
                    depth -= 1
                j += 1
            if depth:
                raise InterpolationError(key_path, f"unclosed reference {text[start:]!r}")
            default, end = text[pos + 2:j - 1], j
        elif text.startswith("}", pos):
            end = pos + 1
        else:
            raise InterpolationError(key_path, f"malformed reference at {text[start:start + 20]!r}; "
                                               "expected ${NAME} or ${NAME:-default}")
        if env.get(name):
            out.append(env[name])
        elif default is not None:
            out.append(_substitute(default, env, key_path))
        else:
            raise InterpolationError(key_path, f"environment variable {name} is not set "
                                               f"(referenced as {text[start:end]})")
        i = end


_NESTED_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-(\$\{.*\})\}", re.DOTALL)


#: A JAAS entry whose every password is one whole reference (``password="${KAFKA_PASSWORD}"``) holds no secret.
_JAAS_PASSWORD = re.compile(r"""password\s*=\s*(["'])(?P<value>.*?)\1""")


def _jaas_with_referenced_password(text: str) -> bool:
    passwords = [m["value"] for m in _JAAS_PASSWORD.finditer(text)]
    return "LoginModule" in text and bool(passwords) and all(_REF.fullmatch(v) for v in passwords)


def _is_reference(text: str) -> bool:
    """True when ``text`` is one whole reference, e.g. ``${A}``, ``${A:-x}`` or ``${A:-${B}}``, or a JAAS
    entry whose passwords are such references."""
    if _REF.fullmatch(text) or _jaas_with_referenced_password(text):
        return True
    nested = _NESTED_REF.fullmatch(text)
    return bool(nested) and _is_reference(nested.group(1))


def literal_secrets(value: Any, key_path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Key paths whose name looks secret but whose value is a literal instead of a ``${VAR}`` reference."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            path = key_path + (k,)
            if isinstance(v, (str, int, float)) and _SECRET_KEY.search(str(k)) and not _is_reference(str(v)):
                found.append(path)
            elif isinstance(v, str) and _URL_PASSWORD.search(v):
                found.append(path)
            else:
                found.extend(literal_secrets(v, path))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(literal_secrets(v, key_path + (i,)))
    return found
