"""Exceptions that map to exit codes: bad input is the user's to fix (exit 2), anything else is ours (exit 1)."""


class UsageError(ValueError):
    """Bad input: the message is one line that says what is wrong and how to fix it."""


class VerificationError(RuntimeError):
    """An attack returned an adversarial example that fails verification; it is never counted."""


class ModelChanged(VerificationError):
    """Something changed the model (a parameter, a buffer, a module's mode) while it was being evaluated: every
    number after the change would describe another model, so the run stops (exit 1) whatever stage it was in."""


class UserCodeError(RuntimeError):
    """User code (a model's forward pass, an attack, a dataset reader) failed during a run: the message is one line
    naming the code, what it did and the stage (exit 1). Code unusable from the start is a UsageError (exit 2)."""


class WriteError(RuntimeError):
    """The output could not be written (a full disk, a read-only filesystem): one line naming the path; nothing of
    the run was put in place (exit 1)."""
