"""The record every check returns: its name, a status, one line of detail and what to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "warn", "fail", "skip"]  # skip: not applicable here, with the reason as detail


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str  # one line: what was measured
    fix: str | None = None  # what to do, for every status but pass
    values: dict[str, Any] = field(default_factory=dict)  # the numbers behind the detail, for --json

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"name": self.name, "status": self.status, "detail": self.detail}
        if self.fix:
            shown["fix"] = self.fix
        if self.values:
            shown["values"] = self.values
        return shown


def passed(checks: list[CheckResult]) -> bool:
    """No check failed (warnings and skips do not stop anything)."""
    return all(check.status != "fail" for check in checks)
