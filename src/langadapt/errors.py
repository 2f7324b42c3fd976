"""One exception family for everything a user can get wrong.

The CLI catches `LangAdaptError`, prints its message (and hint) and exits 1 without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LangAdaptError(Exception):
    """Base class: a message that says what is wrong, plus what to do next."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(LangAdaptError):
    """A recipe is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: list[str], source: str = "recipe") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{source}: {len(self.problems)} {noun}:\n{lines}")


class InputError(LangAdaptError):
    """Input data is missing, unreadable, empty or in the wrong format."""


class ModelLoadError(LangAdaptError):
    """A base model or tokenizer cannot be found or loaded."""


class MissingDependencyError(LangAdaptError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, purpose: str, install: str) -> None:
        super().__init__(
            f"{purpose} needs the package '{package}', which is not installed.",
            hint=f"install it with: {install}",
        )


class OutOfDeviceMemoryError(LangAdaptError):
    """A training step did not fit the device's memory (the message names the step's shape and what to lower)."""


class StageError(LangAdaptError):
    """A stage cannot run because an upstream stage's output is missing or stale."""
