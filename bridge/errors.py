"""The errors that end a command, and the exit codes operators and Kubernetes read."""

from __future__ import annotations

EXIT_OK = 0
EXIT_STARTUP = 1
"""`run`: the bridge cannot start as configured (Kafka refused it, a topic is missing)."""
EXIT_CONFIG = 2
"""Any command: the configuration or the command line is wrong."""
EXIT_FAILED = 3
"""`run`: the bridge failed while running; what it held stays uncommitted."""
EXIT_TOOL_FAILED = 1
"""A tool (`dead-letters`, `preview`) could not finish: Kafka does not answer, or it was interrupted."""


class StartupError(Exception):
    """The bridge cannot start as configured (for example, the dead-letter topic is missing)."""
