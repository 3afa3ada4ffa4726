"""Emergency detection (DOMAIN.md precedence item 2): does a message call for the
"call 120 / go to A&E now" advice before anything else?

The vocabulary is data (emergency.toml). Decisions, erring on the side of safety:
- "120" counts only when it stands alone: not touching another digit (spaces and dashes
  between digits join them, so "138 120 5678" is one number), not a quantity ("120万",
  "120元", "120天") and not after an identifier word ("保单号120", "尾号120"). At a step that
  expects an ID number, phone or code (`digits_step=True`) digits never count; words still do.
- Distress and self-harm words ("救命", "想自杀") always count.
- A symptom word does not count inside an exclusion span: a department in a booking question
  ("急诊科的专家能约吗"), a past event or history ("我妈妈去年中风了现在想约个专家",
  "中风后遗症"), screening/prevention or a claims question ("心梗风险筛查", "骨折能理赔吗").
  An exclusion span stops at a present-time marker ("之前好好的突然晕倒了" still counts), and
  other hits in the same message still count.
"""
from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

VOCABULARY = Path(__file__).with_name("emergency.toml")

_CLAUSE = r"[^，。！？；,.!?;\n]"
_SPACES = re.compile(r"\s+")
_DIGIT_GAP = re.compile(r"(?<=\d)[\s\-－—]+(?=\d)")
# "120" not touching a digit, a decimal point or a Latin letter.
_NUMBER_120 = re.compile(r"(?<![\d.a-z])120(?![\d.a-z])")
# After "120": a unit or quantity word means it is an amount, not the number to call.
_QUANTITY_AFTER = re.compile(
    r"\s*(?:万|千|百|亿|元|块|圆|rmb|cny|%|％|分|秒|天|日|周|年|月|岁|斤|公斤|kg|克|g|米|cm|mm|"
    r"次|个|只|件|张|份|平|号|楼|室|页|条|多|左右|以上|以下|度|ml|毫升|mg|毫克|/)"
)
# Before "120": an identifier or a quantity context.
_IDENTIFIER_BEFORE = re.compile(
    r"(?:号|码|编号|单号|保单|尾号|卡号|账号|手机|电话|证|第|共|约|大约|花了|交了|付了|保费|金额|"
    r"保额|价格|价|¥|￥|\$|:|：|#)\s*$"
)


@dataclass(frozen=True)
class _Vocabulary:
    words: re.Pattern            # symptom + typo words (+ fuzzy variants)
    distress: re.Pattern | None  # never excluded
    spoken_120: re.Pattern | None
    exclusions: tuple[re.Pattern, ...]
    acute: re.Pattern | None


def _alternation(words: list[str]) -> re.Pattern | None:
    words = sorted({_norm(w) for w in words if w.strip()}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, words))) if words else None


def _fuzzy(word: str) -> list[str]:
    """One regex per position: the word with that character replaced by any CJK character."""
    w = _norm(word)
    return [re.escape(w[:i]) + r"[\u4e00-\u9fff]" + re.escape(w[i + 1:]) for i in range(len(w))]


@lru_cache(maxsize=1)
def _vocabulary(path: Path = VOCABULARY) -> _Vocabulary:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    symptoms = data.get("symptoms", []) + data.get("typos", [])
    base = sorted({_norm(w) for w in symptoms}, key=len, reverse=True)
    fuzzy = [p for w in data.get("fuzzy", []) for p in _fuzzy(w)]
    words = re.compile("|".join([re.escape(w) for w in base] + fuzzy))
    exclusions = tuple(re.compile(p.replace("{C}", _CLAUSE))
                       for p in data.get("exclusions", {}).get("patterns", []))
    return _Vocabulary(words=words, distress=_alternation(data.get("distress", [])),
                       spoken_120=_alternation(data.get("spoken_120", [])),
                       exclusions=exclusions, acute=_alternation(data.get("acute_markers", [])))


def _norm(text: str) -> str:
    """Full-width to half-width, lower case, no spaces (punctuation is kept: it ends clauses)."""
    return _SPACES.sub("", unicodedata.normalize("NFKC", text or "").lower())


def _has_standalone_120(text: str) -> bool:
    folded = unicodedata.normalize("NFKC", text or "").lower()
    folded = _DIGIT_GAP.sub("", folded)  # "138 120 5678" is one number
    for m in _NUMBER_120.finditer(folded):
        if _QUANTITY_AFTER.match(folded, m.end()):
            continue
        if _IDENTIFIER_BEFORE.search(folded, 0, m.start()):
            continue
        return True
    return False


def _excluded_spans(text: str, vocab: _Vocabulary) -> list[tuple[int, int]]:
    spans = []
    for pattern in vocab.exclusions:
        for m in pattern.finditer(text):
            start, end = m.span()
            if vocab.acute:  # the span stops at the first present-time marker inside it
                cut = vocab.acute.search(text, start + 1, end)
                if cut:
                    end = cut.start()
            if end > start:
                spans.append((start, end))
    return spans


def matches(text: str, *, digits_step: bool = False) -> list[str]:
    """What made the message an emergency (empty when it is not): for logs and tests."""
    vocab = _vocabulary()
    norm = _norm(text)
    found: list[str] = []
    if vocab.distress:
        found += [m.group() for m in vocab.distress.finditer(norm)]
    if vocab.spoken_120:
        found += [m.group() for m in vocab.spoken_120.finditer(norm)]
    if not digits_step and _has_standalone_120(text):
        found.append("120")
    hits = list(vocab.words.finditer(norm))
    if hits:
        spans = _excluded_spans(norm, vocab)
        found += [h.group() for h in hits
                  if not any(s <= h.start() and h.end() <= e for s, e in spans)]
    return found


def is_emergency(text: str, *, digits_step: bool = False) -> bool:
    """True when the message needs the emergency advice at once (see the module docstring)."""
    return bool(matches(text, digits_step=digits_step))


def warm() -> None:
    """Compile the vocabulary now rather than on the first message."""
    _vocabulary()
