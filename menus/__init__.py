"""The one source of what a user can ask for: menu keys, the menu layout and the words
(with synonyms) that mean the same thing in chat. The router maps each key to a handler;
the app hands this vocabulary (`VOCABULARY`) to the conversation framework, which names no
key of its own."""
from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from bot.conversation.intents import Vocabulary, normalize
from bot.domain.bookings import calendar
from bot.domain.dates import is_day_alone
from bot.domain.workdays import SHANGHAI


class Key(StrEnum):
    MY_TIER = "MY_TIER"
    MY_BENEFITS = "MY_BENEFITS"
    BOOK_DENTAL = "BOOK_DENTAL"
    BOOK_CHECKUP = "BOOK_CHECKUP"
    BOOK_EXPERT = "BOOK_EXPERT"
    BOOK_SPECIAL = "BOOK_SPECIAL"
    MY_BOOKINGS = "MY_BOOKINGS"
    CANCEL_BOOKING = "CANCEL_BOOKING"
    RESCHEDULE = "RESCHEDULE"  # 改期: cancel, then book again (there is no change of date)
    NO_BOOKING = "NO_BOOKING"  # 不想约, 不用预约: a booking declined (nothing starts)
    DAY_SAID = "DAY_SAID"  # a date typed alone (12月18日): to book, or to see that day's?
    CONFIRM_ATTENDANCE = "CONFIRM_ATTENDANCE"  # 确认, the answer to the day-before reminder
    BIND = "BIND"
    UNBIND = "UNBIND"
    HEALTH_ADVISOR = "HEALTH_ADVISOR"
    HOSPITAL_VISIT = "HOSPITAL_VISIT"
    FESTIVAL = "FESTIVAL"
    FAQ = "FAQ"
    HUMAN = "HUMAN"
    HELP = "HELP"


# The value-added service (a code of rules.toml) behind a key: a tier without it is refused
# at every door, and help and welcome offer it only to the tiers that have it.
SERVICE_OF: dict[Key, str] = {
    Key.BOOK_DENTAL: "dental",
    Key.BOOK_CHECKUP: "checkup",
    Key.BOOK_EXPERT: "expert_outpatient",
    Key.BOOK_SPECIAL: "special_exam",
    Key.HEALTH_ADVISOR: "health_advisor",
    Key.HOSPITAL_VISIT: "hospital_visit",
}

# Keys only a bound policyholder can use: the router leads anyone else into binding first
# (`Router.unbound`), so their handlers always have `ctx.customer`. (解除绑定 answers an
# unbound user itself: there is nothing to unbind.)
PERSONAL: frozenset[Key] = frozenset({
    Key.MY_TIER, Key.MY_BENEFITS, Key.MY_BOOKINGS, Key.CANCEL_BOOKING, Key.RESCHEDULE,
    Key.CONFIRM_ATTENDANCE, *SERVICE_OF})

# Keys whose words are also answers inside flows (确认 is a yes): inside a flow they never
# pull the customer out of it; they act only outside flows.
NOT_IN_FLOWS: frozenset[Key] = frozenset({Key.CONFIRM_ATTENDANCE})

# The menu, defined once. WeChat's limits (checked by `validate_menu` before it is sent):
# 1-3 top buttons, 1-5 entries under each, names of at most 16 bytes (top) and 60 bytes
# (entries) in UTF-8, keys of at most 128 bytes.
MENU: list[tuple[str, list[tuple[str, Key]]]] = [
    ("我的权益", [("我的等级", Key.MY_TIER), ("我的权益", Key.MY_BENEFITS),
                  ("客服节活动", Key.FESTIVAL)]),
    ("预约服务", [("预约洁牙", Key.BOOK_DENTAL), ("预约体检", Key.BOOK_CHECKUP),
                  ("专家门诊", Key.BOOK_EXPERT), ("特种检查", Key.BOOK_SPECIAL),
                  ("我的预约", Key.MY_BOOKINGS)]),
    ("帮助", [("健康顾问", Key.HEALTH_ADVISOR), ("理赔探视", Key.HOSPITAL_VISIT),
              ("常见问题", Key.FAQ), ("绑定账户", Key.BIND), ("人工服务", Key.HUMAN)]),
]

MAX_TOP, MAX_SUB = 3, 5
MAX_TOP_NAME, MAX_SUB_NAME, MAX_KEY = 16, 60, 128  # bytes (UTF-8)


class MenuError(ValueError):
    """The menu breaks one of WeChat's limits; the message names the entry."""


# Words customers type for each key. Matching is tolerant of spaces, punctuation,
# full-width characters and small typos (see bot/conversation/intents.py).
INTENTS: dict[Key, list[str]] = {
    Key.MY_TIER: ["我的等级", "等级", "我的层级", "层级", "客户层级", "查等级", "查询等级",
                  "会员等级", "我是什么等级", "贡献值", "保费贡献值", "VIP等级"],
    Key.MY_BENEFITS: ["我的权益", "权益", "我的服务", "增值服务", "会员权益", "剩余次数",
                      "服务次数", "福利"],
    Key.BOOK_DENTAL: ["预约洁牙", "洁牙", "洗牙", "预约洗牙", "牙齿关爱", "洁牙预约", "约洁牙", "约洗牙"],
    Key.BOOK_CHECKUP: ["预约体检", "体检", "健康体检", "体检预约", "约体检"],
    Key.BOOK_EXPERT: ["专家门诊", "预约专家", "专家门诊预约", "挂专家号", "看专家", "门诊预约"],
    Key.BOOK_SPECIAL: ["特种检查", "预约特种检查", "特检", "预约检查", "核磁共振", "胃肠镜", "核磁",
                     "做CT", "CT检查", "B超", "胃镜", "肠镜"],
    Key.MY_BOOKINGS: ["我的预约", "预约记录", "查预约", "查询预约", "预约查询"],
    Key.CANCEL_BOOKING: ["取消预约", "预约取消", "撤销预约", "不去了"],
    Key.RESCHEDULE: ["改期", "改约", "改日子", "改个日子", "改时间", "改个时间", "改日期",
                     "换日子", "换个日子", "换时间", "换个时间", "换日期", "换一天", "改一天"],
    Key.NO_BOOKING: ["不预约", "不约了", "先不约", "先不预约"],
    Key.CONFIRM_ATTENDANCE: ["确认", "确认到场", "确认参加", "确认赴约", "会去"],
    Key.BIND: ["绑定", "绑定身份", "身份绑定", "绑定保单", "认证", "身份认证", "实名认证"],
    Key.UNBIND: ["解除绑定", "解绑", "取消绑定"],
    Key.HEALTH_ADVISOR: ["健康顾问", "健康咨询", "咨询医生", "问医生"],
    Key.HOSPITAL_VISIT: ["理赔探视", "住院探视", "理赔住院探视", "申请探视", "申请住院探视"],
    Key.FESTIVAL: ["客服节", "客服节活动", "客户服务节", "服务节活动"],
    Key.FAQ: ["常见问题", "问题", "FAQ", "问答"],
    Key.HUMAN: ["人工", "转人工", "人工客服", "客服", "真人"],
    Key.HELP: ["帮助", "help", "菜单", "功能", "你能做什么", "怎么用", "?", "？", "你好",
               "您好", "hi", "hello"],
}


# How the bot names each key to the customer (the first of its words).
INTENT_LABEL: dict[Key, str] = {key: words[0] for key, words in INTENTS.items()}

# Phrases that decide what a sentence asks for whatever service it names (docs/programme.md,
# "What a message means"), tried in order on the normalised text (bot/conversation/intents.py):
# - a word calling a booking off is 取消预约 (取消体检, 体检取消, 把体检取消了, 我不想洗牙了,
#   洗牙不去了, 退掉洁牙), never a booking of that service; a sentence about something else
#   (取消绑定, 取消关注, 退掉保单) or telling what happened (预约被取消了) is not;
# - a change of date is 改期 (改到下周, 往后推几天): there is none, only cancel and book again;
# - a booking said not to be wanted (不想约体检, 不用预约了) is declined; inside a longer
#   sentence (不用预约直接去洗牙吗) it asks for no booking either.
_SERVICE_WORDS = "|".join(sorted((re.escape(normalize(w)) for k in SERVICE_OF for w in INTENTS[k]),
                                 key=len, reverse=True))
NOT_ABOUT_BOOKINGS = r"绑|关注|保单|保险|退保|订阅|短信|推送|被取消|已取消|已经取消"
CANCEL_WORDS = r"取消|撤销|撤掉|退掉|退订|不去了|去不了了|不要了|不做了|不洗了|" \
               rf"不(?:想|要|打算)再?(?:(?:去|做|洗|查|看)(?:{_SERVICE_WORDS})?|(?:{_SERVICE_WORDS}))了$"
RESCHEDULE_WORDS = r"改(?:个|一下)?(?:期|约|日子|时间|日期)|换(?:个|一个)?(?:日子|时间|日期)|换一天|" \
                   r"(?:改|挪|推|调)到|改在|往后推|推迟|延期|延后|顺延|提前到"
DECLINE = r"(?:不|别)(?:想|要|用|需要|必|打算)?再?去?(?:预约|约)"
PHRASES: list[tuple[str, Key | None]] = [
    (rf"^(?!.*(?:{NOT_ABOUT_BOOKINGS})).*(?:{CANCEL_WORDS})", Key.CANCEL_BOOKING),
    (rf"^(?!.*(?:{NOT_ABOUT_BOOKINGS})).*(?:{RESCHEDULE_WORDS})", Key.RESCHEDULE),
    (rf"{DECLINE}(?:{_SERVICE_WORDS})?(?:了|啦|吧)?$", Key.NO_BOOKING),
    (DECLINE, None),
]


def a_day_alone(text: str) -> bool:
    """A date typed with nothing around it (12月18日, 下周三): the shape of `Key.DAY_SAID`.
    Whether it is past or not does not change the shape, so today's clock serves."""
    return is_day_alone(text, datetime.now(SHANGHAI), calendar())


VOCABULARY = Vocabulary(INTENTS, key=Key, help=Key.HELP, human=Key.HUMAN, services=SERVICE_OF,
                        personal=PERSONAL, not_in_flows=NOT_IN_FLOWS, phrases=PHRASES,
                        shapes={Key.DAY_SAID: a_day_alone})


def menu_json(menu: list[tuple[str, list[tuple[str, Key]]]] | None = None) -> dict:
    """The menu in the form WeChat's menu/create API takes."""
    return {
        "button": [
            {"name": top, "sub_button": [{"type": "click", "name": n, "key": str(k)}
                                         for n, k in entries]}
            for top, entries in (MENU if menu is None else menu)
        ]
    }


def _bytes(s: str) -> int:
    return len(s.encode("utf-8"))


def validate_menu(data: dict) -> dict:
    """`data` (menu/create's JSON) checked against WeChat's limits; raises MenuError."""
    buttons = data.get("button") or []
    if not 1 <= len(buttons) <= MAX_TOP:
        raise MenuError(f"{len(buttons)} top-level buttons (WeChat allows 1-{MAX_TOP})")
    keys: set[str] = set()
    for top in buttons:
        name = top.get("name") or ""
        if not name or _bytes(name) > MAX_TOP_NAME:
            raise MenuError(f"top-level name {name!r} is {_bytes(name)} bytes "
                            f"(WeChat allows 1-{MAX_TOP_NAME})")
        subs = top.get("sub_button") or []
        if not 1 <= len(subs) <= MAX_SUB:
            raise MenuError(f"{name!r} has {len(subs)} entries (WeChat allows 1-{MAX_SUB})")
        for sub in subs:
            sname, key = sub.get("name") or "", sub.get("key") or ""
            if not sname or _bytes(sname) > MAX_SUB_NAME:
                raise MenuError(f"entry name {sname!r} is {_bytes(sname)} bytes "
                                f"(WeChat allows 1-{MAX_SUB_NAME})")
            if sub.get("type") == "click":
                if not key or _bytes(key) > MAX_KEY:
                    raise MenuError(f"key of {sname!r} is {_bytes(key)} bytes "
                                    f"(WeChat allows 1-{MAX_KEY})")
                if key in keys:
                    raise MenuError(f"key {key!r} is used twice")
                keys.add(key)
    return data
