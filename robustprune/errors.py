"""Exceptions that map to exit codes: bad input is the user's to fix (exit 2), anything else is ours (exit 1)."""


class UsageError(ValueError):
    """Bad input: the message is one line that says what is wrong and how to fix it."""


class VerificationError(RuntimeError):
    """An attack returned an adversarial example that fails verification; it is never counted."""
