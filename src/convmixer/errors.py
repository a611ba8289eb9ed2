"""User-facing errors.

Every error a user can cause (bad path, bad config, corrupt file, wrong input shape) is raised as a
subclass of :class:`ConvMixerError`. The CLI prints these as one line and exits with code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConvMixerError(Exception):
    """Base class of all errors a user can cause and fix."""


class ConfigError(ConvMixerError, ValueError):
    """An invalid setting: unknown name, out-of-range value, wrong type."""


class UnknownModelError(ConfigError):
    """A model name that is not registered."""


class InputShapeError(ConvMixerError, ValueError):
    """An input tensor the model cannot take (wrong rank, channel count, or smaller than a patch)."""


class CheckpointError(ConvMixerError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class DataError(ConvMixerError, ValueError):
    """A dataset that is missing, corrupt, or laid out wrongly."""
