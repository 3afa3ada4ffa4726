"""Turn what a customer typed into a menu key: tolerant of spaces, punctuation,
full-width characters, case and small typos. The keys and their words are the app's
(`menus.VOCABULARY`), handed to the root router: the framework names none of them."""
from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from enum import StrEnum
from functools import cached_property

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u4e00-\u9fff]")
_MEASURE = re.compile(r"(?<=[洗约做看挂])(?:个|一个|一下|一次|次)")  # 洗个牙, 约一次体检


class Universal(StrEnum):
    """Commands that work in every state of every flow."""

    EXIT = "EXIT"
    BACK = "BACK"
    MORE = "MORE"


UNIVERSAL: dict[str, Universal] = {
    "退出": Universal.EXIT, "取消": Universal.EXIT, "算了": Universal.EXIT, "不办了": Universal.EXIT,
    "exit": Universal.EXIT,
    "quit": Universal.EXIT, "q": Universal.EXIT,
    "返回": Universal.BACK, "上一步": Universal.BACK, "back": Universal.BACK,
    "更多": Universal.MORE, "下一页": Universal.MORE, "more": Universal.MORE,
}
# The words of the app's help and hand-over keys that also work in every state.
HELP_WORDS = ("帮助", "help", "?")
HUMAN_WORDS = ("人工", "转人工", "人工客服")


def normalize(text: str) -> str:
    """NFKC folds full-width letters, digits and punctuation; then drop spaces and punctuation."""
    folded = unicodedata.normalize("NFKC", text or "").lower().strip()
    stripped = _PUNCT.sub("", folded)
    return stripped or folded  # "?" alone is still a word



# What makes a message a question (docs/programme.md "Asking is not commanding"): a question mark;
# 吗 anywhere, or a closing particle (呢, 么, 嘛, and 不/没 after a verb: 收费不); a question word
# (什么, 怎么, 多少, 谁, 几, 哪, 啥 …); or an "X不X" / "X没X" pair (疼不疼, 是不是, 有没有).
_QUESTION = re.compile(
    r"[?？]|吗|(?:呢|么|嘛)[\W_]*$|[^\W\d_不没]{2}[不没][\W_]*$|什么|怎么|怎样|咋|如何|多少|多久|多长|多大|谁|几|哪|"
    r"是否|能否|为啥|为什么|啥|可不可以|([^\W\d_不没])[不没]\1")


def is_question(text: str) -> bool:
    """Whether the message asks about something (洁牙疼不疼, 专家门诊挂号费谁出) rather than
    asks for it (预约洁牙, 我要洗牙, 帮我约体检). The one place that decides it: a question gets
    the FAQ's answer before a word inside it is taken as a command."""
    said = _INDEFINITE.sub("", unicodedata.normalize("NFKC", text or "").strip())
    return bool(_QUESTION.search(said))


# What may stand around a menu word asked after: 请问…呢, 那…呢, …吗.
_ASKED_AFTER = re.compile(r"^(?:请问|那么|那)|(?:呢|吗|嘛|啊|呀)$")


# A question word used as "any" (随便哪天, 哪家都行, 什么时候都可以) asks nothing.
_INDEFINITE = re.compile(r"(?:随便|不管|无论|任意)(?:哪|什么|几|谁)[^\W\d_]?|"
                         r"(?:哪|什么)[^\W\d_]{0,3}都(?:行|可以|好|成|方便)")


YES = frozenset({"是", "是的", "好", "好的", "对", "对的", "确认", "确定", "可以", "行", "嗯", "要",
                 "提交", "确认提交", "ok", "yes", "y"})
NO = frozenset({"否", "不", "不是", "不用", "不要", "不了", "不行", "no", "n"})


def yes_no(text: str) -> bool | None:
    """docs/programme.md's yes/no words: True, False, or None for anything else."""
    norm = normalize(text)
    return True if norm in YES else False if norm in NO else None


class Vocabulary:
    """What a user can ask for, as the app names it: its keys, the words (with synonyms)
    for each, the key of 帮助 and of 人工, which keys are services (a code of rules.toml),
    which need a bound customer (`personal`, enforced by the router) and which act only
    outside flows."""

    def __init__(self, words: Mapping[Hashable, Sequence[str]], *,
                 key: Callable[[str], Hashable], help: Hashable, human: Hashable,
                 services: Mapping[Hashable, str], personal: Iterable[Hashable] = (),
                 not_in_flows: Iterable[Hashable] = (),
                 phrases: Sequence[tuple[str, Hashable | None]] = (),
                 shapes: Mapping[Hashable, Callable[[str], bool]] | None = None) -> None:
        self.words = words
        self._key = key
        self.help, self.human = help, human
        self.services = services
        self.personal = frozenset(personal)
        self.not_in_flows = frozenset(not_in_flows)
        # Patterns that decide what a sentence asks for whatever other key's word it holds
        # (取消体检 is a cancellation, not 体检), tried in order on the normalised text; a
        # pattern of key None asks for nothing (不想约体检 books nothing).
        self.phrases = tuple((re.compile(p), k) for p, k in phrases)
        # Whole-message shapes: a message that is all one shape (a date alone) is that key.
        self.shapes = dict(shapes or {})
        # How the bot names each key to the customer (the first of its words).
        self.label = {k: ws[0] for k, ws in words.items()}
        self._universal = {**UNIVERSAL, **{normalize(w): help for w in HELP_WORDS},
                           **{normalize(w): human for w in HUMAN_WORDS}}

    def key(self, raw: str | None):
        """The key a menu click (or a stored switch) names, or None."""
        try:
            return self._key(raw or "")
        except ValueError:
            return None

    @cached_property
    def _table(self) -> dict:
        return {normalize(word): key for key, words in self.words.items() for word in words}

    def universal(self, text: str):
        """A command of every state: Universal, the help or the hand-over key, or None."""
        return self._universal.get(normalize(text))

    def exact(self, text: str):
        """The key when the whole message is one of its words (after normalising)."""
        return self._table.get(normalize(text))

    def asked(self, text: str):
        """The key when the message is one of its words, or of its shapes, asked after
        (请问我的预约呢, 我的等级呢？, 12月18日呢): only a polite opening and a question particle
        around it."""
        said = _ASKED_AFTER.sub("", normalize(text))
        return self._table.get(said) or self.shaped(said)

    def shaped(self, text: str):
        """The key whose shape the whole message has (12月18日: a date alone), or None."""
        return next((key for key, shape in self.shapes.items() if shape(text)), None)

    def match(self, text: str):
        """The key the text asks for, or None. Exact synonym first, then a whole-message
        shape (a date alone), then a phrase that decides (取消…, 不想…了, 改期), then a synonym
        contained in a short sentence ("我想洗牙"), then a near-miss ("我得等级")."""
        norm = normalize(text)
        if not norm or len(norm) > 40:
            return None
        table = self._table
        if norm in table:
            return table[norm]
        shaped = self.shaped(text)
        if shaped is not None:
            return shaped
        for pattern, key in self.phrases:
            if pattern.search(norm):
                return key
        return self.contained(norm) or self._near(norm)

    def contained(self, text: str, keys: Iterable[Hashable] | None = None):
        """The key of the longest word inside the text (of `keys` only, when given), or None.
        Only Chinese words are looked for inside a sentence: "hi" is not in "this"; a measure
        word inside the command (我要洗个牙, 约一次体检) does not hide it."""
        norm = normalize(text)
        bare = _MEASURE.sub("", norm)
        wanted = None if keys is None else frozenset(keys)
        contained = [w for w, k in self._table.items() if len(w) >= 2 and _CJK.search(w)
                     and (wanted is None or k in wanted) and (w in norm or w in bare)]
        return self._table[max(contained, key=len)] if contained else None

    def service_named(self, text: str) -> str | None:
        """The service (a code of rules.toml) a sentence names, whatever else it says
        (取消我的体检: checkup), or None."""
        return self.services.get(self.contained(text, self.services))

    def _near(self, norm: str):
        close = difflib.get_close_matches(norm, list(self._table), n=1, cutoff=0.74)
        return self._table[close[0]] if close else None
