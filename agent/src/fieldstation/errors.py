"""The user-mistake exception, apart from the loader so that the CLI can name it without importing pydantic."""


class ConfigError(Exception):
    """User mistakes in a config file; ``str()`` is one line per mistake, each naming file and line."""
