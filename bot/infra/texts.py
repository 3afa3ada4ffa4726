"""Customer-facing text: every sentence comes from a Jinja2 template in bot/templates/."""
from __future__ import annotations

import re
from datetime import datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
    autoescape=False,
    auto_reload=False,  # templates ship with the code; no stat() per render
)

# The one place an instant becomes the time a person reads: TIMEZONE (set_timezone, called
# when the services are built; Asia/Shanghai until then).
_display_tz: tzinfo = ZoneInfo("Asia/Shanghai")


def set_timezone(tz: tzinfo) -> None:
    global _display_tz
    _display_tz = tz


def set_rules(rules) -> None:
    """The programme's rules (bot.domain.rules.Rules: rules.toml validated at start-up, with
    the settings that override a rule), which every template reads as `rules` (tier names,
    venues, the cut-off, the hotline…), so that no template writes a rule of its own. Called
    when the services are built."""
    _env.globals["rules"] = rules
    for template in _templates.values():  # their globals are a copy (see _template)
        template.globals["rules"] = rules


def local(value, tz: tzinfo | None = None):
    """`value` as the wall-clock time of TIMEZONE (or `tz`). An aware datetime (every stored
    instant) is converted; a date, or a naive datetime (a service's date and time, which is
    local by construction), is returned as it is."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(tz or _display_tz)
    return value


def local_record(raw: str | None, tz: tzinfo | None = None) -> str:
    """A stored JSON record (the audit's before and after) as a person reads it: every
    instant in it (an ISO 8601 date and time with its offset) as the wall clock of TIMEZONE
    (or `tz`) with that offset, so that one record never mixes +00:00 and +08:00; dates and
    other values as stored. Not JSON: returned as it is; nothing: ""."""
    import json

    if not raw:
        return ""
    try:
        record = json.loads(raw)
    except ValueError:
        return raw

    def instant(value):
        if isinstance(value, dict):
            return {k: instant(v) for k, v in value.items()}
        if isinstance(value, list):
            return [instant(v) for v in value]
        if isinstance(value, str) and len(value) > 10 and value[10] in "T ":
            try:
                at = datetime.fromisoformat(value)
            except ValueError:
                return value
            return local(at, tz).isoformat() if at.tzinfo is not None else value
        return value

    return json.dumps(instant(record), ensure_ascii=False)


_env.filters["local"] = local
_env.filters["money"] = lambda v: f"{v:,.2f}"
# The words of the filters below: bot/templates/_formats.j2 (no sentence is written in code).
_F = _env.get_template("_formats.j2").module
# 吴女士 / 周先生: warm, and no full name on a screen someone else may read.
_env.filters["honorific"] = lambda c: _F.honorific["M" if c.sex == "M" else "F"].format(
    surname=c.name[:1])
_env.filters["cn_date"] = lambda d: _F.cn_date.format(year=d.year, month=d.month, day=d.day)
_env.filters["weekday"] = lambda d: _F.weekday.format(day=_F.weekdays[d.weekday()])
_env.filters["cn_md"] = lambda d: _F.cn_md.format(month=d.month, day=d.day)
_env.filters["hm"] = lambda t: t.strftime("%H:%M")
_env.filters["percent"] = lambda w: f"{float(w) * 100:g}%"
_env.filters["cn_years"] = lambda n: _F.cn_years.format(
    n=_F.cn_digits[n] if 0 <= n <= 10 else n)


def _wan(v) -> str:
    """1000000 -> 100万; 30000 -> 3万."""
    return _F.wan.format(n=v / 10000) if v >= 10000 and v % 100 == 0 else f"{v:,}"


_env.filters["wan"] = _wan


def formatted(filter_name: str, value) -> str:
    """`value` through one of the templates' filters (cn_md, cn_date, weekday…), for a text
    built outside a template (an SMS's parameters)."""
    return _env.filters[filter_name](value)
# `services | selectattr("tiers", "contains", code)`: the services a tier has.
_env.tests["contains"] = lambda seq, item: item in seq


def inert(value):
    """Text shown to staff, made inert: WeChat renders `<a href=…>` (and `weixin://` menu
    taps) inside a text message as a live link, so in every staff template each printed
    value has `&`, `<` and `>` escaped (docs/programme.md: customer-written text is data, never
    markup). Only what a template marks `|safe` (the bot's own command usages, staff's own
    broadcast text in its preview) is left as is."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_env.filters["inert"] = inert

_TAG = re.compile(r"<[^<>]*>")


def plain_text(value):
    """Customer-written text quoted back in a WeChat text message to a customer: what it
    says, with any markup dropped (a text message is not HTML, so entities would show as
    「&lt;」; and a tag left in would be a live link from the official account). Dropped
    until none is left, so that a tag rebuilt from the pieces (<<a>a href=…>) goes too."""
    if not isinstance(value, str):
        return value
    while True:
        stripped = _TAG.sub("", value)
        if stripped == value:
            return stripped
        value = stripped


_env.filters["plain_text"] = plain_text  # for customer text quoted in a message to a customer

# Templates under staff/ are read by staff: every value they print passes through `inert`.
STAFF_PREFIX = "staff/"
_staff_env = _env.overlay(finalize=inert)

_templates: dict[str, Template] = {}


def _template(name: str) -> Template:
    """The compiled template `name`, kept for the life of the process (templates ship with
    the code). Its globals become a plain dict: nothing adds globals once templates are
    loaded, and Jinja copies them into every render's context (a ChainMap is slow to copy)."""
    template = _templates.get(name)
    if template is None:
        env = _staff_env if name.startswith(STAFF_PREFIX) else _env
        template = env.get_template(f"{name}.j2")
        template.globals = dict(template.globals)
        _templates[name] = template
    return template


def render(template: str, /, **ctx) -> str:
    """Render `template` (without the .j2 suffix) and tidy the blank lines a template leaves."""
    text = _template(template).render(**ctx)
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out)


def names(template: str):
    """The variables a names template sets (`staff/names`, `booking/names`: status and
    relation names), for the other places that show them (the console)."""
    return _template(template).module


def template_exists(name: str) -> bool:
    return (TEMPLATES / f"{name}.j2").is_file()
