"""The `tencent` SMS provider, through Tencent Cloud's own SDK, against a loopback double of
its API (reached through the SDK's endpoint setting, scheme http). The double answers in
the API's real format: {"Response": {"SendStatusSet": [...], "RequestId"}} or
{"Response": {"Error": {"Code", "Message"}, "RequestId"}}."""
from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI, Request

from bot.infra.sms import SmsError, SmsRejected, TencentSms, make_sms
from tests.conftest import _serve, _settings


@pytest.fixture(scope="module")
def tencent_api():
    app = FastAPI()
    app.state.sent, app.state.fail_next = [], []

    @app.post("/")
    async def api(request: Request):
        body = await request.json()
        rid = str(uuid.uuid4())
        assert request.headers["X-TC-Action"] == "SendSms"
        assert request.headers["Authorization"].startswith("TC3-HMAC-SHA256 Credential=AKIDtest/")
        if app.state.fail_next:
            code = app.state.fail_next.pop(0)
            return {"Response": {"Error": {"Code": code, "Message": "simulated"}, "RequestId": rid}}
        statuses = []
        for phone in body["PhoneNumberSet"]:
            ok = phone.startswith("+861") and len(phone) == 14
            statuses.append({"SerialNo": uuid.uuid4().hex if ok else "", "PhoneNumber": phone,
                             "Fee": 1 if ok else 0, "SessionContext": "",
                             "Code": "Ok" if ok else "InvalidParameterValue.IncorrectPhoneNumber",
                             "Message": "send success" if ok else "incorrect number",
                             "IsoCode": "CN"})
            if ok:
                app.state.sent.append(body)
        return {"Response": {"SendStatusSet": statuses, "RequestId": rid}}

    server, thread = _serve(app)
    yield app
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def provider(tencent_api):
    tencent_api.state.sent.clear()
    tencent_api.state.fail_next.clear()
    return TencentSms("AKIDtest", "tc-secret", app_id="1400000000", sign_name="工银安盛人寿",
                      templates={"bind_code": "100001", "reminder": "100002"},
                      endpoint=tencent_api.state.base_url)


def test_sends_a_signed_template_with_parameters(provider, tencent_api):
    provider.send_sms("13912345678", "bind_code", ["123456", 5], "ignored text")
    [body] = tencent_api.state.sent
    assert body["PhoneNumberSet"] == ["+8613912345678"]
    assert (body["SmsSdkAppId"], body["SignName"], body["TemplateId"]) == (
        "1400000000", "工银安盛人寿", "100001")
    assert body["TemplateParamSet"] == ["123456", "5"]


@pytest.mark.parametrize("code", ["LimitExceeded.PhoneNumberThirtySecondLimit",
                                  "LimitExceeded.DeliveryFrequencyLimit", "InternalError.Timeout"])
def test_rate_limits_are_retried(provider, tencent_api, code):
    tencent_api.state.fail_next.append(code)
    with pytest.raises(SmsError, match=code):
        provider.send_sms("13912345678", "reminder", ["a"], "")


@pytest.mark.parametrize("code", ["FailedOperation.PhoneNumberParseFail",
                                  "InvalidParameterValue.TemplateParameterFormatError"])
def test_invalid_requests_are_refused_for_good(provider, tencent_api, code):
    tencent_api.state.fail_next.append(code)
    with pytest.raises(SmsRejected, match=code):
        provider.send_sms("13912345678", "reminder", ["a"], "")


def test_an_invalid_number_in_the_status_set_is_refused(provider, tencent_api):
    with pytest.raises(SmsRejected, match="IncorrectPhoneNumber"):
        provider.send_sms("1391234", "reminder", ["a"], "")
    assert tencent_api.state.sent == []


def test_unknown_template_is_refused(provider):
    with pytest.raises(SmsRejected, match="TENCENT_SMS_TEMPLATES"):
        provider.send_sms("13912345678", "nope", [], "")


def test_settings_build_the_provider(tencent_api, tmp_path):
    s = _settings(f"sqlite:///{tmp_path}/x.db", sms_provider="tencent", tencent_secret_id="AKIDtest",
                  tencent_secret_key="tc-secret", tencent_sms_app_id="1400000000",
                  tencent_sms_sign_name="签名", tencent_sms_endpoint=tencent_api.state.base_url,
                  tencent_sms_templates="bind_code=100001, booking_confirmed=100003")
    sms = make_sms(s)
    assert isinstance(sms, TencentSms) and sms.templates["booking_confirmed"] == "100003"


def test_outbox_dead_letters_a_refused_number_and_retries_a_limit(services, tencent_api, provider):
    from datetime import datetime, timezone

    from sqlmodel import Session

    from bot.domain import notify
    from bot.infra.outbox import Dispatcher
    from tests.support.outbox import rows

    now = datetime.now(timezone.utc)
    d = Dispatcher(services.engine, services.settings, services.wechat, provider,
                   prepare=notify.prepare, jitter=lambda: 0.0)
    with Session(services.engine) as s:
        bad = notify.binding_code(s, "1391234", "111111", 5, now, key="bad")
        good = notify.binding_code(s, "13912345678", "222222", 5, now, key="good")
        s.commit()
    d.run_once(ids=[bad])
    tencent_api.state.fail_next.append("LimitExceeded.PhoneNumberOneHourLimit")
    d.run_once(ids=[good])
    statuses = {r.dedupe_key: (r.status, r.last_error or "") for r in rows(services)}
    assert statuses["bad"][0] == "dead" and "IncorrectPhoneNumber" in statuses["bad"][1]
    assert statuses["good"][0] == "pending" and "LimitExceeded" in statuses["good"][1]
