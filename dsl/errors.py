"""The exception types every robustspec error belongs to.

One base class, so a user can catch everything robustspec raises on purpose with
`except RobustspecError`; each layer raises the subclass that says what went wrong:

    RobustspecError
      SpecError        a spec (or a logic/search option) is wrong: diagnostics with file:line:col
      InputError       an API call got bad arguments (shapes, NaN, negative eps, a bad model output)
      DataError        a dataset is missing, corrupt or not what was asked for
      TrainingError    a run cannot go on (non-finite loss, refused resume or overwrite)
        CheckpointError  a checkpoint cannot be read, is not robustspec's, or does not fit
      MissingExtra     an optional dependency is not installed; names the pip extra

Every message says what to do. `InputError` is also a `ValueError` and `MissingExtra` an
`ImportError`, so code written against the standard types keeps working.
"""
from __future__ import annotations


class RobustspecError(Exception):
    """Base of every error robustspec raises on purpose; printed without a traceback by the CLI."""


class InputError(RobustspecError, ValueError):
    """Bad arguments to an API call (shape, dtype, non-finite values, bad options)."""


class DataError(RobustspecError):
    """A dataset that is missing, corrupt, or not what was asked for; says how to get it."""


class TrainingError(RobustspecError):
    """A run that cannot go on (non-finite loss, mismatched checkpoint); says what to do."""


class CheckpointError(TrainingError):
    """A checkpoint that cannot be loaded or does not fit the model, data or property (also a
    TrainingError, which such refusals were before it existed)."""


class MissingExtra(RobustspecError, ImportError):
    """An optional dependency is missing: `pip install 'robustspec[EXTRA]'`."""

    def __init__(self, extra: str, package: str, purpose: str):
        self.extra, self.package = extra, package
        super().__init__(f"{purpose} needs the package '{package}', which is not installed; "
                         f"install the extra: pip install 'robustspec[{extra}]' "
                         f"(from a checkout: pip install -e '.[{extra}]')")


__all__ = ["RobustspecError", "InputError", "DataError", "CheckpointError", "TrainingError",
           "MissingExtra"]
