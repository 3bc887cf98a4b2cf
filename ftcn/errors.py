"""Errors that reach the user as one clear line instead of a traceback."""


class FTCNError(Exception):
    """Base class for user-facing errors (bad input, missing weights, bad config)."""

    exit_code = 2


class InputError(FTCNError):
    """The input video (or other user file) cannot be used."""


class WeightsError(FTCNError):
    """Weights are missing, corrupt or do not match the model."""


class ConfigError(FTCNError):
    """The configuration is invalid."""
