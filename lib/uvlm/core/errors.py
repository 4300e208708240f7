"""Errors a user can act on.

Every error raised for bad input names the thing to fix: the config key, the
file, or the pipeline stage to run first.
"""


class UVLMError(Exception):
    """Base class for errors meant to be read by a person."""


class ConfigError(UVLMError, ValueError):
    """A parameter has an unknown key, a wrong type, or a value out of range."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config key '{key}' = {value!r} is not allowed; expected {allowed}")


class MissingInputError(UVLMError, FileNotFoundError):
    """A stage's input does not exist yet: tell the user which stage makes it."""

    def __init__(self, path, stage: str):
        self.path, self.stage = str(path), stage
        super().__init__(
            f"missing input '{path}'. It is produced by the '{stage}' stage: "
            f"run `dvc repro {stage}` (or `make repro`) first."
        )


class CheckpointError(UVLMError):
    """A checkpoint is missing, corrupt, or does not match the model/tokenizer."""
