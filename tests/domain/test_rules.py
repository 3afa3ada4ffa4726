"""rules.toml: the programme as shipped, the helpers, and one clear line for each bad file."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bot.domain.rules import RulesError, load_rules
from tests.support import ROOT

RULES_FILE = ROOT / "rules.toml"
TIERS = ["diamond", "platinum", "gold", "pearl", "mass"]


@pytest.fixture(scope="module")
def rules():
    return load_rules(RULES_FILE)


def test_tiers_highest_first(rules):
    assert [(t.code, t.name, t.threshold) for t in rules.tiers] == [
        ("diamond", "钻石", 1000000), ("platinum", "铂金", 300000), ("gold", "黄金", 100000),
        ("pearl", "明珠", 30000), ("mass", "大众", 0)]


def test_contribution_rules(rules):
    c = rules.contribution
    assert dict(c.weights.items()) == {
        "annualized_basic_premium": Decimal("1"), "single_premium": Decimal("0.1"),
        "annual_regular_topup": Decimal("0.1"), "initial_lump_sum_topup": Decimal("0.1"),
        "irregular_topup": Decimal("0.1")}
    assert all(isinstance(w, Decimal) for _, w in c.weights.items())
    assert (c.tail_years, c.single_premium_payment_years) == (3, 1)
    assert rules.reviews.month_days == ((6, 30), (12, 31))


# The service matrix of docs/programme.md: tiers entitled, quota, family may use.
MATRIX = {
    "service_festival": (TIERS, "events", False),
    "hospital_visit": (TIERS[:4], "per_claim", False),
    "health_advisor": (TIERS[:4], "unlimited", False),
    "dental": (TIERS[:3], 1, True),
    "checkup": (TIERS[:2], 1, True),
    "expert_outpatient": (TIERS[:2], 1, True),
    "special_exam": (TIERS[:1], 1, True),
}


def test_service_matrix(rules):
    assert {s.code: (list(s.tiers), s.quota, s.family) for s in rules.services} == MATRIX
    assert [s.name for s in rules.services] == [
        "客户服务节", "理赔住院探视", "健康顾问", "洁牙", "健康体检", "专家门诊预约", "特种检查预约"]
    assert rules.service("dental").per_year == 1
    assert rules.service("health_advisor").per_year is None


@pytest.mark.parametrize("tier,expected", [
    ("diamond", list(MATRIX)), ("platinum", list(MATRIX)[:6]), ("gold", list(MATRIX)[:4]),
    ("pearl", list(MATRIX)[:3]), ("mass", ["service_festival"])])
def test_services_for(rules, tier, expected):
    assert [s.code for s in rules.services_for(tier)] == expected


def test_packages(rules):
    dental = rules.service("dental")
    assert [p.name for t in TIERS[:3] for p in dental.packages_for(t)] == [
        "尊享洁牙套餐", "高端洁牙套餐", "经典洁牙套餐"]
    assert "喷砂" in dental.packages_for("diamond")[0].content
    checkup = rules.service("checkup")
    assert [(p.name, p.sex) for p in checkup.packages_for("diamond")] == [
        ("钻石健康体检套餐(男性)", "M"), ("钻石健康体检套餐(女性)", "F"),
        ("钻石特色套餐(心脑血管套餐)", None)]
    assert [p.name for p in checkup.packages_for("diamond", sex="F")] == [
        "钻石健康体检套餐(女性)", "钻石特色套餐(心脑血管套餐)"]
    assert [p.name for p in checkup.packages_for("platinum", sex="M")] == ["铂金健康体检套餐(男性)"]
    assert checkup.packages_for("gold") == ()
    assert "三甲医院" not in checkup.packages_for("platinum")[0].venues
    expert = rules.service("expert_outpatient")
    assert expert.may_name_expert("diamond") and not expert.may_name_expert("platinum")
    assert len(rules.service("special_exam").choices) == 4


def test_basic_services_only_for_vip_tiers(rules):
    assert len(rules.basic_services_for("pearl")) == 7
    assert rules.basic_services_for("diamond") == rules.basic_services_for("pearl")
    assert rules.basic_services_for("mass") == ()
    assert [rules.is_vip(t) for t in TIERS] == [True, True, True, True, False]


@pytest.mark.parametrize("value,tier", [
    ("1000000", "diamond"), ("999999.99", "platinum"), ("300000", "platinum"),
    ("299999.99", "gold"), ("100000.00", "gold"), ("99999.99", "pearl"), ("30000", "pearl"),
    ("29999.99", "mass"), ("0", "mass"), ("-1", "mass"), ("123456789", "diamond")])
def test_tier_for_threshold_and_one_fen_below(rules, value, tier):
    assert rules.tier_for(Decimal(value)).code == tier


def test_tier_helpers(rules):
    assert [rules.tier_rank(t) for t in TIERS] == [4, 3, 2, 1, 0]
    assert [getattr(rules.next_tier(t), "code", None) for t in TIERS] == [
        None, "diamond", "platinum", "gold", "pearl"]
    assert rules.tier("gold").name == "黄金"
    assert rules.lowest.code == "mass"
    with pytest.raises(KeyError):
        rules.tier("silver")
    with pytest.raises(KeyError):
        rules.services_for("silver")


# --- Bad files ---------------------------------------------------------------------------


def edit(old: str, new: str, count: int = 1):
    def apply(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, count)
    return apply


BAD = [
    (edit("threshold = 300000", "threshold = 2000000"),
     "tiers[platinum].threshold: must be lower than tiers[diamond].threshold (1000000)"),
    (edit("threshold = 100000\n", "threshold = 300000\n"),
     "tiers[gold].threshold: must be lower than tiers[platinum].threshold (300000)"),
    (edit("threshold = 0", "threshold = 10"),
     "tiers[mass].threshold: the last (lowest) tier's threshold must be 0"),
    (edit("threshold = 30000\n", "threshold = -1\n"), "tiers[pearl].threshold: "),
    (edit("threshold = 30000\n", "threshold = 30000.001\n"), "tiers[pearl].threshold: "),
    (edit("threshold = 30000\n", 'threshold = "lots"\n'), "tiers[pearl].threshold: "),
    (edit('code = "pearl"', 'code = "gold"'), "tiers[gold]: code 'gold' is used twice"),
    (edit('code = "gold"', 'code = "Gold"'), "tiers[Gold].code: "),
    (edit('name = "明珠"', 'name = ""'), "tiers[pearl].name: "),
    (edit('name = "明珠"\n', ''), "tiers[pearl].name: missing"),
    (edit("threshold = 100000\n", "threshold = 100000\nthresold = 1\n"),
     "tiers[gold].thresold: unknown key"),
    (edit("single_premium = 0.10", "single_premium = 1.5"),
     "contribution.weights.single_premium: "),
    (edit("single_premium = 0.10", "single_premium = -0.1"),
     "contribution.weights.single_premium: "),
    (edit("single_premium = 0.10", "single_premium = 0.12345"),
     "contribution.weights.single_premium: "),
    (edit("irregular_topup = 0.10", ""), "contribution.weights.irregular_topup: missing"),
    (edit("tail_years = 3", "tail_years = -1"), "contribution.tail_years: "),
    (edit("tail_years = 3", "tail_years = 2.5"), "contribution.tail_years: "),
    (edit("single_premium_payment_years = 1", "single_premium_payment_years = 0"),
     "contribution.single_premium_payment_years: "),
    (edit('"06-30"', '"06-31"'), "reviews.downgrade_dates: '06-31' is not a date of every year"),
    (edit('"06-30"', '"02-29"'), "reviews.downgrade_dates: '02-29' is not a date of every year"),
    (edit('"06-30"', '"6/30"'), "reviews.downgrade_dates: '6/30' is not a date"),
    (edit('"06-30"', '"12-31"'), "reviews.downgrade_dates: a date is listed twice"),
    (edit('downgrade_dates = ["06-30", "12-31"]', "downgrade_dates = []"),
     "reviews.downgrade_dates: "),
    (edit('tiers = ["diamond", "platinum", "gold", "pearl"]\nitems',
          'tiers = ["diamond", "silver"]\nitems'),
     "basic_services.tiers: 'silver' is not one of"),
    (edit('tiers = ["diamond", "platinum", "gold"]', 'tiers = ["diamond", "platinum", "golden"]'),
     "services[dental].tiers: 'golden' is not one of"),
    (edit('code = "checkup_platinum_male"\n', 'code = "dental_gold"\n'),
     "services.packages[dental_gold]: code 'dental_gold' is used twice"),
    (edit('tier = "platinum"\ncode = "checkup_platinum_male"', 'tier = "gold"\ncode = "checkup_platinum_male"'),
     "services[checkup].packages[checkup_platinum_male].tier: 'gold' is not one of"),
    (edit('sex = "F"', 'sex = "X"'), "services[checkup].packages[checkup_diamond_female].sex: "),
    (edit('named_expert_tiers = ["diamond"]', 'named_expert_tiers = ["gold"]'),
     "services[expert_outpatient].named_expert_tiers: 'gold' is not one of"),
    (edit("quota = 1", "quota = 0"), "services[dental].quota: must be a whole number of uses"),
    (edit('quota = "unlimited"', 'quota = "weekly"'), "services[health_advisor].quota: must be"),
    (edit("family = true", 'family = "yes"'), "services[dental].family: "),
    (edit('[[services]]\ncode = "dental"', '[[services]]\ncode = "health_advisor"'),
     "services[health_advisor]: code 'health_advisor' is used twice"),
    (edit('customer_pays_fees = ["expert_outpatient", "special_exam"]',
          'customer_pays_fees = ["expert_outpatient", "massage"]'),
     "booking.customer_pays_fees: 'massage' is not one of"),
    (edit('escorted_at_tertiary = ["checkup",', 'escorted_at_tertiary = ["checkup", "checkup",'),
     "booking.escorted_at_tertiary: 'checkup' is listed twice"),
    (edit("months = [7, 8]", "months = [7, 13]"), "festival.months[#2]: Input should be less than or equal to 12"),
    (edit("months = [7, 8]", "months = [0, 8]"), "festival.months[#1]: Input should be greater than or equal to 1"),
    (edit('hours = "09:00-21:00"', 'hours = "21:00-09:00"'),
     "human_service.hours: start must be before end"),
    (edit("max_failures = 5 ", "max_failures = 0 "), "binding.max_failures: "),
    (edit("sms_codes_per_phone_per_day = 10", "sms_codes_per_phone_per_day = 0"),
     "binding.sms_codes_per_phone_per_day: "),
    (edit("[reviews]", "[reviewz]"), "reviewz: unknown key"),
    (edit("[contribution.weights]", "[contribution.weights"), "not valid TOML"),
]


@pytest.mark.parametrize("mutate,message", BAD, ids=[m for _, m in BAD])
def test_bad_rules_give_one_clear_line(tmp_path, mutate, message):
    path = tmp_path / "rules.toml"
    path.write_text(mutate(RULES_FILE.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: "), text
    assert message in text, text


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(RulesError, match=r"nope\.toml: cannot read the rules file"):
        load_rules(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RulesError, match="bin.toml: not UTF-8"):
        load_rules(tmp_path / "bin.toml")


def test_empty_file_names_the_first_missing_key(tmp_path):
    (tmp_path / "empty.toml").write_text("")
    with pytest.raises(RulesError, match=r"empty\.toml: tiers: missing"):
        load_rules(tmp_path / "empty.toml")


def test_rules_are_frozen(rules):
    with pytest.raises(Exception):
        rules.tiers[0].threshold = Decimal(1)


# --- Programme rules that a setting may override -------------------------------------------


def test_hours_festival_binding_and_booking_lists_as_the_handbook_states(rules):
    from datetime import time

    assert rules.festival.months == (7, 8)
    assert rules.human_service.hours == (time(9, 0), time(21, 0))
    b = rules.binding
    assert (b.max_failures, b.lock_minutes, b.customer_max_failures, b.customer_window_minutes,
            b.sms_codes_per_phone_per_hour, b.sms_codes_per_phone_per_day) == (5, 30, 5, 30, 5, 10)
    assert rules.booking.customer_pays_fees == ("expert_outpatient", "special_exam")
    assert rules.booking.escorted_at_tertiary == ("checkup", "expert_outpatient", "special_exam")


def test_limits_at_both_edges(tmp_path):
    text = RULES_FILE.read_text(encoding="utf-8")
    path = tmp_path / "rules.toml"
    for old, good, bad in (("months = [7, 8]", "months = [1, 12]", "months = [1, 13]"),
                           ("max_failures = 5 ", "max_failures = 1 ", "max_failures = 0 ")):
        path.write_text(edit(old, good)(text), encoding="utf-8")
        load_rules(path)
        path.write_text(edit(old, bad)(text), encoding="utf-8")
        with pytest.raises(RulesError):
            load_rules(path)


def test_a_setting_given_overrides_its_rule_and_one_not_given_leaves_it(rules):
    from datetime import time

    from bot.domain.rules import with_settings
    from bot.infra.config import load_settings

    base = dict(_env_file=None, wechat_app_id="wx1234567890abcdef", wechat_app_secret="secret",
                wechat_token="tok", secret_key="0123456789abcdef0123")
    untouched = with_settings(rules, load_settings(**base))
    assert untouched == rules
    over = with_settings(rules, load_settings(**base, bind_max_failures=3, festival_months=(8,),
                                              human_service_hours="08:30-20:00"))
    assert over.binding.max_failures == 3
    assert over.binding.lock_minutes == 30  # not given: the rule's
    assert over.festival.months == (8,)
    assert over.human_service.hours == (time(8, 30), time(20, 0))
