"""The one logging set-up of every command-line entry point."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(quiet: bool = False) -> None:
    """Time, level, logger and message on one line to stderr; INFO, or WARNING when `quiet`."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=FORMAT, datefmt="%H:%M:%S")
