"""The gateway's error types.

Every error that an adapter is expected to catch lives here and carries the answer the gateway
gives for it (a SIP status, a STUN error code, an HTTP status, or for a bad configuration the
file, key and reason to print). Anything else raised is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a configuration or dial plan file.

    `key` is a dotted path into the file ("sip.listen[0]", "trunk[1].uri"), or one of the
    pseudo keys "(file)" (the file cannot be read) and "(syntax)" (it is not valid TOML).
    """

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"


class ConfigError(Exception):
    """A configuration or dial plan is unusable; `problems` lists every problem found."""

    problems: list[Problem]

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)
