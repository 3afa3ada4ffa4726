"""Identity data: mainland ID numbers (GB 11643-1999), mobile numbers, and the masks used in
every reply and log line. Pure functions, no I/O."""
from __future__ import annotations

import re
import unicodedata
from datetime import date
from operator import mul

# ISO 7064 MOD 11-2: weight of position i (0-based, left to right) is 2**(17 - i) mod 11.
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_CHECK_CHARS = "10X98765432"  # indexed by (weighted sum mod 11)
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
_PHONE = re.compile(r"1[3-9][0-9]{9}")
_EARLIEST_BIRTH = date(1900, 1, 1)


_NAME_SHAPE = re.compile(r"[\u4e00-\u9fa5·•]{2,30}|[A-Za-z][A-Za-z·•. ]{1,29}")
# Whole answers that are not a person's name: replies to another question (同意, 确认, 是),
# refusals and fillers. Compared after dropping spaces and punctuation.
NOT_A_NAME = frozenset({
    "同意", "不同意", "确认", "确定", "提交", "是", "是的", "否", "不是", "好", "好的", "好吧", "对",
    "对的", "可以", "行", "嗯", "嗯嗯", "哦", "知道了", "收到", "谢谢", "不知道", "没有", "不用", "不要",
    "本人", "我", "我自己", "自己", "姓名", "名字", "你好", "您好", "测试", "随便",
    "ok", "okay", "yes", "no", "hi", "hello", "test", "asdf",
})


def plausible_name(text: str) -> bool:
    """Whether `text` can be a person's name as an ID card gives it: 2–30 Chinese characters
    (with the · of minority names) or Latin letters and spaces; never a word that answers
    something else (同意, 确认, 是, 好的), digits, emoji or punctuation alone."""
    name = unicodedata.normalize("NFKC", text or "").strip()
    if not _NAME_SHAPE.fullmatch(name):
        return False
    return re.sub(r"[\s·•.]+", "", name).casefold() not in NOT_A_NAME


def check_digit(first17: str) -> str:
    """The 18th character of the ID number whose first 17 digits are `first17`."""
    return _CHECK_CHARS[sum(map(mul, map(int, first17), _WEIGHTS)) % 11]


# After NFKC: every kind of space, and the hyphens and dashes people type between groups.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212\u30fc\uff70]+")


def compact(s: str) -> str:
    """What a customer typed as a number (ID number, phone, code), ready to parse: NFKC
    (full-width ５１４２５９ becomes 514259), then spaces and hyphens dropped
    ("110105 19880606 2104", "139-1234-5678")."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", s or ""))


def normalize_id_number(s: str) -> str:
    """Trim surrounding blanks and upper-case a trailing x."""
    return s.strip().upper()


def typed_id_number(s: str) -> str:
    """An ID number as a customer typed it (full-width, spaced, hyphenated) made compact,
    ready for `validate_id_number`, which itself accepts only the stored form."""
    return compact(s).upper()


def validate_id_number(s: str, *, today: date | None = None) -> str:
    """The normalised ID number, or ValueError with a short reason."""
    n = normalize_id_number(s)
    if len(n) != 18:
        raise ValueError(f"must be 18 characters, not {len(n)}")
    if not _ID_SHAPE.fullmatch(n):
        raise ValueError("must be 17 digits followed by a digit or X")
    try:
        birth = id_birth_date(n)
    except ValueError:
        raise ValueError("bad birth date") from None
    if not _EARLIEST_BIRTH <= birth <= (today or date.today()):
        raise ValueError("bad birth date")
    if n[17] != check_digit(n[:17]):
        raise ValueError("bad check digit")
    return n


def id_birth_date(id_number: str) -> date:
    """Birth date held in positions 7-14 (YYYYMMDD) of an 18-character ID number."""
    return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def id_sex(id_number: str) -> str:
    """"M" when the 17th digit is odd, else "F"."""
    return "M" if int(id_number[16]) % 2 else "F"


def is_valid_phone(s: str) -> bool:
    """A mainland mobile number: 11 digits, 1[3-9]…"""
    return bool(_PHONE.fullmatch(s or ""))


def normalize_phone(s: str) -> str:
    """The compact form of a typed phone number; a leading +86 / 0086 country code dropped."""
    n = compact(s)
    for prefix in ("+86", "0086"):
        if n.startswith(prefix) and len(n) == len(prefix) + 11:
            return n[len(prefix):]
    return n


def make_id_number(region: str, birth: date, seq: int, sex: str) -> str:
    """A valid ID number for tests and demo data. `seq` (0-499) numbers the people of one
    sex born in `region` (6 digits) on `birth`; the check digit is computed."""
    if not (len(region) == 6 and region.isdigit()):
        raise ValueError("region must be 6 digits")
    if not 0 <= seq < 500 or sex not in ("M", "F"):
        raise ValueError("seq must be 0-499 and sex M or F")
    first17 = f"{region}{birth:%Y%m%d}{seq * 2 + (sex == 'M'):03d}"
    return first17 + check_digit(first17)



# The masks every reply and log line uses are defined once, in bot.infra.privacy (logs need
# them too); these names stay importable from here for the flows that read identities.
from bot.infra.privacy import mask_id_number, mask_name, mask_phone  # noqa: E402,F401
