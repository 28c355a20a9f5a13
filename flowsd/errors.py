"""Errors shared across flowsd's layers."""


class UserError(Exception):
    """A mistake the user can fix (bad argument, bad config, a database that refuses this
    flowsd). A database that is merely unavailable is not one: that is
    :class:`flowsd.db.errors.DatabaseUnavailableError`, retried.

    The command line prints it as one line and exits with status 2.
    """


class ConfigError(UserError):
    """The configuration file or an environment override is invalid."""
