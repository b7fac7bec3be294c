"""Errors of the dispatcher, in two families.

    DispatcherError          an operation refused, carrying Kamailio's RPC fault
    |                        (code, message), e.g. (500, "Ongoing reload"); the
    |                        RPC layer answers with exactly these
    DestinationError         bad destination data (URI, flags, attrs); ``source``
    +-- ListFileError        names where it came from; a list-file error always
                             names ``path:line``

Our own bugs are plain exceptions and are never mapped to an RPC fault.
"""

from __future__ import annotations

__all__ = ["DestinationError", "DispatcherError", "ListFileError"]


class DispatcherError(Exception):
    """A refused dispatcher operation with Kamailio's fault code and text.

    ``message`` is exactly Kamailio's fault string; ``detail`` says more for
    logs and sipfleet's own tools (e.g. which line of the list is bad).
    """

    def __init__(self, code: int, message: str, detail: str = "") -> None:
        super().__init__(f"{code} {message}: {detail}" if detail else f"{code} {message}")
        self.code = code
        self.message = message
        self.detail = detail

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DispatcherError):
            return NotImplemented
        return (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))


class DestinationError(ValueError):
    """A destination that cannot be loaded; ``source`` says where it came from."""

    def __init__(self, reason: str, source: str = "") -> None:
        super().__init__(f"{source}: {reason}" if source else reason)
        self.reason = reason
        self.source = source


class ListFileError(DestinationError):
    """A line of a Kamailio list file that cannot be read."""

    def __init__(self, reason: str, path: str, line: int) -> None:
        super().__init__(reason, f"{path}:{line}")
        self.path = path
        self.line = line
