"""Logging set-up for a process's entry point (only ``__main__`` calls it)."""

import logging
import sys

__all__ = ["configure_logging"]


def configure_logging(level: str) -> None:
    """One line per event, ``key=value`` context, to stderr (journald-friendly)."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
