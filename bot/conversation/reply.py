"""What a handler returns (`Reply`) and what a step's parser raises (`Invalid`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.infra.texts import render


@dataclass
class Reply:
    text: str = ""
    transfer: bool = False  # hand the conversation to WeChat's human customer service
    paged: bool = False  # already one page of an earlier reply (「更多」)
    at: int = 0  # when it was made (the reply's CreateTime): a retry gets the same reply

    @classmethod
    def of(cls, value: "Reply | str | None") -> "Reply":
        if isinstance(value, Reply):
            return value
        return cls(text=value or "")

    def dumps(self) -> str:
        """As the de-duplication store keeps it, so that a retry gets the same reply."""
        return json.dumps({"t": self.text, "x": self.transfer, "a": self.at}, ensure_ascii=False)

    @classmethod
    def loads(cls, raw: str) -> "Reply":
        try:
            v = json.loads(raw)
            return cls(text=v.get("t") or "", transfer=bool(v.get("x")), at=int(v.get("a") or 0))
        except (ValueError, AttributeError):
            return cls()


class Invalid(Exception):
    """The input is refused and `template` says why. `goto` re-asks from an earlier step
    (also from a flow's `finish`, whose writes are then rolled back); `end` closes the flow
    with the reason; `again=False` says only the reason (a short re-ask, e.g. 「您是指…吗」),
    without the step's whole prompt."""

    def __init__(self, template: str, *, goto: str | None = None, end: bool = False,
                 again: bool = True, **ctx: Any) -> None:
        super().__init__(template)
        self.template = template
        self.goto = goto
        self.end = end
        self.again = again
        self.ctx = ctx

    def render(self) -> str:
        return render(self.template, **self.ctx)
