"""The guard's exceptions, one tree:

    GuardError
     ├── PolicyError          a policy file is malformed (carries file:line: reason)
     ├── ConfigError          a setting is invalid
     ├── JudgeError           the judge failed (unreachable, timed out, unusable answer)
     │    └── JudgeTimeout
     ├── UpstreamError        the guarded model failed (carries status and body)
     │    └── UpstreamTimeout
     └── GuardRefused         raised by the decorator on refusal; carries the GuardResult

Inside the core a refusal is a Verdict, never an exception; only adapters raise GuardRefused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from guard.types import GuardResult


class GuardError(Exception):
    pass


class PolicyError(GuardError):
    def __init__(self, file: str, line: int, reason: str):
        self.file, self.line, self.reason = file, line, reason
        super().__init__(f"{file}:{line}: {reason}")


class PolicyErrors(PolicyError):
    """Several problems in one lint run; ``str()`` lists one per line."""

    def __init__(self, errors: list[PolicyError]):
        self.errors = errors
        first = errors[0]
        super().__init__(first.file, first.line, first.reason)
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return self.args[0]


class ConfigError(GuardError):
    pass


class JudgeError(GuardError):
    """``usage`` and ``cost``: what the failed calls spent, where the provider reported it (else None)."""

    def __init__(self, message: str = "", *, usage: Any = None, cost: Any = None):
        super().__init__(message)
        self.usage, self.cost = usage, cost


class JudgeTimeout(JudgeError):
    pass


class UpstreamError(GuardError):
    def __init__(self, message: str, status: int = 502, body: Any = None, headers: dict[str, str] | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.body, self.headers, self.code = status, body, headers or {}, code


class UpstreamTimeout(UpstreamError):
    def __init__(self, message: str = "upstream timed out"):
        super().__init__(message, status=504, code="upstream_timeout")


class GuardRefused(GuardError):
    def __init__(self, result: GuardResult):
        self.result = result
        super().__init__(f"refused by {', '.join(result.sections) or 'guard'}: {result.text}")
