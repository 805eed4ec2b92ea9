"""One error type for everything a user can get wrong.

The CLI prints its message as one line and exits non-zero; pages show it with
`st.error`. Messages say what was wrong and what to do about it.
"""


class GroundworkError(ValueError):
    """Bad input or a request that cannot be met; nothing was changed."""
