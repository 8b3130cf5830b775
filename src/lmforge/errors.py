"""The one exception type for user mistakes: the CLI prints its message and exits with 2."""


class LmforgeError(Exception):
    """A problem with the user's input (file, config, checkpoint) that the user can fix.

    The message is one line: what is wrong, where, and what to do about it.
    """
