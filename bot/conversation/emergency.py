"""Emergency detection (docs/programme.md precedence item 2): does a message call for the
"call 120 / go to A&E now" advice before anything else?

The vocabulary is data (emergency.toml). Decisions, erring on the side of safety:
- "120" (in digits or spoken, 幺二零) counts only as a call for help (docs/programme.md): the whole
  message ("120", "１２０！！"), or after a call word of the vocabulary ("快叫120", "帮我打120",
  "呼叫120", "急救120"). Never inside a longer number (spaces and dashes between digits join
  them, so "138 120 5678" is one number), never as a quantity ("打120元"), and never in a
  question about numbers ("客服电话是不是120", "我的保单号是120开头的吗"). At a step that
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
# What may stand between a call word and "120": 打个120, 打一下120, 拨打电话120, 快叫120.
_CALL_FILLER = r"(?:一下|一个|个|下|电话|了|给|快|赶紧|马上)?"
# The whole message is the number, with punctuation or spaces around it.
_ALONE_120 = re.compile(r"[\W_]*120[\W_]*")


@dataclass(frozen=True)
class _Vocabulary:
    words: re.Pattern            # symptom + typo words (+ fuzzy variants)
    distress: re.Pattern | None  # never excluded
    spoken_120: re.Pattern | None
    call_120: re.Pattern | None  # a call word, then 120
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
                       call_120=_call_pattern(data.get("call_words", [])),
                       exclusions=exclusions, acute=_alternation(data.get("acute_markers", [])))


def _norm(text: str) -> str:
    """Full-width to half-width, lower case, no spaces (punctuation is kept: it ends clauses)."""
    return _SPACES.sub("", unicodedata.normalize("NFKC", text or "").lower())


def _call_pattern(words: list[str]) -> re.Pattern | None:
    words = sorted({_norm(w) for w in words if w.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(f"(?:{'|'.join(map(re.escape, words))}){_CALL_FILLER}$")


def _calls_120(text: str, vocab: _Vocabulary) -> bool:
    """Whether the message is 120 alone or asks to call it (see the module docstring)."""
    folded = _SPACES.sub(" ", unicodedata.normalize("NFKC", text or "").lower().strip())
    folded = _DIGIT_GAP.sub("", folded)  # "138 120 5678" is one number
    if vocab.spoken_120:
        folded = vocab.spoken_120.sub("120", folded)
    if _ALONE_120.fullmatch(folded):
        return True
    if vocab.call_120 is None:
        return False
    for m in _NUMBER_120.finditer(folded):
        if _QUANTITY_AFTER.match(folded, m.end()):
            continue
        before = _SPACES.sub("", folded[:m.start()])
        if vocab.call_120.search(before):
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
    if not digits_step and _calls_120(text, vocab):
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
