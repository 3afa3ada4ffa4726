"""The programme's fixed vocabularies, each defined once. Tier codes and service codes are
data in rules.toml; these are the words the code itself branches on. The values are what
the database stores and what the CSV imports accept."""
from __future__ import annotations

from enum import StrEnum


class PolicyStatus(StrEnum):
    IN_FORCE = "in_force"  # 有效
    LAPSED = "lapsed"  # 失效
    SURRENDERED = "surrendered"  # 退保
    TERMINATED = "terminated"  # 终止
    MATURED = "matured"  # 满期


class PaymentMode(StrEnum):
    REGULAR = "regular"  # 期交
    SINGLE = "single"  # 趸交


class Liability(StrEnum):
    HOSPITALIZATION = "hospitalization"
    CRITICAL_ILLNESS = "critical_illness"
    MILD_ILLNESS = "mild_illness"
    DISABILITY = "disability"


class Relation(StrEnum):
    SPOUSE = "spouse"  # 配偶
    PARENT = "parent"  # 父母
    CHILD = "child"  # 子女


class Role(StrEnum):
    SPECIALIST = "specialist"  # 健康专员
    ADMIN = "admin"


STAFF_ROLES: tuple[str, ...] = tuple(Role)


class InstitutionKind(StrEnum):
    COMMERCIAL = "commercial"  # 商业体检机构 / 专科机构
    TERTIARY_HOSPITAL = "tertiary_hospital"  # 三甲医院


class BookingStatus(StrEnum):
    SUBMITTED = "submitted"  # 受理
    CONFIRMED = "confirmed"  # 预约成功
    COMPLETED = "completed"  # 已完成
    NO_SHOW = "no_show"  # 爽约 (counted)
    CANCELLED = "cancelled"  # 已取消 (free: not counted)
    CANCELLED_LATE = "cancelled_late"  # 逾期取消 (counted)


WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# The everyday words customers use for a relation (docs/programme.md), with the
# sex they imply (None: either). The formal words come first.
RELATION_WORDS: dict[str, tuple[Relation, str | None]] = {
    "配偶": (Relation.SPOUSE, None), "爱人": (Relation.SPOUSE, None),
    "老公": (Relation.SPOUSE, "M"), "丈夫": (Relation.SPOUSE, "M"), "先生": (Relation.SPOUSE, "M"),
    "老婆": (Relation.SPOUSE, "F"), "妻子": (Relation.SPOUSE, "F"), "太太": (Relation.SPOUSE, "F"),
    "媳妇": (Relation.SPOUSE, "F"),
    "父母": (Relation.PARENT, None),
    "爸": (Relation.PARENT, "M"), "爸爸": (Relation.PARENT, "M"), "父亲": (Relation.PARENT, "M"),
    "老爸": (Relation.PARENT, "M"), "我爸": (Relation.PARENT, "M"),
    "妈": (Relation.PARENT, "F"), "妈妈": (Relation.PARENT, "F"), "母亲": (Relation.PARENT, "F"),
    "老妈": (Relation.PARENT, "F"), "我妈": (Relation.PARENT, "F"),
    "子女": (Relation.CHILD, None), "孩子": (Relation.CHILD, None), "小孩": (Relation.CHILD, None),
    "儿子": (Relation.CHILD, "M"), "女儿": (Relation.CHILD, "F"),
}
# Relatives and others who are not immediate family (直系亲属 = spouse, parents, children).
NOT_FAMILY_WORDS: tuple[str, ...] = (
    "哥哥", "姐姐", "弟弟", "妹妹", "兄弟", "姐妹", "爷爷", "奶奶", "外公", "外婆", "姥姥", "姥爷",
    "孙子", "孙女", "外孙", "外孙女", "岳父", "岳母", "公公", "婆婆", "叔叔", "阿姨", "舅舅", "姑姑",
    "侄子", "侄女", "朋友", "同事", "亲戚", "女婿", "儿媳")


# What a symptom description or a doctor's referral names (特种检查, 专家门诊: 胃疼是不是要做胃镜
# describes symptoms, 检查费多少钱 does not). A question with none of these at a symptoms step
# is a question, answered before the step is asked again.
SYMPTOM_WORDS: tuple[str, ...] = (
    "疼", "痛", "酸", "胀", "麻", "痒", "肿", "晕", "咳", "喘", "吐", "泻", "烧", "热", "冷", "血",
    "不舒服", "不适", "难受", "乏力", "失眠", "便秘", "结节", "囊肿", "息肉", "包块", "肿块", "增生",
    "异常", "偏高", "偏低", "指标", "报告", "复查", "医生", "大夫", "建议", "怀疑", "确诊", "病",
    "炎", "癌", "瘤", "胃", "肠", "肝", "胆", "肺", "心", "肾", "脑", "头", "胸", "腹", "腰", "背",
    "颈", "膝", "关节", "乳", "甲状腺", "前列腺", "子宫", "卵巢", "眼", "耳", "鼻", "喉", "牙",
)
# Answers that describe nothing (the symptoms step asks again).
NO_DESCRIPTION: frozenset[str] = frozenset({
    "不知道", "不清楚", "不晓得", "没有", "没", "无", "没什么", "没啥", "不想说", "随便", "都行",
    "不用", "不需要", "算了", "略", "暂无", "还没", "没症状", "无症状",
})


def describes_symptoms(text: str) -> bool:
    """Whether the text names a symptom, a body part or a doctor's referral."""
    return any(word in text for word in SYMPTOM_WORDS)
