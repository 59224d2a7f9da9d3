"""The one exception type for problems with what the user gave us.

The CLI prints a `UserError` as a single line and exits non-zero; any other exception is our bug and
keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user (path, config, file contents): the message names the problem and the fix."""
