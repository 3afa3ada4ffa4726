"""Demo data for `make run`: one bound customer per tier (openid o_demo_<tier>), family
members, and policies that exercise every counting rule."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlmodel import Session, func, select

from bot.domain import accounts
from bot.infra.db import engine_for
from bot.domain.identity import id_birth_date, id_sex, make_id_number
from bot.domain.rules import load_rules
from bot.domain.tier_engine import recompute
from models import Customer, FamilyMember, Institution, Policy, WechatUser


def _policy(no: str, *, premium="0", single="0", topup="0", lump="0", irregular="0",
            effective: date, years=10, status="in_force", mode="regular", cooling_days=15,
            pledged=False, loan=False, liabilities="hospitalization;critical_illness") -> dict:
    return dict(policy_no=no, product_name="安盛盛世年金保险" if mode == "single" else "安盛终身寿险",
                liabilities=liabilities, payment_mode=mode,
                annualized_basic_premium=Decimal(premium), single_premium=Decimal(single),
                annual_regular_topup=Decimal(topup), initial_lump_sum_topup=Decimal(lump),
                irregular_topup=Decimal(irregular), effective_date=effective,
                payment_years=years, status=status,
                cooling_off_end_date=effective + timedelta(days=cooling_days),
                pledged=pledged, policy_loan=loan)


def demo_people(today: date) -> list[dict]:
    """Who the demo holds. Dates are relative to today so the story stays true."""
    y = today.year
    recent = today - timedelta(days=5)  # still in its cooling-off period
    return [
        dict(tier="diamond", name="钱多多", phone="13800000001", birth=date(1975, 2, 3), sex="F",
             family=[("spouse", "孙大成", date(1973, 8, 9), "M"), ("child", "孙小雨", date(2005, 5, 1), "F")],
             policies=[_policy("DM2019000001", premium="600000", effective=date(2019, 3, 15)),
                       _policy("DM2021000002", single="3000000", mode="single", years=1,
                               effective=date(y - 2, 9, 1)),
                       _policy("DM2023000003", premium="80000", topup="50000", lump="200000",
                               irregular="30000", effective=date(2023, 1, 10))]),
        dict(tier="platinum", name="周明", phone="13800000002", birth=date(1980, 7, 21), sex="M",
             family=[("parent", "周建国", date(1950, 1, 30), "M")],
             policies=[_policy("PT2020000001", premium="300000", effective=date(2020, 6, 1)),
                       _policy("PT2022000002", premium="50000", effective=date(2022, 4, 2), pledged=True),
                       _policy("PT2024000003", premium="20000", effective=recent, cooling_days=15)]),
        dict(tier="gold", name="吴芳", phone="13800000003", birth=date(1985, 11, 11), sex="F",
             family=[("child", "吴乐乐", date(2012, 3, 3), "M")],
             policies=[_policy("GD2018000001", premium="90000", effective=date(2018, 2, 1)),
                       _policy("GD2021000002", premium="40000", effective=date(2021, 5, 5), loan=True),
                       _policy("GD2022000003", premium="15000", effective=date(2022, 8, 8))]),
        dict(tier="pearl", name="郑强", phone="13800000004", birth=date(1990, 4, 4), sex="M",
             family=[],
             policies=[_policy("PL2023000001", premium="30000", effective=date(2023, 3, 3)),
                       _policy("PL2015000002", premium="100000", effective=date(2010, 1, 1), years=5),
                       _policy("PL2019000003", premium="60000", effective=date(2019, 1, 1),
                               status="surrendered")]),
        dict(tier=None, name="赵敏", phone="13800000006", birth=date(1988, 6, 6), sex="F",
             family=[("parent", "赵德", date(1958, 2, 2), "M")],
             policies=[_policy("UB2022000001", premium="45000", effective=date(2022, 9, 9))]),
        dict(tier="mass", name="王平", phone="13800000005", birth=date(1995, 9, 9), sex="F",
             family=[],
             policies=[_policy("MS2024000001", premium="8000", effective=date(2024, 7, 1)),
                       _policy("MS2020000002", premium="50000", effective=date(2020, 1, 1),
                               status="lapsed")]),
    ]


# code, name, city, address, kind, services, phone, closed weekdays, closed dates
DEMO_INSTITUTIONS = [
    ("BJ-C01", "美年大健康北京西直门分院", "北京", "北京市西城区西直门外大街1号", "commercial",
     "checkup", "010-66001234", "", ""),
    ("BJ-H01", "北京协和医院国际医疗部", "北京", "北京市东城区帅府园1号", "tertiary_hospital",
     "checkup;expert_outpatient;special_exam", "010-69156114", "sun", ""),
    ("BJ-D01", "瑞尔齿科北京国贸诊所", "北京", "北京市朝阳区建国门外大街1号国贸写字楼", "commercial",
     "dental", "010-65052255", "", ""),
    ("SH-C01", "爱康国宾上海陆家嘴体检中心", "上海", "上海市浦东新区陆家嘴环路1000号", "commercial",
     "checkup", "021-58880000", "mon", ""),
    ("SH-H01", "复旦大学附属华山医院", "上海", "上海市静安区乌鲁木齐中路12号", "tertiary_hospital",
     "checkup;expert_outpatient;special_exam", "021-52889999", "", ""),
    ("SH-D01", "拜博口腔上海静安门诊", "上海", "上海市静安区南京西路1266号", "commercial",
     "dental", "021-62880000", "", "{christmas}"),
    ("GZ-H01", "中山大学附属第一医院", "广州", "广州市越秀区中山二路58号", "tertiary_hospital",
     "checkup;expert_outpatient;special_exam", "020-28823388", "", ""),
    ("GZ-D01", "广州维乐口腔天河门诊", "广州", "广州市天河区天河路385号", "commercial",
     "dental", "020-38888888", "sat;sun", ""),
]


def load_institutions(session: Session, today: date) -> None:
    """The demo's institutions (upserted by code): three cities, both kinds, closed days."""
    christmas = date(today.year, 12, 25).isoformat()
    for code, name, city, address, kind, services, phone, weekdays, dates in DEMO_INSTITUTIONS:
        row = session.exec(select(Institution).where(Institution.code == code)).first()
        row = row or Institution(code=code, name=name, city=city, address=address, kind=kind,
                                 services=services, phone=phone)
        row.closed_weekdays, row.closed_dates = weekdays, dates.format(christmas=christmas)
        session.add(row)


# The demo's console accounts (/admin): openid, name, role, login, password. Demo only: the
# passwords are printed and in the README.
DEMO_STAFF = (("o_demo_admin", "演示管理员", "admin", "admin", "vip-demo-admin"),
              ("o_demo_specialist", "演示专员", "specialist", "specialist", "vip-demo-specialist"))
DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD = DEMO_STAFF[0][3], DEMO_STAFF[0][4]


def load_demo_staff(session: Session, now: datetime) -> None:
    """The demo admin and specialist, with their console logins (kept when present)."""
    from bot.infra.passwords import hash_password
    from models import Staff

    for openid, name, role, login, password in DEMO_STAFF:
        if session.get(Staff, openid) is None:
            member = accounts.save_staff(session, openid, name, role, now, login=login)
            member.password_hash = hash_password(password)


def load_demo(settings, *, if_empty: bool = False) -> str:
    engine = engine_for(settings, pool_timeout=30)
    rules = load_rules(settings.rules_file)
    now = datetime.now(settings.tz)
    with Session(engine) as session:
        if if_empty and session.exec(select(func.count()).select_from(Customer)).one():
            return ("demo data not loaded: the database already has customers\n"
                    + _try_binding(*_unbound_person(now.date())))
        load_institutions(session, now.date())
        load_demo_staff(session, now)
        for seq, person in enumerate(demo_people(now.date()), start=1):
            number = _demo_id_number(seq, person)
            customer = accounts.customer_by_id_number(session, number)
            if customer is None:
                customer = Customer(id_number=number, name=person["name"], phone=person["phone"],
                                    sex=id_sex(number), birth_date=id_birth_date(number))
                session.add(customer)
                session.flush()
            for values in person["policies"]:
                policy = session.exec(select(Policy).where(
                    Policy.policy_no == values["policy_no"])).first() or Policy(**values,
                                                                                customer_id=customer.id)
                session.add(policy)
            for i, (relation, name, birth, sex) in enumerate(person["family"]):
                fam_no = make_id_number("310101", birth, 200 + seq * 10 + i, sex)
                exists = session.exec(select(FamilyMember).where(
                    FamilyMember.customer_id == customer.id, FamilyMember.id_number == fam_no)).first()
                if exists is None:
                    session.add(FamilyMember(customer_id=customer.id, relation=relation, name=name,
                                             id_number=fam_no, phone=""))
            if person["tier"] is None:  # left unbound, for trying 绑定
                unbound = (person["name"], number, person["phone"])
                continue
            openid = f"o_demo_{person['tier']}"
            if session.get(WechatUser, openid) is None:
                session.add(WechatUser(openid=openid, following=True, subscribed_at=now))
            accounts.bind(session, openid, customer, now)
        session.commit()
    report = recompute(engine, rules, now.date())
    engine.dispose()
    return ("demo data loaded: customers bound to o_demo_diamond, o_demo_platinum, o_demo_gold, "
            "o_demo_pearl and o_demo_mass (chat --openid o_demo_gold); "
            f"{len(DEMO_INSTITUTIONS)} institutions in 北京, 上海 and 广州;\n"
            f"console (/admin) logins: {DEMO_STAFF[0][3]} / {DEMO_STAFF[0][4]} (admin), "
            f"{DEMO_STAFF[1][3]} / {DEMO_STAFF[1][4]} (specialist);\n"
            + _try_binding(*unbound) + "\n" + report.render())


def _demo_id_number(seq: int, person: dict) -> str:
    return make_id_number("110105", person["birth"], 100 + seq, person["sex"])


def _unbound_person(today) -> tuple[str, str, str]:
    """The demo policyholder left unbound, for trying 绑定: name, ID number, phone."""
    for seq, person in enumerate(demo_people(today), start=1):
        if person["tier"] is None:
            return person["name"], _demo_id_number(seq, person), person["phone"]
    raise LookupError("the demo has no unbound policyholder")


def _try_binding(name: str, number: str, phone: str) -> str:
    return (f"to try 绑定 from a new openid: {name}, ID number {number}, phone {phone} "
            "(the SMS code appears in the server log)")
