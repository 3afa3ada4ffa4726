"""Booking by chat (洁牙, 体检, 专家门诊, 特种检查): the booking flow, its steps and its entry.
(取消预约 is handlers/cancellation.py; 我的预约 and 确认到场 are handlers/attendance.py.)

Every rule is `bot.domain.bookings.check_booking`, asked at each step with what is known so
far (through `bot.domain.booking_draft.BookingDraft`: `draft(ctx, data)` is the answers so
far over the facts `stored(ctx)` reads at most once per message, so a step's options are
judged without a read per option) and again at commit (`booking_store.submit_booking`,
quota row locked).
"""
from __future__ import annotations

import datetime as dt
import re
import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from bot.conversation import Choice, Context, Flow, FlowData, Invalid, Option, Reply, Router, Step
from bot.conversation.flow import name_core, offered_of
from bot.conversation.intents import Universal, normalize, yes_no
from bot.domain import booking_store as store
from bot.domain import notify
from bot.domain.booking_draft import MEMBER, NEW, SELF, BookingDraft
from bot.domain.bookings import (BookingRequest, Person, Refusal, calendar, escorted,
                                 packages_for)
from bot.domain.dates import is_bare_weekday, parse_date, validate_service_date
from bot.domain.identity import (compact, id_birth_date, id_sex, mask_name, normalize_id_number,
                                 plausible_name, validate_id_number)
from bot.domain.rules import Service
from bot.domain.vocab import NO_DESCRIPTION, NOT_FAMILY_WORDS, RELATION_WORDS, Relation
from bot.infra.sealed import seal, unseal_or_none
from bot.infra.texts import render
from handlers.tiers import held_tier
from menus import INTENTS, SERVICE_OF, VOCABULARY, Key
from models import Customer, FamilyMember

router = Router(VOCABULARY)

EXPERT = "expert_outpatient"  # asks department and hospital preference (and maybe an expert)
SPECIAL = "special_exam"  # asks the symptoms or the doctor's referral (the handbook's basis)
RELATIONS = (Relation.SPOUSE, Relation.PARENT, Relation.CHILD)


def label(kind: str, **kw: Any) -> str:
    """A short option label of this flow (bot/templates/booking/label.j2)."""
    return render("booking/label", kind=kind, **kw)
# Words inside a sentence that name the beneficiary (帮我妈妈约体检): (word, relation, sex or
# None), longest first; one-character words (妈) count only as a whole answer.
WHO = sorted(((w, rel, sex) for w, (rel, sex) in RELATION_WORDS.items() if len(w) >= 2),
             key=lambda hit: -len(hit[0]))
SEALED = "booking:new_member"  # the purpose the new member's name and ID number are sealed for
_FILLER = re.compile(r"帮我|给我|替我|我想|我要|想要|预约|约个|约一下|一下|的|去|做个|做|约")


# --- Facts for the rules ---------------------------------------------------------------------


class BookingData(FlowData):
    key: str = ""  # unique per request: one booking per confirmation
    service: str | None = None
    beneficiary: str | None = None  # self | new | fm:<family member id>
    new_relation: str | None = None
    new_name: str | None = None  # sealed (bot.infra.sealed): nothing readable at rest
    new_id_number: str | None = None  # sealed
    age_pending: str = ""  # sealed ID number whose birth date or sex is being questioned
    new_sex_said: str | None = None  # the sex the relation word implied (老公: M)
    package: str | None = None
    exam: str | None = None
    symptoms: str | None = None  # 特种检查: the symptoms or the doctor's referral
    department: str | None = None
    hospital: str | None = None
    expert: str | None = None
    city: str | None = None
    institution: str | None = None
    date: dt.date | None = None
    confirm: bool | None = None
    date_note: str = ""  # why a date named at entry could not be kept
    time_said: str = ""  # a time of day said with the date (下午3点): a wish for the specialist


def bound_customer(ctx: Context) -> Customer:
    """The bound customer inside a flow (one may unbind on another device mid-flow)."""
    customer = ctx.customer
    if customer is None:  # unbound mid-flow
        raise Invalid("binding/needed", end=True)
    return customer


def _service(ctx: Context, data: BookingData) -> Service:
    return ctx.services.rules.service(data.service)


def stored(ctx: Context, *, fresh: bool = False) -> store.Stored:
    """What the database says about this customer's booking, each fact read at most once
    per message (kept in the message's memo; `fresh`: read again, e.g. after the commit's
    re-check under the lock)."""
    customer = bound_customer(ctx)
    return ctx.memo((store.Stored, customer.id), lambda: store.Stored(ctx.conn, customer.id),
                    fresh=fresh)


def draft(ctx: Context, data: BookingData) -> BookingDraft:
    """The booking as far as answered, over this message's facts (no read of its own)."""
    customer = bound_customer(ctx)
    new_person = None
    if data.beneficiary == NEW:
        number = _unseal(ctx, data.new_id_number)
        if number and data.new_relation:
            new_person = Person(name=_unseal(ctx, data.new_name), id_number=number,
                                sex=id_sex(number), relation=data.new_relation,
                                registered=False)
    return BookingDraft(rules=ctx.services.rules, calendar=calendar(), now=ctx.now,
                        tier=held_tier(ctx, customer).code, me=store.me(customer),
                        known=stored(ctx), service=data.service, beneficiary=data.beneficiary,
                        new_person=new_person, package=data.package,
                        institution=data.institution, date=data.date)


def _seal(ctx: Context, value: str) -> str:
    return seal(ctx.services.settings.secret_key, SEALED, value)


def _unseal(ctx: Context, token: str | None) -> str:
    return unseal_or_none(ctx.services.settings.secret_key, SEALED, token) or ""


def refusal(ctx: Context, code: Refusal, d: BookingDraft, req: BookingRequest | None = None, *,
            goto: str | None = None, end: bool = False) -> Invalid:
    """The refusal `code` of `req` (the draft's request when None) as an Invalid whose
    template says why and what to do instead."""
    req = req or d.request()
    rules = ctx.services.rules
    service = rules.service(req.service)
    today = ctx.today
    kw: dict[str, Any] = dict(service=service, tier=rules.tier(req.tier), place=req.institution,
                              date=req.date, window=rules.booking.window_days,
                              latest=today + timedelta(days=rules.booking.window_days),
                              earliest=earliest(ctx))
    if code == Refusal.QUOTA_USED:
        spent, spare = d.but(service=req.service).spent_years()
        kw.update(years=[req.date.year] if req.date else spent,
                  next_year=spare[0] if spare else None)
    if code in (Refusal.PACKAGE_SEX, Refusal.VENUE):
        kw["package"] = next(p for p in service.packages if p.code == req.package)
    if code == Refusal.PACKAGE_SEX:
        kw.update(person=req.beneficiary,
                  fits=[p.name for p in packages_for(service, req.tier, req.beneficiary)])
    if code == Refusal.NOT_ENTITLED:
        needed = rules.lowest_tier_with(service.code)
        kw.update(needed=needed, needed_is_top=needed == rules.tiers[0],
                  mine=[{"service": o.item, "used": o.used, "left": o.left}
                        for o in d.services()])
    return Invalid(f"booking/refusal/{code}", goto=goto, end=end, **kw)


def _check(ctx: Context, data: BookingData, *, goto: str | None = None, **override: Any) -> None:
    d = draft(ctx, data)
    req = d.request(**override)
    code = d.judge(req)
    if code is not None:
        raise refusal(ctx, code, d, req, goto=goto or STEP_OF.get(code), end=code in ENDS)


# A refusal at commit sends the customer back to the step that can fix it.
STEP_OF = {Refusal.NOT_FAMILY: "beneficiary", Refusal.FAMILY_NOT_ALLOWED: "beneficiary",
           Refusal.NO_PACKAGE: "package", Refusal.PACKAGE_SEX: "package",
           Refusal.NOT_OFFERED: "city", Refusal.VENUE: "city", Refusal.CLOSED: "date",
           Refusal.PAST: "date", Refusal.TOO_SOON: "date", Refusal.BEYOND_WINDOW: "date",
           Refusal.QUOTA_USED: "date"}
ENDS = {Refusal.NOT_ENTITLED, Refusal.NOT_BOOKABLE}


# --- Steps ---------------------------------------------------------------------------------


def service_options(ctx: Context, data: BookingData) -> list[Option]:
    return [Option(o.code, o.item.name, note=label("left", left=o.left))
            for o in draft(ctx, data).options("service")]


def service_context(ctx: Context, data: BookingData) -> dict:
    rules = ctx.services.rules
    tier = held_tier(ctx, bound_customer(ctx))
    mine = {s.code for s in rules.bookable_services_for(tier.code)}
    others = [{"service": rules.service(c), "tier": rules.lowest_tier_with(c)}
              for c in rules.booking.services if c not in mine]
    return {"year": ctx.today.year, "others": others}


def check_service(ctx: Context, code: str, data: BookingData) -> str:
    data.service = code
    _check(ctx, data, goto="service")
    return code


def beneficiary_options(ctx: Context, data: BookingData) -> list[Option]:
    options = []
    for o in draft(ctx, data).options("beneficiary"):
        if o.code == SELF:
            options.append(Option(SELF, label("self", name=mask_name(o.item.name)),
                                  words=("本人", "自己", "我", "我自己")))
        else:
            options.append(Option(o.code, label("relative", relation=o.item.relation,
                                                name=mask_name(o.item.name))))
    options.append(Option(NEW, label("add_family"), words=("添加家人", "添加", "新增家人", "新家人")))
    return options


def check_beneficiary(ctx: Context, code: str, data: BookingData) -> str:
    data.beneficiary = code
    if code != NEW:
        _check(ctx, data, goto="beneficiary")
    return code


def _not_family(text: str) -> None:
    """Refuse, saying why, a relative who is not immediate family (我哥哥)."""
    norm = normalize(text)
    word = next((w for w in NOT_FAMILY_WORDS if w in norm), None)
    if word is not None:
        raise Invalid("booking/refusal/not_immediate_family", word=word)


def parse_beneficiary(ctx: Context, text: str, data: BookingData) -> str | None:
    """The beneficiary step's own parser: a family member's full name on file (the list shows
    it masked), or a relation word (老公, 我妈) naming the one member on file it fits, or a
    new member of that relation when there is none."""
    family = stored(ctx).family
    named = [m for m in family if _same_name(m.name, text)]  # the full name, as on file
    if len(named) == 1:
        return f"{MEMBER}{named[0].family_member_id}"
    _not_family(text)
    norm = normalize(text)
    hit = RELATION_WORDS.get(norm) or next(
        ((rel, sex) for w, rel, sex in WHO if w in norm), None)
    if hit is None:
        return None
    relation, sex = hit
    members = [m for m in family if m.relation == relation and sex in (None, m.sex)]
    if len(members) == 1:
        return f"{MEMBER}{members[0].family_member_id}"
    if members:
        return None  # several fit: the customer picks one from the list
    _one_spouse(ctx, relation)  # 老公 with a wife on file
    data.new_relation, data.new_sex_said = relation.value, sex
    return NEW


def relation_options(ctx: Context, data: BookingData) -> list[Option]:
    return [Option(r.value, label("relation", relation=r.value),
                   words=tuple(w for w, (rel, _) in RELATION_WORDS.items() if rel == r))
            for r in RELATIONS]


def parse_relation(ctx: Context, text: str, data: BookingData) -> None:
    _not_family(text)
    return None


def _one_spouse(ctx: Context, relation: str) -> None:
    """A customer has one spouse: one on file is chosen from the list, never added again."""
    if relation != Relation.SPOUSE:
        return
    spouse = next((m for m in stored(ctx).family if m.relation == Relation.SPOUSE), None)
    if spouse is not None:
        raise Invalid("booking/spouse_on_file", goto="beneficiary", name=mask_name(spouse.name),
                      label=label("relative", relation=spouse.relation,
                                  name=mask_name(spouse.name)))


def check_relation(ctx: Context, code: str, data: BookingData) -> str:
    """Remember the sex the word implied (老公, 妈), to question an ID number of the other;
    a second spouse is refused (`_one_spouse`)."""
    _one_spouse(ctx, code)
    said = RELATION_WORDS.get(normalize(ctx.text))
    data.new_sex_said = said[1] if said and said[0] == code else None
    return code


def parse_new_name(ctx: Context, text: str, data: BookingData) -> str:
    if not plausible_name(text):
        raise Invalid("booking/bad_name", said=text.strip() if len(text.strip()) <= 12 else "")
    return _seal(ctx, text.strip())


def _same_name(a: str, b: str) -> bool:
    return compact(a).casefold() == compact(b).casefold()


def parse_new_id(ctx: Context, text: str, data: BookingData) -> str:
    """The new member's ID number: valid, not the policyholder's own, under the name on file
    when it belongs to a known person; a parent younger than the policyholder (or a child
    older) is questioned first."""
    customer = bound_customer(ctx)
    questioned, data.age_pending = _unseal(ctx, data.age_pending), ""
    said = yes_no(text) if questioned else None
    if said is False:
        raise Invalid("booking/age_reenter")
    if said is True:
        number = questioned
    else:
        try:
            number = validate_id_number(normalize_id_number(text), today=ctx.today)
        except ValueError:
            raise Invalid("booking/bad_id_number", name=text.strip() if plausible_name(text) else "") from None
    if number == customer.id_number:
        raise Invalid("booking/own_id_number")
    name = _unseal(ctx, data.new_name)
    on_file = store.names_on_file(ctx.session, number)
    if on_file and not any(_same_name(name, known) for known in on_file):
        raise Invalid("booking/id_number_other_name", goto="new_name")
    if said is not True:
        theirs, mine = id_birth_date(number), id_birth_date(customer.id_number)
        odd_age = (data.new_relation == Relation.PARENT and theirs >= mine) or \
            (data.new_relation == Relation.CHILD and theirs <= mine)
        odd_sex = data.new_sex_said is not None and id_sex(number) != data.new_sex_said
        if odd_age or odd_sex:
            data.age_pending = _seal(ctx, number)
            raise Invalid("booking/age_check", again=False, relation=data.new_relation,
                          name=mask_name(name), odd_age=odd_age, said_sex=data.new_sex_said,
                          sex=id_sex(number))
    data.new_id_number = _seal(ctx, number)
    _check(ctx, data)
    return data.new_id_number


def back(ctx: Context, flow: Flow) -> Reply:
    """返回: one step back, except while an ID number is questioned (妈, then a man's ID
    number): back to the relation, as the question says."""
    hist = ctx.record.history
    if (ctx.record.data or {}).get("age_pending") and "new_name" in hist:
        if "new_relation" not in hist:  # the relation came with the entry (帮我爸约个体检)
            hist.insert(hist.index("new_name"), "new_relation")
        del hist[hist.index("new_relation") + 2:]  # one step back from here is the relation
    return flow.back(ctx)


def package_options(ctx: Context, data: BookingData) -> list[Option]:
    return [Option(o.code, o.item.name, note=o.item.content)
            for o in draft(ctx, data).options("package")]


def wants_package(ctx: Context, data: BookingData) -> bool:
    return len(draft(ctx, data).packages()) > 1


def named_not_offered(ctx: Context, data: BookingData, text: str,
                      names: list[tuple[str, str]], prefer=lambda code: False) -> str | None:
    """The one thing (code, name) the text names in short form (女性 for 钻石健康体检套餐(女性),
    华山医院 for 复旦大学附属华山医院) among those the step did NOT offer, so that the rules
    explain why it cannot be booked; one that was offered is left to the near match, which
    asks back. Several named: those `prefer` picks (the customer's tier), if exactly one."""
    said = name_core(text)
    if len(said) < 2:
        return None
    hits = [code for code, name in names if said in normalize(name)]
    if len(hits) > 1:
        hits = [code for code in hits if prefer(code)] or hits
    offered = {code for code, *_ in offered_of(data)}
    return hits[0] if len(hits) == 1 and hits[0] not in offered else None


def parse_package(ctx: Context, text: str, data: BookingData) -> str | None:
    """The package step's own parser: any of the service's packages named exactly, or in
    short form when it is not one offered (女性 for a husband), so that one the rules refuse
    (the other sex's, another tier's) is explained, not swapped."""
    said = normalize(text)
    packages = _service(ctx, data).packages
    found = [p.code for p in packages if normalize(p.name) == said]
    if len(found) == 1:
        return found[0]
    tier = held_tier(ctx, bound_customer(ctx)).code
    mine = {p.code for p in packages if p.tier == tier}
    return named_not_offered(ctx, data, text, [(p.code, p.name) for p in packages],
                             prefer=mine.__contains__)


def check_package(ctx: Context, code: str, data: BookingData) -> str:
    data.package = code
    _check(ctx, data, goto="package")
    return code


def exam_options(ctx: Context, data: BookingData) -> list[Option]:
    # The exam's own name without 检查 (核磁共振, CT) and its everyday words (核磁, 胃镜;
    # rules.toml `choice_words`) are keywords: they are also how a customer asks for the
    # service, so they must be an answer here, not a restart.
    service = _service(ctx, data)
    return [Option(c, c, words=service.words_for(c)) for c in service.choices]


def parse_free(step: str, max_len: int, skip_words: tuple[str, ...] = ()):
    def parse(ctx: Context, text: str, data: BookingData) -> str:
        text = text.strip()
        if normalize(text) in skip_words:
            return ""
        if not text:
            raise Invalid("booking/free_empty")
        if len(text) > max_len:
            raise Invalid("booking/free_too_long", max_len=max_len)
        _not_of_this_step(ctx, text, step)
        return text
    return parse


# The characters a date alone is written with (12月22号, 下周三, 明天上午): a text of these only
# that the date parser reads is a date, not a description.
_DATE_ONLY = re.compile(r"[0-9年月日号周星期礼拜天今明后下上这本个初中底末旬午点半零〇一二两三四五六七八九十]+")


def _not_of_this_step(ctx: Context, text: str, step: str) -> None:
    """Refuse, saying why, a free-text answer that is only a number, only a date or only a
    city's name: it answers another step (the list's number, the date, the city)."""
    norm = normalize(text)
    kind = None
    if norm.isdigit():
        kind = "number"
    elif _DATE_ONLY.fullmatch(norm) and parse_date(text, ctx.now, calendar()).ok:
        kind = "date"
    elif norm.removesuffix("市") in {normalize(p.city) for p in stored(ctx).places}:
        kind = "city"
    if kind is not None:
        raise Invalid("booking/free_wrong_kind", kind=kind, step=step,
                      said=text if len(text) <= 20 else "")


_CJK = re.compile(r"[\u4e00-\u9fff]")


def parse_symptoms(ctx: Context, text: str, data: BookingData) -> str:
    """特种检查's basis (the handbook: 根据病情): the symptoms or the doctor's referral, in a
    few words of Chinese; punctuation, emoji, latin letters alone, or 不知道 / 没有 are asked
    again."""
    text = text.strip()
    if len(text) > 200:
        raise Invalid("booking/free_too_long", max_len=200)
    _not_of_this_step(ctx, text, "symptoms")
    if len(_CJK.findall(text)) < 2 or normalize(text) in NO_DESCRIPTION:
        raise Invalid("booking/symptoms_needed")
    return text


def city_options(ctx: Context, data: BookingData) -> list[Option]:
    return [Option(o.code, o.code, note=label("city", count=o.count), words=(f"{o.code}市",))
            for o in draft(ctx, data).options("city")]


# 有深圳的吗, 有没有杭州的, 深圳有没有: a place the customer asks about at the city step.
_CITY_ASKED = re.compile(
    r"^(?:请问)?(?:有没有|有)(?P<a>[\u4e00-\u9fff]{2,4}?)市?(?:的|那边)?(?:机构|医院|门诊)?(?:吗|么|呢|没有)?$|"
    r"^(?:请问)?(?P<b>[\u4e00-\u9fff]{2,4}?)市?(?:那边)?(?:有没有|有吗|有没|有么)$")


def parse_city(ctx: Context, text: str, data: BookingData) -> str | None:
    """The city step's own parser: a city asked about (有深圳的吗) is that city when it is
    offered, else refused saying which cities there are."""
    m = _CITY_ASKED.match(normalize(text))
    if m is None:
        return None
    asked = m["a"] or m["b"]
    offered = [code for code, *_ in offered_of(data)]
    if asked in offered:
        return asked
    if any(asked in code or code in asked for code in offered) or asked in _NOT_PLACES \
            or VOCABULARY.match(asked) is not None:  # 有洁牙吗 asks about the service
        return None
    raise Invalid("booking/no_city", city=asked, cities=offered)


_NOT_PLACES = ("哪里", "哪个", "哪些", "什么", "周末", "今天", "明天", "几点", "多少", "附近", "别的",
               "其他", "其它")


def institution_options(ctx: Context, data: BookingData) -> list[Option]:
    return [Option(o.code, o.item.name, note=label("institution", place_kind=o.item.kind,
                                                   address=o.item.address, escort=o.escorted))
            for o in draft(ctx, data).options("institution", city=data.city)]


def institution_context(ctx: Context, data: BookingData) -> dict:
    return {"city": data.city, "escort_note": any(
        o.escorted for o in draft(ctx, data).options("institution", city=data.city)),
        "preference": data.hospital or "", "partner": preferred_partner(ctx, data)}


def preferred_partner(ctx: Context, data: BookingData):
    """The partner institution giving this service that the typed hospital preference names
    (瑞金医院 for 上海交通大学医学院附属瑞金医院), or None: the preference is then not a partner
    and the customer is told so."""
    said = name_core(data.hospital or "")
    if len(said) < 2:
        return None
    hits = [p for p in stored(ctx).places if p.offers(data.service)
            and (said in normalize(p.name) or normalize(p.name) in said)]
    return hits[0] if len(hits) == 1 else None


def parse_institution(ctx: Context, text: str, data: BookingData) -> str | None:
    """The institution step's own parser: any institution named exactly (or in short form
    when it is not one offered: 华山医院), so that one the rules refuse (not giving the service, not for the package) is explained, and one in
    another city that the rules allow is taken (with its city)."""
    said = normalize(text)
    places = stored(ctx).places
    found = [p for p in places if normalize(p.name) == said]
    if len(found) != 1:
        code = named_not_offered(ctx, data, text, [(p.code, p.name) for p in places],
                                 prefer=lambda c: any(p.code == c and p.city == data.city
                                                      for p in places))
        found = [p for p in places if p.code == code]
        if len(found) != 1:
            return None
    if found[0].offers(data.service):
        data.city = found[0].city
    return found[0].code


def check_institution(ctx: Context, code: str, data: BookingData) -> str:
    data.institution = code
    _check(ctx, data, goto="institution", date=None)
    if data.date is not None:  # a date named at entry: keep it only if it fits here
        d = draft(ctx, data)
        why = d.check()
        if why is not None:
            data.date_note = refusal(ctx, why, d).render()
            data.date = None
    return code


def parse_typed_date(ctx: Context, text: str, data: BookingData) -> str | None:
    """The date step's own parser: a typed date is that date (never an offered one near it),
    judged by the rules in `check_date`; a bare small number is not a date (None)."""
    if normalize(text).isdigit() and len(normalize(text)) <= 2:
        return None
    parsed = parse_date(text, ctx.now, calendar())
    if parsed.ok and parsed.date == ctx.today and is_bare_weekday(text):
        # 周六 on a Saturday is today (too soon): said so, with next week's offered instead.
        d = draft(ctx, data)
        exc = refusal(ctx, Refusal.TOO_SOON, d, d.request(date=parsed.date))
        exc.ctx["next_same_weekday"] = parsed.date + timedelta(days=7)
        raise exc
    if parsed.ok:
        return parsed.date.isoformat()
    if parsed.reason == "past":
        raise refusal(ctx, Refusal.PAST, draft(ctx, data))
    raise Invalid(f"booking/refusal/{parsed.reason}", said=text if len(text) <= 20 else "",
                  **date_example(ctx, data))


def earliest(ctx: Context) -> date:
    """The earliest bookable date for a request now (the lead time in working days)."""
    return calendar().earliest_bookable(
        ctx.now, lead_workdays=ctx.services.rules.booking.lead_workdays)


def date_example(ctx: Context, data: BookingData) -> dict:
    """The date a prompt or a refusal shows as an example: one the date step would take, the
    last one offered, else the earliest bookable (never a fixed day that may be too soon)."""
    offered = [date.fromisoformat(code) for code, *_ in offered_of(data)]
    return {"example": offered[-1] if offered else earliest(ctx)}


def date_options(ctx: Context, data: BookingData) -> list[Option]:
    count = ctx.services.rules.booking.dates_offered
    return [Option(o.code, label("date", day=o.item))
            for o in draft(ctx, data).options("date", count=count)]


def date_context(ctx: Context, data: BookingData) -> dict:
    rules = ctx.services.rules
    note, data.date_note = data.date_note, ""
    first = earliest(ctx)
    offered = [date.fromisoformat(code) for code, *_ in offered_of(data)]
    # The year said aloud: this year's uses are spent and only next year's dates are offered.
    spent = None
    if offered and all(d.year > ctx.today.year for d in offered):
        service = _service(ctx, data)
        if service.per_year is not None and \
                draft(ctx, data).used_this_year(service.code) >= service.per_year:
            spent = ctx.today.year
            first = max(first, offered[0])
    return {"note": note, "offered": bool(offered), "earliest": first,
            "latest": ctx.today + timedelta(days=rules.booking.window_days),
            "spent_year": spent, "next_year": offered[0].year if offered else None,
            **date_example(ctx, data), "service": _service(ctx, data)}


def check_date(ctx: Context, code: str, data: BookingData) -> date:
    d = date.fromisoformat(code)
    _check(ctx, data, goto="date", date=d)
    data.time_said = time_said(ctx.text or "")
    return d


# A time of day typed with the date (12月15号下午3点, 12月15日上午): the handbook lets the
# institution set the time (具体服务安排视医院情况及医生出诊时间确定), so it is kept as the
# customer's wish for the specialist and the summary says so; never dropped silently.
# 早一点/晚一点 is a wish too ("a bit earlier/later"), kept as typed; 一点 after another
# word of degree (快一点, 有一点, 好一点) is "a bit", not one o'clock.
_TIME_SAID = re.compile(
    r"(?:上午|下午|中午|早上|早晨|晚上|傍晚)(?:[0-9一二两三四五六七八九十]{1,3}[点时:：](?:半|[0-9]{1,2}分?)?)?"
    r"|[早晚]一?点儿?(?![0-9一二两三四五六七八九十半])"
    r"|(?<![快慢差好多少大小有])[0-9一二两三四五六七八九十]{1,3}[点时](?:半|[0-9]{1,2}分?)?"
    r"|[0-9]{1,2}[:：][0-9]{2}")


def time_said(text: str) -> str:
    """The time of day a message names (下午3点), or ""."""
    m = _TIME_SAID.search(text.replace(" ", ""))
    return m[0] if m else ""


def summary_context(ctx: Context, data: BookingData) -> dict:
    rules = ctx.services.rules
    req = draft(ctx, data).request()
    service = rules.service(req.service)
    package = next((p for p in service.packages if p.code == req.package), None)
    person = req.beneficiary
    deadline = calendar().free_cancel_deadline(req.date, cutoff=rules.booking.cancel_cutoff)
    return dict(service=service, package=package, exam=data.exam, symptoms=data.symptoms,
                department=data.department, time_said=data.time_said,
                hospital=data.hospital, partner=preferred_partner(ctx, data),
                expert=data.expert, person=person_label(person),
                place=req.institution, date=req.date,
                escorted=req.service in rules.booking.escorted_at_tertiary and escorted(req.institution),
                provisional=calendar().is_provisional(req.date), deadline=deadline,
                fees=req.service in rules.booking.customer_pays_fees, family=not person.is_self,
                quota_year=req.date.year if req.date.year != ctx.today.year else None)


def person_label(person: Person) -> str:
    if person.is_self:
        return label("self", name=mask_name(person.name))
    return label("relative", relation=person.relation, name=mask_name(person.name))


# At the summary: words that ask for another day (换一天, 改日期, 不是这个日子), a bare "that
# is wrong" (不是这个, 不对), and a question about changing something (时间能改吗).
_CHANGE_DATE = re.compile(r"^(?:我想|我要|想|要|请|帮我)?(?:换|改|更改|修改)(?:一下|一|个|一个)?(?:天|日子|日期|时间|别的日子|其他日子)$|"
                          r"^不是这(?:个|一)?(?:日子|日期|天)$|^(?:日子|日期)不对$")
_SAID_WRONG = re.compile(r"^(?:不是这个|不是这样|不对|不是|错了|有误|不行)(?:的|啊|呀|吧)?$")
_CHANGE_ASKED = re.compile(r"(?:时间|日期|日子|哪天|机构|医院|信息).{0,4}(?:改|换)|(?:能|可以|怎么|如何|想)(?:修改|更改|改|换)")


def parse_confirm(ctx: Context, text: str, data: BookingData) -> bool:
    """The summary: 确认 submits, 不 ends; a date typed is read by the date step's parser and
    rules (the new date shown in a new summary, to confirm again; or the reason it cannot
    be); 换一天 goes back to the date step; 不对 or 时间能改吗 says how to change."""
    answer = yes_no(text)
    if answer is True:
        return True
    if answer is False:
        raise Invalid("booking/not_submitted", end=True)
    norm = normalize(text)
    if _CHANGE_DATE.search(norm):
        raise Invalid("booking/change_date", goto="date")
    try:
        code = parse_typed_date(ctx, text, data)
    except Invalid as exc:
        if exc.template != "booking/refusal/nonsense":
            raise  # a date the rules refuse: the reason, and the summary as it was
        code = None
    if code is not None:
        old, old_time = data.date, data.time_said
        data.date = check_date(ctx, code, data)  # refused: back to the date step, saying why
        raise Invalid("booking/date_changed", old=old, new=data.date, time_said=data.time_said,
                      time_changed=data.time_said != old_time)
    if _SAID_WRONG.fullmatch(norm) or _CHANGE_ASKED.search(norm):
        raise Invalid("booking/how_to_change", again=False, example=data.date)
    raise Invalid("booking/confirm_again")


def visit_note(data: BookingData) -> str | None:
    """What the specialist reads with the booking: the symptoms and the time of day wished."""
    return render("booking/visit_note", symptoms=data.symptoms or "",
                  time_said=data.time_said).strip() or None


def finish(ctx: Context, data: BookingData) -> Reply:
    rules = ctx.services.rules
    customer = bound_customer(ctx)
    req = draft(ctx, data).request()
    person = req.beneficiary
    new_member = None
    if person is not None and not person.registered:
        new_member = FamilyMember(customer_id=customer.id, relation=person.relation,
                                  name=person.name, id_number=person.id_number)
    new = store.NewBooking(customer_id=customer.id, request=req, request_key=data.key,
                           new_member=new_member, department=data.department,
                           hospital_preference=data.hospital or None,
                           expert=data.expert or None, exam=data.exam,
                           visit_note=visit_note(data))
    try:
        booking = store.submit_booking(ctx.session, new, rules, calendar(), ctx.now)
    except store.BookingRefused as exc:  # re-checked under the lock: the facts have moved
        stored(ctx, fresh=True)
        raise refusal(ctx, exc.refusal, draft(ctx, data), req, goto=STEP_OF.get(exc.refusal),
                      end=exc.refusal in ENDS) from None
    except IntegrityError:  # the same request confirmed twice: the first one stands
        raise Invalid("booking/already_submitted", end=True) from None
    notify.booking_received(ctx.session, booking, ctx.now)
    return ctx.say("booking/submitted", booking=booking, service=rules.service(req.service),
                   person=person_label(person), place=req.institution)


def _is(service: str):
    return lambda ctx, data: data.service == service


booking_flow = router.flow(Flow(
    name="booking", title="服务预约",
    steps=[
        Choice("service", "booking/ask_service", options=service_options, check=check_service,
               context=service_context),
        Choice("beneficiary", "booking/ask_beneficiary", options=beneficiary_options,
               parse=parse_beneficiary, check=check_beneficiary,
               when=lambda ctx, d: _service(ctx, d).family,
               context=lambda ctx, d: {"service": _service(ctx, d)}),
        Choice("new_relation", "booking/ask_relation", options=relation_options,
               parse=parse_relation, check=check_relation,
               when=lambda ctx, d: d.beneficiary == NEW),
        Step("new_name", "booking/ask_new_name", parse_new_name, free_text=True,
             when=lambda ctx, d: d.beneficiary == NEW,
             context=lambda ctx, d: {"relation": d.new_relation, "said_sex": d.new_sex_said}),
        Step("new_id_number", "booking/ask_new_id", parse_new_id, digits=True,
             when=lambda ctx, d: d.beneficiary == NEW,
             context=lambda ctx, d: {"name": mask_name(_unseal(ctx, d.new_name))}),
        Choice("package", "booking/ask_package", options=package_options, parse=parse_package,
               check=check_package, when=wants_package),
        Choice("exam", "booking/ask_exam", options=exam_options,
               when=lambda ctx, d: bool(_service(ctx, d).choices)),
        Step("symptoms", "booking/ask_symptoms", parse_symptoms, free_text=True, symptoms=True,
             when=_is(SPECIAL)),
        Step("department", "booking/ask_department", parse_free("department", 64), free_text=True,
             symptoms=True, when=_is(EXPERT)),
        Step("hospital", "booking/ask_hospital",
             parse_free("hospital", 128, ("不限", "无", "没有", "都可以")),
             free_text=True, when=_is(EXPERT)),
        Step("expert", "booking/ask_expert", parse_free("expert", 64, ("不指定", "无", "没有", "不用")),
             free_text=True, when=lambda ctx, d: d.service == EXPERT and _service(ctx, d)
             .may_name_expert(held_tier(ctx, bound_customer(ctx)).code)),
        Choice("city", "booking/ask_city", options=city_options, parse=parse_city),
        Choice("institution", "booking/ask_institution", options=institution_options,
               parse=parse_institution, check=check_institution, context=institution_context),
        Choice("date", "booking/ask_date", options=date_options, parse=parse_typed_date,
               check=check_date, context=date_context, unread="booking/refusal/nonsense",
               unread_context=date_example),
        Step("confirm", "booking/summary", parse_confirm, context=summary_context,
             unread="booking/confirm_again"),
    ],
    finish=finish, model=BookingData, fallbacks={Universal.BACK: back},
    begin=lambda ctx: {"key": uuid.uuid4().hex},
))


# --- Entry -----------------------------------------------------------------------------------


def start_booking(ctx: Context, service_code: str | None) -> Reply:
    customer = ctx.customer  # a personal key: the router served it to a bound customer
    initial: dict[str, Any] = {}
    if service_code is not None:
        d = draft(ctx, BookingData(service=service_code))
        req = d.request(beneficiary=None, package=None)  # the service alone
        code = d.judge(req)
        if code is not None:
            return Reply(refusal(ctx, code, d, req).render())
        initial["service"] = service_code
        initial.update(read_entry(ctx, customer, service_code))
    return ctx.start(booking_flow, **initial)


def read_entry(ctx: Context, customer: Customer, service_code: str) -> dict:
    """Answers an entry message already gives: who (帮我妈妈…), the exam (核磁共振) and the
    date (下周三洗牙)."""
    text = ctx.text or ""
    out: dict[str, Any] = {}
    rest = text
    service = ctx.services.rules.service(service_code)
    for hit, relation, sex in WHO:
        if hit not in text:
            continue
        rest = rest.replace(hit, "")
        members = [m for m in stored(ctx).family if m.relation == relation
                   and sex in (None, m.sex)]
        if len(members) == 1:
            out["beneficiary"] = f"{MEMBER}{members[0].family_member_id}"
        elif not members:
            out.update(beneficiary=NEW, new_relation=relation.value, new_sex_said=sex)
        break
    said = [(w, c) for c in service.choices for w in service.words_for(c)]
    for word, choice in sorted(said, key=lambda hit: -len(hit[0])):  # 无痛胃镜 before 胃镜
        if word.lower() in text.lower():
            out["exam"] = choice
            rest = re.sub(re.escape(word), "", rest, flags=re.IGNORECASE)
            break
    key = next(k for k, s in SERVICE_OF.items() if s == service_code)
    for word in sorted(INTENTS[key], key=len, reverse=True):
        rest = rest.replace(word, "")
    rest = _FILLER.sub("", rest).strip()
    if rest:
        parsed = parse_date(rest, ctx.now, calendar())
        if parsed.ok:
            rules = ctx.services.rules
            why = validate_service_date(parsed.date, ctx.now, calendar(),
                                        lead_workdays=rules.booking.lead_workdays,
                                        window_days=rules.booking.window_days)
            if why is None:
                out.update(date=parsed.date, time_said=time_said(rest))
            else:
                d = draft(ctx, BookingData(service=service_code, date=parsed.date))
                out["date_note"] = refusal(ctx, Refusal(why), d, d.request(beneficiary=None, package=None)).render()
    return out


@router.key(Key.BOOK_DENTAL, Key.BOOK_CHECKUP, Key.BOOK_EXPERT, Key.BOOK_SPECIAL)
def book(ctx: Context) -> Reply:
    return start_booking(ctx, SERVICE_OF[ctx.key])


def booking_named(ctx: Context, text: str, data: Any, listed: list) -> str | None:
    """The parser of a step listing the customer's bookings (取消预约, 确认到场): the number of
    the one listed booking whose service the text names (洁牙那个); several of that service:
    the customer is asked which (`Invalid`); none: None."""
    code = SERVICE_OF.get(VOCABULARY.match(text))
    offered = {c for c, *_ in offered_of(data)}
    hits = [b for b in listed if b.service == code and b.number in offered]
    if len(hits) > 1:
        raise Invalid("booking/which_of_service", count=len(hits),
                      service=ctx.services.rules.service(code).name)
    return hits[0].number if hits else None


def who(ctx: Context, customer: Customer, booking) -> str:
    """The person a booking is for, as the booking flow labels them."""
    if booking.family_member_id is None:
        return person_label(store.me(customer))
    person = next((p for p in stored(ctx).family
                   if p.family_member_id == booking.family_member_id), None)
    return person_label(person) if person else ""
