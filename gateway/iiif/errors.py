"""The one exception the IIIF layer raises for anything a client got wrong or asked too much of."""

from __future__ import annotations


class IIIFError(Exception):
    """A request the IIIF Image API says must be refused, with the status to refuse it with.

    ``status`` is the HTTP status the spec recommends (Image API 3.0 section 7.3, 2.1 section 7.2):
    400 for bad syntax or an unsatisfiable request, 404 for a size beyond the advertised limits in
    2.1, 501 for a valid request naming a feature this server does not implement.
    ``parameter`` names the offending URI component ("identifier", "region", "size", "rotation",
    "quality", "format") or is None when the path as a whole is malformed.
    """

    status: int
    parameter: str | None
    message: str

    def __init__(self, status: int, parameter: str | None, message: str) -> None:
        super().__init__(status, parameter, message)
        self.status = status
        self.parameter = parameter
        self.message = message

    def __str__(self) -> str:
        if self.parameter is None:
            return self.message
        return f"{self.parameter}: {self.message}"
