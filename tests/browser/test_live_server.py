"""The browser-test harness itself: the real server answers Chromium, at both sizes."""


def test_the_live_server_answers_the_browser(live_server, page):
    page.goto(live_server.url + "/healthz")
    assert page.inner_text("body").strip() == "ok"


def test_the_phone_page_is_a_phone(phone, ui):
    """A page made for phones (the viewport meta tag) is laid out 375 px wide."""
    phone.set_content('<meta name="viewport" content="width=device-width, initial-scale=1">'
                      "<p>你好</p>")
    assert phone.evaluate("[window.innerWidth, window.innerHeight]") == [375, 812]
    assert ui.no_horizontal_scroll(phone)


def test_the_live_server_has_the_demo_customers(live_server):
    from sqlmodel import Session, select

    from models import WechatUser

    with Session(live_server.app.state.services.engine) as session:
        openids = set(session.exec(select(WechatUser.openid)).all())
    assert {"o_demo_diamond", "o_demo_gold", "o_demo_mass"} <= openids
