"""`gatehouse doctor`: one line per check, green or red, each red line with the fix.

A check is a function that returns one or more `Result`s; it never raises (the runner turns an
unexpected exception into a red line naming the check). `skip` results are neither green nor
red: what cannot be checked here (no systemd, say) is said, not failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["ok", "fail", "skip"]
MARKS: dict[State, str] = {"ok": "[ OK ]", "fail": "[FAIL]", "skip": "[SKIP]"}
COLOURS: dict[State, str] = {"ok": "\033[32m", "fail": "\033[31m", "skip": "\033[33m"}
RESET = "\033[0m"


@dataclass(frozen=True)
class Result:
    check: str
    state: State
    message: str
    fix: str = ""

    @classmethod
    def ok(cls, check: str, message: str) -> Result:
        return cls(check, "ok", message)

    @classmethod
    def fail(cls, check: str, message: str, fix: str) -> Result:
        return cls(check, "fail", message, fix)

    @classmethod
    def skip(cls, check: str, message: str) -> Result:
        return cls(check, "skip", message)

    def line(self, colour: bool = False) -> str:
        mark = MARKS[self.state]
        if colour:
            mark = f"{COLOURS[self.state]}{mark}{RESET}"
        text = f"{mark} {self.check}: {self.message}"
        return f"{text} → fix: {self.fix}" if self.fix else text
