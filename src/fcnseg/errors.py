"""The error type the command line reports as a line instead of a traceback, and the
warning type it shows as one line."""


class UserError(Exception):
    """Something the user gave (a file, a flag, a config value) that fcnseg cannot use.

    The message names the file or option and what is allowed. Every other
    exception is a bug in fcnseg and keeps its traceback.
    """


class ConfigError(UserError, ValueError):
    """A configuration value or command-line option outside what is allowed."""


class FcnsegWarning(UserWarning):
    """Something that works but not as the user likely wants (a warning, not an error);
    the command line prints its message as one ``warning:`` line on stderr, or, when
    warnings are errors (``python -W error``), as one ``fcnseg: error:`` line, exit 2."""
