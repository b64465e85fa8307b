"""The errors a user can fix, shared by training and serving: each message says what to do."""


class ConfigError(ValueError):
    """A configuration problem the user can fix; reported as one message, no traceback."""


class ArtifactError(ValueError):
    """A folder that is not a usable training artifact; the message says what to do."""
