"""Exceptions the command line turns into a clear message and a non-zero exit."""


class TrackvisionError(Exception):
    """Base class: an error the user can act on, reported without a traceback."""

    exit_code = 1


class ConfigError(TrackvisionError):
    """params.yaml holds a missing key, an unknown key or a value out of range."""

    exit_code = 2


class DataError(TrackvisionError):
    """Input data is missing, unreadable or too small to go on."""


class TrainingError(TrackvisionError):
    """Training cannot go on (a non-finite loss, say); the message names epoch and step."""


class TrackingError(TrackvisionError):
    """The tracking store could not be reached; the message says what was not recorded."""


class ExportError(TrackvisionError):
    """An exported model does not reproduce PyTorch's outputs; nothing was written."""
