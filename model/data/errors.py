"""The one exception of the data layer."""


class DataError(ValueError):
    """Data that cannot be used: the message names the file or folder and says what is wrong."""
