"""User-facing errors. The CLI prints their message as one line (no traceback unless --debug)."""


class RlhfError(Exception):
    """Base class: an error whose message is fit to show a user as it is."""

    exit_code = 1


class ConfigError(RlhfError):
    """Bad key, type, value or missing file in the config (exit code 2)."""

    exit_code = 2


class DataError(RlhfError):
    """A bad dataset record or file; the message names file and line."""

    exit_code = 2


class RunDirError(RlhfError):
    """The output_dir is in a state that would make this run lose or overwrite something."""

    exit_code = 2
