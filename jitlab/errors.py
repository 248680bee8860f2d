"""The one error type for bad configuration: it names the field and says what is valid."""


class ConfigError(ValueError):
    """A configuration value is invalid. ``field`` is its dotted name as a user types it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")
