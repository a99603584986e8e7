"""The one exception type for user mistakes.

A :class:`UniversalityError` carries a single sentence that names the bad input
and says what would be valid. The command line prints it without a stack trace.
"""


class UniversalityError(ValueError):
    """Bad input from the user: the message names the input and what is valid."""
