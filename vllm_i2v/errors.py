"""Errors the user can act on. Each renders as one line naming the file (or key) and the cause."""


class VllmI2VError(Exception):
    """Base class: a problem with the user's input, config or checkpoint (not a bug in vllm_i2v)."""


class VideoInputError(VllmI2VError):
    """A video, image or frame folder that cannot be read as asked."""

    def __init__(self, path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class ConfigError(VllmI2VError):
    """A model or run configuration that names something unknown or inconsistent."""


class CheckpointError(VllmI2VError):
    """A checkpoint whose weights do not all load."""


class PromptError(VllmI2VError):
    """A conversation whose placeholders do not match the visual inputs given."""


class BudgetError(VllmI2VError):
    """A request whose visual tokens cannot fit in the LLM's context."""
