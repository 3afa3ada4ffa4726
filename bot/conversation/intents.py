"""Turn what a customer typed into a menu key: tolerant of spaces, punctuation,
full-width characters, case and small typos."""
from __future__ import annotations

import difflib
import re
import unicodedata
from enum import StrEnum
from functools import lru_cache

from menus import INTENTS, Key

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u4e00-\u9fff]")


class Universal(StrEnum):
    """Commands that work in every state of every flow."""

    EXIT = "EXIT"
    BACK = "BACK"
    MORE = "MORE"


UNIVERSAL: dict[str, Universal | Key] = {
    "退出": Universal.EXIT, "取消": Universal.EXIT, "算了": Universal.EXIT, "exit": Universal.EXIT,
    "quit": Universal.EXIT, "q": Universal.EXIT,
    "返回": Universal.BACK, "上一步": Universal.BACK, "back": Universal.BACK,
    "更多": Universal.MORE, "下一页": Universal.MORE, "more": Universal.MORE,
    "帮助": Key.HELP, "help": Key.HELP, "?": Key.HELP,
    "人工": Key.HUMAN, "转人工": Key.HUMAN, "人工客服": Key.HUMAN,
}


def normalize(text: str) -> str:
    """NFKC folds full-width letters, digits and punctuation; then drop spaces and punctuation."""
    folded = unicodedata.normalize("NFKC", text or "").lower().strip()
    stripped = _PUNCT.sub("", folded)
    return stripped or folded  # "?" alone is still a word


def universal(text: str) -> Universal | Key | None:
    return UNIVERSAL.get(normalize(text))


@lru_cache(maxsize=1)
def _table() -> dict[str, Key]:
    return {normalize(word): key for key, words in INTENTS.items() for word in words}


def exact(text: str) -> Key | None:
    """The key when the whole message is one of its words (after normalising)."""
    return _table().get(normalize(text))


# What makes a message a question (DOMAIN.md "Asking is not commanding"): a question mark;
# 吗 anywhere, or a closing particle (呢, 么, 嘛, and 不/没 after a verb: 收费不); a question word
# (什么, 怎么, 多少, 谁, 几, 哪, 啥 …); or an "X不X" / "X没X" pair (疼不疼, 是不是, 有没有).
_QUESTION = re.compile(
    r"[?？]|吗|(?:呢|么|嘛)[\W_]*$|[^\W\d_不没]{2}[不没][\W_]*$|什么|怎么|怎样|咋|如何|多少|多久|多长|多大|谁|几|哪|"
    r"是否|能否|为啥|为什么|啥|可不可以|([^\W\d_不没])[不没]\1")


def is_question(text: str) -> bool:
    """Whether the message asks about something (洁牙疼不疼, 专家门诊挂号费谁出) rather than
    asks for it (预约洁牙, 我要洗牙, 帮我约体检). The one place that decides it: a question gets
    the FAQ's answer before a word inside it is taken as a command."""
    return bool(_QUESTION.search(unicodedata.normalize("NFKC", text or "").strip()))


YES = frozenset({"是", "是的", "好", "好的", "对", "对的", "确认", "确定", "可以", "行", "嗯", "要",
                 "提交", "确认提交", "ok", "yes", "y"})
NO = frozenset({"否", "不", "不是", "不用", "不要", "不了", "不行", "no", "n"})


def yes_no(text: str) -> bool | None:
    """DOMAIN.md's yes/no words: True, False, or None for anything else."""
    norm = normalize(text)
    return True if norm in YES else False if norm in NO else None


def match(text: str) -> Key | None:
    """The key the text asks for, or None. Exact synonym first, then a synonym contained in
    a short sentence ("我想洗牙"), then a near-miss ("我得等级")."""
    norm = normalize(text)
    if not norm or len(norm) > 40:
        return None
    table = _table()
    if norm in table:
        return table[norm]
    # Only Chinese words are looked for inside a sentence: "hi" is not in "this".
    contained = [w for w in table if len(w) >= 2 and _CJK.search(w) and w in norm]
    if contained:
        return table[max(contained, key=len)]
    close = difflib.get_close_matches(norm, list(table), n=1, cutoff=0.74)
    return table[close[0]] if close else None
