"""Template-message values fitted to WeChat's field rules (May 2023), at each type's limit;
and the WeChat double, which checks the same rules on its own, accepts what was fitted and
answers 47003 to what breaks them."""
from __future__ import annotations

from datetime import date, datetime

import pytest

from bot.infra import wxfields as f
from bot.infra.wechat_api import WeChatApiError
from bot.wechat.double import field_error

HAN = "预"


@pytest.mark.parametrize("key,value,expected", [
    ("thing1", HAN * 20, HAN * 20),  # at the limit: kept
    ("thing1", HAN * 21, HAN * 19 + "…"),  # one over: cut to 20 with an ellipsis
    ("character_string2", "A" * 32, "A" * 32),
    ("character_string2", "A" * 33, "A" * 32),
    ("character_string2", "YY2612020001号", "YY2612020001"),  # no Chinese
    ("number3", "1" * 32, "1" * 32),
    ("number3", "1" * 33, "1" * 32),
    ("number3", "共 12.50 次", "12.50"),
    ("letter4", "abc" * 11, ("abc" * 11)[:32]),
    ("symbol5", "!@#$%^", "!@#$%"),
    ("amount6", "1234567890", "¥1234567890"),  # ten digits: whole yuan
    ("amount6", "12345678901.5", "¥1234567890"),
    ("amount6", "99.5", "¥99.50"),
    ("phone_number7", "+86-010-12345678", "+86-010-12345678"),
    ("phone_number7", "+86-0755-123456789012", "+86-0755-12345678"),  # 17
    ("car_number8", "粤A8Z888挂", "粤A8Z888挂"),
    ("car_number8", "粤A8Z8889999挂", "粤A8Z888挂"),
    ("name9", "欧阳" + HAN * 8, "欧阳" + HAN * 8),  # 10 Chinese
    ("name9", "欧阳" + HAN * 9, "欧阳" + HAN * 8),
    ("name9", "A" * 21, "A" * 20),
    ("phrase10", "预约成功", "预约成功"),
    ("phrase10", "预约已经成功", "预约已经成"),  # 5 Chinese characters
    ("phrase10", "OK", "通知"),  # no Chinese at all: a neutral word
    ("time11", datetime(2026, 12, 3, 9, 5), "2026年12月3日 09:05"),
    ("time11", "9:30", "09:30"),
    ("date12", date(2026, 1, 2), "2026年1月2日"),
    ("date12", "2026-12-03", "2026年12月3日"),
])
def test_values_are_fitted_at_each_limit(key, value, expected):
    out = f.fit(key, value)
    assert out == expected
    assert field_error(key, out) is None  # the double (WeChat's rules) accepts it


@pytest.mark.parametrize("key,value", [
    ("thing1", HAN * 21), ("character_string1", "预约号12"), ("character_string1", "A" * 33),
    ("phrase1", "预约已经成功"), ("phrase1", "OK"), ("time1", "2026-12-03 09:30"),
    ("date1", "12/03/2026"), ("name1", HAN * 11), ("amount1", "¥12345678901"),
    ("number1", "12a"), ("first", "您好"), ("remark", "谢谢"), ("car_number1", "粤A8Z8889999"),
    ("phone_number1", "1" * 18), ("symbol1", "abc"),
])
def test_the_double_refuses_what_breaks_the_rules(key, value):
    assert field_error(key, value) is not None


def test_the_double_answers_47003_and_no_colours(services, sent):
    body = {"touser": "oX", "template_id": "t", "data": {"thing1": {"value": HAN * 21}}}
    with pytest.raises(WeChatApiError) as err:
        services.wechat.post("message/template/send", data=body)
    assert err.value.errcode == 47003
    body["data"] = {"thing1": {"value": "好", "color": "#173177"}}
    with pytest.raises(WeChatApiError) as err:
        services.wechat.post("message/template/send", data=body)
    assert err.value.errcode == 47003
    body["data"] = f.template_data({"thing1": HAN * 30, "time2": datetime(2026, 12, 3, 9, 30)})
    assert services.wechat.post("message/template/send", data=body)["msgid"]
    assert len(sent) == 1


def test_the_configured_templates_have_no_first_or_remark(tmp_path):
    from bot.domain.notify import load_templates
    from bot.infra.config import ROOT

    templates = load_templates(ROOT / "templates.toml")
    assert {"booking_received", "booking_confirmed", "booking_cancelled", "reminder",
            "tier_changed", "reply_notice"} <= set(templates)
    bad = tmp_path / "t.toml"
    bad.write_text('[x]\ntemplate_id = "t"\nfields = { first = "a" }\n', encoding="utf-8")
    with pytest.raises(ValueError, match="first/remark"):
        load_templates(bad)
