"""llmc's error types. The CLI prints a `UserError` as one line and exits with code 2."""


class LlmcError(Exception):
    """Base of every error llmc raises on purpose."""


class UserError(LlmcError):
    """A bad input a user can fix, named with the file or field at fault and what to do."""


class BundleError(UserError):
    """A bundle that is malformed, tampered with, or not loadable here."""
