"""The one exception type for mistakes a user can fix (bad paths, bad files, bad configs).

The CLI prints these as a single line; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line."""
