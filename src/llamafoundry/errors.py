"""The one exception type for problems with what the user gave us, and the one for a run stopped on request.

The CLI prints a `UserError` as a single line and exits non-zero; any other exception is our bug and
keeps its traceback. An `Interrupted` run is printed the same way, with the exit code a shell gives a
process ended by that signal.
"""

import signal


class UserError(Exception):
    """Bad input from the user (path, config, file contents): the message names the problem and the fix."""


class Interrupted(KeyboardInterrupt):
    """A run stopped on SIGINT or SIGTERM: the message says where it stopped and how to continue (`quiet`:
    another process of the job says it).

    A KeyboardInterrupt, so that code which already lets Ctrl-C through lets this through too.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT, quiet: bool = False) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
        self.quiet = quiet
