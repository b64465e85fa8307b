"""FIC_* environment settings of the service, checked when it starts.

`bentoml serve` imports the service module in the CLI process before any worker starts, so a
value that cannot be used stops it there with one line naming the variable, what it got and
what it accepts, instead of a Python traceback from `int()` or a worker that dies later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from runtime.precision import AUTO, CHOICES

DEFAULT_MODEL = "future-industry-classifier:latest"

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


@dataclass(frozen=True)
class ServiceSettings:
    """Every FIC_* setting of the service (docs/operations.md says what each does)."""

    model: str = DEFAULT_MODEL  # FIC_MODEL: the model tag in the BentoML store
    max_batch_size: int = 64  # FIC_MAX_BATCH_SIZE: most texts per model call (adaptive batching)
    # FIC_MAX_LATENCY_MS: the /classify queueing budget; a request is refused (503) before any of its
    # work starts when the estimated model time of the work admitted ahead of it is longer.
    max_latency_ms: int = 10000
    batching: bool = True  # FIC_BATCHING: off turns adaptive batching off (for benchmarks)
    max_texts: int = 256  # FIC_MAX_TEXTS: most texts in one /classify request
    # FIC_MAX_EXPLAIN_UNITS: with explain=true, most texts of one /classify request and most units with a
    # direction of one /classify_page request. Evidence costs seconds of CPU per unit and direction with the
    # e5 model on 2 cores (docs/evidence.md): 8 units of 1-2 directions stay well inside the 120 s timeout.
    max_explain_units: int = 8
    max_text_chars: int = 2000  # FIC_MAX_TEXT_CHARS: longest text /classify accepts
    # FIC_MAX_PAGE_CHARS: several times a long news page; splitting one made of the shortest possible
    # sentences costs about a second of CPU on 2 cores.
    max_page_chars: int = 200000
    # FIC_MAX_PAGE_UNITS: bounds the model work and the reply of one page (at most ~1 MB of unit JSON).
    max_page_units: int = 2000
    # FIC_MAX_PAGE_MS: most model time one page may need, estimated at the idle worker's measured speed;
    # a longer page is refused (413) before its work starts. Half the 120 s request timeout: the rest is
    # for turns with /classify and the other page in flight.
    max_page_ms: int = 60000
    # FIC_MAX_BODY_BYTES: the largest valid request (256 texts x 2,000 characters, each sent as a
    # 12-byte JSON surrogate pair) is about 6.2 MB.
    max_body_bytes: int = 8 * 1024 * 1024
    # FIC_READ_TIMEOUT_S: seconds a connection has to deliver each request whole (8 MiB in 30 s is
    # about 2.2 Mbit/s: slower links should send fewer texts per request).
    read_timeout_s: int = 30
    threads: int | None = None  # FIC_THREADS: torch threads per worker (default: the CPU quota)
    workers: int = 1  # FIC_WORKERS: worker processes, each with its own copy of the model
    precision: str = AUTO  # FIC_PRECISION: a runtime.precision choice; auto = the one recorded with the model

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ServiceSettings":
        """The settings from the environment; an unusable value raises SettingError naming the variable."""
        env = os.environ if env is None else env
        d = cls()
        return cls(
            model=env.get("FIC_MODEL", "").strip() or d.model,
            max_batch_size=whole_number("FIC_MAX_BATCH_SIZE", d.max_batch_size, env=env),
            max_latency_ms=whole_number("FIC_MAX_LATENCY_MS", d.max_latency_ms, env=env),
            batching=switch("FIC_BATCHING", d.batching, env=env),
            max_texts=whole_number("FIC_MAX_TEXTS", d.max_texts, env=env),
            max_explain_units=whole_number("FIC_MAX_EXPLAIN_UNITS", d.max_explain_units, env=env),
            max_text_chars=whole_number("FIC_MAX_TEXT_CHARS", d.max_text_chars, env=env),
            max_page_chars=whole_number("FIC_MAX_PAGE_CHARS", d.max_page_chars, env=env),
            max_page_units=whole_number("FIC_MAX_PAGE_UNITS", d.max_page_units, env=env),
            max_page_ms=whole_number("FIC_MAX_PAGE_MS", d.max_page_ms, env=env),
            max_body_bytes=whole_number("FIC_MAX_BODY_BYTES", d.max_body_bytes, env=env),
            read_timeout_s=whole_number("FIC_READ_TIMEOUT_S", d.read_timeout_s, env=env),
            threads=whole_number("FIC_THREADS", d.threads, env=env),
            workers=whole_number("FIC_WORKERS", d.workers, env=env),
            precision=choice("FIC_PRECISION", d.precision, CHOICES, env=env),
        )
