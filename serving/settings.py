"""FIC_* environment settings of the service, checked when it starts.

`bentoml serve` imports the service module in the CLI process before any worker starts, so a
value that cannot be used stops it there with one line naming the variable, what it got and
what it accepts, instead of a Python traceback from `int()` or a worker that dies later.
"""

from __future__ import annotations

import os
from typing import Mapping

_TRUE = {"on", "1", "true", "yes"}
_FALSE = {"off", "0", "false", "no"}


class SettingError(SystemExit):
    """A FIC_* variable holds a value the service cannot use (exits with this message, status 1)."""


def whole_number(name: str, default: int | None, minimum: int = 1, env: Mapping[str, str] | None = None) -> int | None:
    """`name` as an integer >= minimum; `default` when unset or empty."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = None
    if value is None or value < minimum:
        unset = f"default {default}" if default is not None else "unset by default"
        raise SettingError(f"{name}={raw!r} is not usable: give a whole number of at least {minimum} ({unset})")
    return value


def switch(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    """`name` as on/off (also true/false, yes/no, 1/0, any case); `default` when unset or empty."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    raise SettingError(f"{name}={raw!r} is not usable: give on or off (default {'on' if default else 'off'})")


def choice(name: str, default: str, choices: tuple[str, ...], env: Mapping[str, str] | None = None) -> str:
    """`name` as one of `choices` (any case); `default` when unset or empty."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in choices:
        return raw.lower()
    raise SettingError(f"{name}={raw!r} is not usable: give one of {', '.join(choices)} (default {default})")
