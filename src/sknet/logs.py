"""Where the package's progress messages go.

Library code never prints: it logs to the ``sknet`` logger (training progress, study runs,
benchmark rounds). The command line shows those records as plain lines on standard output
(:func:`show_logs`); from Python, ``logging.basicConfig(level="INFO")`` shows them, or
:func:`log_to` sends them to a stream for a block.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

LOGGER = logging.getLogger("sknet")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of each record (redirections follow)."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def _handler(stream: TextIO | None) -> logging.Handler:
    handler = _StdoutHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def show_logs() -> None:
    """Print the ``sknet`` logger's INFO records as plain lines on standard output (the command line)."""
    LOGGER.handlers = [_handler(None)]
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


@contextlib.contextmanager
def log_to(stream: TextIO) -> Iterator[None]:
    """Send the ``sknet`` logger's INFO records to ``stream`` only, for the block."""
    saved = LOGGER.handlers, LOGGER.level, LOGGER.propagate
    LOGGER.handlers, LOGGER.propagate = [_handler(stream)], False
    LOGGER.setLevel(logging.INFO)
    try:
        yield
    finally:
        LOGGER.handlers, LOGGER.propagate = saved[0], saved[2]
        LOGGER.setLevel(saved[1])
