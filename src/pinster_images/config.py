"""Reading settings from the environment, once, with errors that name the variable.

Each process builds one settings object at start (``IngressSettings.from_env()``...),
composed of the small dataclass groups defined next to the code that uses them. The
helpers here are the only place that parses environment variables.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pinster_images.errors import ConfigError

T = TypeVar("T")
PREFIX = "PINSTER_"

Environ = Mapping[str, str]

#: Connections an S3 or Kubernetes client keeps: as many as the threads that may call it
#: at once (Starlette's thread pool, anyio's default of 40), so none is opened and
#: thrown away per call ("Connection pool is full"). Idle ones cost nothing until used.
CONNECTION_POOL = 40


class Secret:
    """A string that never prints: ``repr`` and ``str`` hide it; ``.reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _raw(env: Environ, name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(env: Environ, name: str, default: str | None = None) -> str:
    value = _raw(env, name)
    if value is None:
        if default is None:
            raise ConfigError(f"{name} is required but not set")
        return default
    return value


def env_optional(env: Environ, name: str) -> str | None:
    return _raw(env, name)


def env_secret(env: Environ, name: str, default: str | None = None) -> Secret:
    return Secret(env_str(env, name, default))


def env_parsed(env: Environ, name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        return parse(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}={value!r} is not {expected}: {exc}") from None


def env_int(
    env: Environ,
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    result = env_parsed(env, name, default, int, "an integer")
    if minimum is not None and result < minimum:
        raise ConfigError(f"{name}={result} must be at least {minimum}")
    if maximum is not None and result > maximum:
        raise ConfigError(f"{name}={result} must be at most {maximum}")
    return result


def env_float(env: Environ, name: str, default: float, *, minimum: float | None = None) -> float:
    result = env_parsed(env, name, default, float, "a number")
    if minimum is not None and result < minimum:
        raise ConfigError(f"{name}={result} must be at least {minimum}")
    return result


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("use one of true/false, 1/0, yes/no, on/off")


def env_bool(env: Environ, name: str, default: bool) -> bool:
    return env_parsed(env, name, default, _parse_bool, "a boolean")


def env_list(env: Environ, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A comma-separated list; blanks are dropped."""
    value = _raw(env, name)
    if value is None:
        return default
    return tuple(item.strip() for item in value.split(",") if item.strip())


def env_choice(env: Environ, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)}")
    return value


def env_pem(env: Environ, name: str) -> bytes | None:
    """A PEM key given base64-encoded (as the original service took it) or as plain PEM,
    or ``<name>_FILE`` naming a file that holds either form."""
    value = _raw(env, name)
    file_name = _raw(env, f"{name}_FILE")
    if value is None and file_name is not None:
        try:
            with open(file_name, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_name!r} cannot be read: {exc.strerror}") from None
    if value is None:
        return None
    if value.startswith("-----BEGIN"):
        return value.encode()
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} is neither PEM nor base64-encoded PEM") from None
    if not decoded.lstrip().startswith(b"-----BEGIN"):
        raise ConfigError(f"{name} decodes from base64 but is not a PEM key")
    return decoded


def environ() -> Environ:
    return os.environ


@dataclass(frozen=True)
class ThumbnailSizes:
    """Parsed ``<W>x<H>`` strings where each side is an integer or ``auto`` (at most 5000)."""

    sizes: tuple[str, ...]

    MAX_SIDE = 5000

    @classmethod
    def parse(cls, values: tuple[str, ...]) -> ThumbnailSizes:
        for value in values:
            parse_size(value)
        return cls(tuple(values))


def env_thumbnail_sizes(env: Environ, default: tuple[str, ...]) -> tuple[str, ...]:
    """PINSTER_THUMBNAIL_SIZES: the sizes written into each ImageUpload's spec, read alike
    by the upload service and by the operator's adoption."""
    sizes = env_list(env, "PINSTER_THUMBNAIL_SIZES", default)
    try:
        return ThumbnailSizes.parse(sizes).sizes
    except ValueError as exc:
        raise ConfigError(
            f"PINSTER_THUMBNAIL_SIZES={','.join(sizes)!r} is invalid: {exc}"
        ) from None


def parse_size(value: str) -> tuple[int | None, int | None]:
    """``"400x300"`` -> (400, 300); ``"400xauto"`` -> (400, None). Raises ValueError."""
    parts = value.split("x")
    if len(parts) != 2:
        raise ValueError(f"{value!r} is not <W>x<H>")
    sides: list[int | None] = []
    for part in parts:
        if part == "auto":
            sides.append(None)
            continue
        if not part.isdigit() or part.startswith("0"):
            raise ValueError(f"{value!r}: each side is a positive integer or 'auto'")
        side = int(part)
        if side > ThumbnailSizes.MAX_SIDE:
            raise ValueError(f"{value!r}: sides are capped at {ThumbnailSizes.MAX_SIDE}")
        sides.append(side)
    if sides[0] is None and sides[1] is None:
        raise ValueError(f"{value!r}: at most one side may be 'auto'")
    return sides[0], sides[1]


def size_pattern() -> str:
    """:func:`parse_size`'s rule as a regex (ASCII digits), for documents that state it:
    each side 1..MAX_SIDE or ``auto``, not both ``auto``."""
    side = _at_most(ThumbnailSizes.MAX_SIDE)
    return f"(?:{side}x(?:{side}|auto)|autox{side})"


def _at_most(limit: int) -> str:
    """A regex for the decimal integers 1..``limit`` without leading zeros."""
    digits = str(limit)
    options = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            rest = len(digits) - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            options.append(f"{digits[:i]}[{low}-{int(digit) - 1}]{tail}")
    options.append(digits)
    return "(?:" + "|".join(options) + ")"
