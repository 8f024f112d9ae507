"""The one exception type the CLI turns into a one-line message (never a traceback)."""


class TinymemError(Exception):
    """A user-facing error: the message says what is wrong and where (op, tensor, byte)."""


class UnsupportedError(TinymemError):
    """The model uses something tinymem does not implement (an op, a type, an option)."""
