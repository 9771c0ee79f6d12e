"""A value that must never be printed: API keys, webhook URLs, DSN passwords."""

from dataclasses import dataclass, field

REDACTED = "***"


@dataclass(frozen=True)
class Secret:
    """Holds a secret string; `str()` and `repr()` show only `***`.

    Call `reveal()` at the single place the real value is needed (an HTTP request,
    a connection), never to build a message.
    """

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"
