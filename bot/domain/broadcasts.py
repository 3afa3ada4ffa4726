"""Broadcasts to tiers: tiers mirrored to WeChat user tags, WeChat's monthly allowance of mass
messages, and each send's result.

- Each tier has a WeChat user tag (`tier_tag`, created through the tags API); `sync_tags`
  puts every bound follower in the tag of the tier they hold and takes unbound users out of
  theirs. The daily tier job runs it after every tier run (so every tier change reaches
  WeChat by the next run at the latest), binding and unbinding call `tag_user` / `untag_user`.
- A broadcast to a tier is a mass send by tag (`filter: {is_to_all: false, tag_id}`), one per
  tier, enqueued through `bot.domain.notify.mass_send`.
- WeChat lets a service account reach each user with 4 mass messages a month. Each user is in
  one tier, so the bot counts its broadcasts per tier per calendar month (Asia/Shanghai); a
  broadcast to 全部 counts for every tier. Sends from WeChat's console are unseen, so the
  remaining allowance is an estimate. A broadcast that would reach a tier a fifth time in a
  month is refused.
- WeChat reports each mass send's result with a MASSSENDJOBFINISH event (by msg_id): the
  outbox records the msg_id WeChat answered with (`mass_sent`), the event fills the counts
  (`record_result`).
"""
from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func
from sqlmodel import Session, select

from bot.domain import notify
from bot.domain.rules import Rules
from bot.domain.staff_desk import StaffRefused, audit
from bot.domain.workdays import SHANGHAI
from bot.infra.db import upsert
from models import Broadcast, BroadcastAllowance, Customer, Notification, TagMember, TierTag, WechatUser

log = logging.getLogger(__name__)

MONTHLY_LIMIT = 4  # WeChat: mass messages per user per month (service accounts)
BATCH = 50  # WeChat: openids per batchtagging / batchuntagging call
ALL = "全部"


def tag_name(rules: Rules, tier: str) -> str:
    return f"VIP-{rules.tier(tier).name}"


def month_of(now: datetime) -> str:
    return now.astimezone(SHANGHAI).strftime("%Y-%m")


# --- Tags ------------------------------------------------------------------------------------


def tier_tags(session: Session) -> dict[str, int]:
    return {t.tier: t.tag_id for t in session.exec(select(TierTag)).all()}


def ensure_tags(engine, client, rules: Rules) -> dict[str, int]:
    """The tag id of every tier, creating the tags WeChat does not have yet. WeChat is
    called with no database connection held (the token store may need one)."""
    with Session(engine) as session:
        tags = tier_tags(session)
    missing = [t.code for t in rules.tiers if t.code not in tags]
    if not missing:
        return tags
    existing = {t["name"]: int(t["id"]) for t in client.tag.get() or []}  # wechatpy: the list
    made = {}
    for tier in missing:
        name = tag_name(rules, tier)
        tag_id = existing.get(name)
        if tag_id is None:
            tag_id = int(client.tag.create(name)["id"])  # wechatpy: the "tag" object
        made[tier] = (tag_id, name)
    with Session(engine) as session:
        for tier, (tag_id, name) in made.items():
            if session.get(TierTag, tier) is None:
                session.add(TierTag(tier=tier, tag_id=tag_id, name=name))
        session.commit()
        return tier_tags(session)


@dataclass
class SyncReport:
    tagged: int = 0
    untagged: int = 0
    errors: list[str] = field(default_factory=list)

    def render(self) -> str:
        text = f"tags: {self.tagged} user(s) tagged, {self.untagged} untagged"
        return text + (f", {len(self.errors)} error(s): {'; '.join(self.errors)}"
                       if self.errors else "")


def sync_tags(engine, client, rules: Rules, openids: list[str] | None = None) -> SyncReport:
    """Bring WeChat's tier tags in step with the tiers bound followers hold (all of them, or
    only `openids`); users no longer bound or following leave their tag. Nothing to change,
    no call to WeChat. Each successful call is committed to `tag_member` at once; WeChat is
    called with no database connection held."""
    report = SyncReport()
    wanted = (select(WechatUser.openid, Customer.tier)
              .join(Customer, Customer.id == WechatUser.customer_id)
              .where(WechatUser.following.is_(True)))
    held = select(TagMember)
    if openids is not None:
        wanted = wanted.where(WechatUser.openid.in_(openids))
        held = held.where(TagMember.openid.in_(openids))
    with Session(engine) as session:
        want = {openid: tier for openid, tier in session.execute(wanted).all()}
        have = {m.openid: (m.tier, m.tag_id) for m in session.exec(held).all()}
        tags = tier_tags(session)
    if not want and not have:
        return report
    if any(tier not in tags for tier in want.values()):
        tags = ensure_tags(engine, client, rules)
    untag: dict[int, list[str]] = defaultdict(list)
    tag: dict[int, list[str]] = defaultdict(list)
    for openid, (tier, tag_id) in have.items():
        if want.get(openid) != tier or tag_id != tags.get(tier):
            untag[tag_id].append(openid)
    for openid, tier in want.items():
        if have.get(openid) != (tier, tags[tier]):
            tag[tags[tier]].append(openid)
    tier_of = {v: k for k, v in tags.items()}
    for tag_id, members in untag.items():
        for chunk in _chunks(members):
            try:
                client.tag.untag_user(tag_id, chunk)
            except Exception as exc:  # keep going: the next run retries
                report.errors.append(f"untag {tag_id}: {exc}")
                continue
            with Session(engine) as session:
                session.execute(delete(TagMember).where(TagMember.openid.in_(chunk)))
                session.commit()
            report.untagged += len(chunk)
    for tag_id, members in tag.items():
        for chunk in _chunks(members):
            try:
                client.tag.tag_user(tag_id, chunk)
            except Exception as exc:
                report.errors.append(f"tag {tag_id}: {exc}")
                continue
            with Session(engine) as session:
                session.execute(delete(TagMember).where(TagMember.openid.in_(chunk)))
                for openid in chunk:
                    session.add(TagMember(openid=openid, tier=tier_of[tag_id], tag_id=tag_id))
                session.commit()
            report.tagged += len(chunk)
    return report


def sync_user(engine, client, rules: Rules, openid: str) -> SyncReport:
    """One user's tag (after binding or unbinding has committed)."""
    return sync_tags(engine, client, rules, [openid])


def _chunks(items: list[str]):
    for i in range(0, len(items), BATCH):
        yield items[i:i + BATCH]


# --- Allowance and broadcasts -------------------------------------------------------------------


def parse_tiers(words: list[str], rules: Rules) -> list[str] | None:
    """Tier codes from tier names (钻石 …) or 全部; None when a word is neither."""
    if ALL in words:
        return [t.code for t in rules.tiers] if words == [ALL] else None
    by_name = {t.name: t.code for t in rules.tiers}
    codes = []
    for w in words:
        if w not in by_name:
            return None
        if by_name[w] not in codes:
            codes.append(by_name[w])
    return codes or None


def used_this_month(session: Session, now: datetime) -> dict[str, int]:
    rows = session.execute(select(Broadcast.tier, func.count()).where(
        Broadcast.month == month_of(now)).group_by(Broadcast.tier)).all()
    return {tier: int(n) for tier, n in rows}


def remaining(session: Session, tiers: list[str], now: datetime) -> dict[str, int]:
    used = used_this_month(session, now)
    return {t: max(MONTHLY_LIMIT - used.get(t, 0), 0) for t in tiers}


def audience(session: Session, tiers: list[str]) -> dict[str, int]:
    rows = session.execute(select(Customer.tier, func.count()).select_from(WechatUser)
                           .join(Customer, Customer.id == WechatUser.customer_id)
                           .where(WechatUser.following.is_(True), Customer.tier.in_(tiers))
                           .group_by(Customer.tier)).all()
    found = {tier: int(n) for tier, n in rows}
    return {t: found.get(t, 0) for t in tiers}


@dataclass
class Preview:
    tier: str
    audience: int  # bound followers holding the tier now (an estimate of who it reaches)
    left: int  # broadcasts left this month to the tier


def preview(session: Session, tiers: list[str], now: datetime) -> list[Preview]:
    """What a broadcast to `tiers` would reach, and the month's allowance left; refused as
    `allowance_spent` when a tier has none left (nothing pending is kept then)."""
    left = remaining(session, tiers, now)
    sizes = audience(session, tiers)
    spent = [t for t in tiers if left[t] <= 0]
    if spent:
        raise StaffRefused("allowance_spent", tiers=spent, limit=MONTHLY_LIMIT)
    return [Preview(t, sizes[t], left[t]) for t in tiers]


def lock_allowance(session: Session, tiers: list[str], now: datetime
                   ) -> dict[str, BroadcastAllowance]:
    """The month's allowance rows of `tiers`, created if missing and locked (SELECT … FOR
    UPDATE, in tier order) until the transaction ends: a concurrent send of any of these
    tiers waits here, and then counts the broadcasts this one made."""
    month = month_of(now)
    table = BroadcastAllowance.__table__
    for tier in sorted(tiers):
        session.execute(upsert(session, table).values(tier=tier, month=month, used=0)
                        .on_conflict_do_nothing())
    rows = session.execute(select(BroadcastAllowance).where(
        BroadcastAllowance.month == month, BroadcastAllowance.tier.in_(tiers))
        .order_by(BroadcastAllowance.tier).with_for_update()
        .execution_options(populate_existing=True)).scalars().all()
    return {r.tier: r for r in rows}


def send(session: Session, who: str, tiers: list[str], content: str, now: datetime
         ) -> list[Broadcast]:
    """Enqueue one mass send per tier tag; refused when a tier's allowance is spent or its
    tag does not exist yet. The allowance is counted with the tiers' rows of the month
    locked (`lock_allowance`), so two admins confirming at once never pass the limit."""
    allowance = lock_allowance(session, tiers, now)
    left = remaining(session, tiers, now)
    spent = [t for t in tiers if left[t] <= 0]
    if spent:
        raise StaffRefused("allowance_spent", tiers=spent, limit=MONTHLY_LIMIT)
    tags = tier_tags(session)
    if any(t not in tags for t in tiers):
        raise StaffRefused("tags_missing")
    sizes = audience(session, tiers)
    batch = uuid.uuid4().hex
    rows = []
    for tier in tiers:
        row = Broadcast(batch=batch, staff_openid=who, tier=tier, tag_id=tags[tier],
                        month=month_of(now), content=content, audience=sizes[tier],
                        dedupe_key=f"broadcast:{batch}:{tier}", created_at=now)
        session.add(row)
        session.flush()
        notify.mass_send(session, row.tag_id, content, now, key=row.dedupe_key)
        allowance[tier].used = MONTHLY_LIMIT - left[tier] + 1
        session.add(allowance[tier])
        rows.append(row)
    audit(session, who, "broadcast", f"broadcast:{batch[:12]}", now,
          after={"tiers": tiers, "content": content, "tag_ids": [r.tag_id for r in rows],
                 "audience": sizes})
    return rows


def mass_sent(session: Session, key: str, msg_id: int) -> Broadcast | None:
    """The outbox calls this with the msg_id WeChat answered a sendall with."""
    row = session.exec(select(Broadcast).where(Broadcast.dedupe_key == key)).first()
    if row is not None:
        row.msg_id = int(msg_id)
        session.add(row)
        session.flush()
    return row


def record_result(session: Session, msg_id: int, status: str, counts: dict[str, int],
                  now: datetime) -> Broadcast | None:
    """A MASSSENDJOBFINISH event; None for a send the bot did not make (WeChat's console)."""
    row = session.exec(select(Broadcast).where(Broadcast.msg_id == msg_id)).first()
    if row is None:  # the outbox sent it and kept WeChat's msg_id on its own row
        row = session.exec(select(Broadcast).join(
            Notification, Notification.dedupe_key == Broadcast.dedupe_key).where(
            Notification.msgid == msg_id, Notification.kind == "mass_send")).first()
    if row is None:
        log.info("mass send %s finished (%s), not one of the bot's broadcasts", msg_id, status)
        return None
    row.status = (status or "")[:64]
    row.total_count, row.filter_count = counts.get("total"), counts.get("filter")
    row.sent_count, row.error_count = counts.get("sent"), counts.get("error")
    row.finished_at = now
    session.add(row)
    session.flush()
    return row


def history(session: Session, limit: int = 20) -> list[Broadcast]:
    return list(session.exec(select(Broadcast).order_by(Broadcast.id.desc()).limit(limit)).all())
