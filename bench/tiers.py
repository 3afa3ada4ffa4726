"""The tier engine at scale: `recompute` (set-based SQL) beside a naive per-customer Python loop
(`bot.domain.tiers.evaluate` and `decide`, one customer at a time) on the same generated book.

    .venv/bin/python bench/tiers.py [--customers 1000000] [--db sqlite|postgresql|both]

For each database it makes a fresh one (a temporary SQLite file; a new PostgreSQL database that
is dropped at the end), loads N customers and 3·N policies (random owners, so some customers
have none) with executemany / COPY, then times:
- the naive loop on a random sample of customers, inside a transaction that is rolled back
  (extrapolated to all customers, and said so);
- `recompute` on the fresh book (everyone starts at mass, so many upgrades);
- `recompute` again the same day (nothing changes: the cost of evaluating everyone);
- the daily job (`recompute_due`) on the two following days, after an import flagged 0.05% of
  the customers (`needs_recompute`): it evaluates only the customers with an event that day
  (a policy starting or stopping to count, or a flagged one), about 0.1% of them;
- `recompute` on the next review day, after 2% of the policies were surrendered (downgrades
  and drops included).
"""
from __future__ import annotations

import argparse
import io
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import create_engine, insert, select, text, update  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

import models  # noqa: E402,F401  (registers the tables)
from bot.infra.db import make_engine  # noqa: E402
from bot.domain.rules import load_rules  # noqa: E402
from bot.domain.tier_engine import recompute, recompute_due  # noqa: E402
from bot.domain.tiers import decide, effective_date, evaluate, is_review_day, window_of  # noqa: E402
from models import Customer, Notification, Policy, TierHistory  # noqa: E402

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
DAY = date(2025, 3, 17)
REVIEW = date(2025, 6, 30)
CHUNK = 100_000
CUSTOMER_COLUMNS = ("id", "id_number", "name", "phone", "sex", "birth_date", "tier", "contribution")
POLICY_COLUMNS = ("id", "policy_no", "customer_id", "product_name", "liabilities", "payment_mode",
                  "annualized_basic_premium", "single_premium", "annual_regular_topup",
                  "initial_lump_sum_topup", "irregular_topup", "effective_date", "payment_years",
                  "status", "cooling_off_end_date", "pledged", "policy_loan", "counts_from",
                  "counts_until")
RULES = load_rules(ROOT / "rules.toml")
STATUSES = ["in_force"] * 80 + ["lapsed"] * 8 + ["surrendered"] * 5 + ["terminated"] * 4 + \
    ["matured"] * 3
FIRST_DAY = date(2005, 1, 1).toordinal()
LAST_DAY = date(2025, 12, 31).toordinal()


# --- The book ---------------------------------------------------------------------------------


def fen_amount(rng: random.Random) -> int:
    """An annual premium in fen: mostly modest, a long tail of large ones."""
    band = rng.random()
    if band < 0.70:
        return rng.randrange(100_000, 2_000_000)
    if band < 0.92:
        return rng.randrange(2_000_000, 8_000_000)
    if band < 0.99:
        return rng.randrange(8_000_000, 30_000_000)
    return rng.randrange(30_000_000, 150_000_000)


def customers(n: int, rng: random.Random):
    for i in range(1, n + 1):
        born = date.fromordinal(rng.randrange(date(1950, 1, 1).toordinal(), date(2000, 1, 1).toordinal()))
        yield (i, f"{i:018d}", f"客户{i}", f"138{i:08d}", "MF"[i % 2], born, "mass", 0)


def policies(n_policies: int, n_customers: int, rng: random.Random):
    """Rows of POLICY_COLUMNS; amounts in fen, as the money columns store them."""
    for i in range(1, n_policies + 1):
        single = rng.random() < 0.15
        amount = fen_amount(rng)
        topped = rng.random() < 0.3
        effective = date.fromordinal(rng.randrange(FIRST_DAY, LAST_DAY))
        years = 1 if single else rng.choice((3, 5, 10, 15, 20, 30))
        mode = "single" if single else "regular"
        cooling = effective + timedelta(days=15)
        yield (i, f"P{i:011d}", rng.randrange(1, n_customers + 1), "产品", "", mode,
               0 if single else amount, amount * 10 if single else 0,
               rng.randrange(0, 500_000) if topped else 0,
               rng.randrange(0, 5_000_000) if topped else 0,
               rng.randrange(0, 2_000_000) if topped else 0,
               effective, years, rng.choice(STATUSES), cooling,
               rng.random() < 0.02, rng.random() < 0.03,
               *window_of(effective, cooling, mode, years, RULES))


def chunked(rows, size: int = CHUNK):
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


MONEY = slice(6, 11)


def load_sqlite(path: str, n: int, rng: random.Random) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("BEGIN")
    marks = ", ".join("?" * len(CUSTOMER_COLUMNS))
    for chunk in chunked(customers(n, rng)):
        con.executemany(f"INSERT INTO customer ({', '.join(CUSTOMER_COLUMNS)}) VALUES ({marks})",
                        [(*r[:5], r[5].isoformat(), *r[6:]) for r in chunk])
    marks = ", ".join("?" * len(POLICY_COLUMNS))
    for chunk in chunked(policies(3 * n, n, rng)):
        con.executemany(f"INSERT INTO policy ({', '.join(POLICY_COLUMNS)}) VALUES ({marks})", [
            (*r[:6], *r[MONEY], r[11].isoformat(), r[12], r[13],
             r[14].isoformat(), int(r[15]), int(r[16]), r[17].isoformat(), r[18].isoformat())
            for r in chunk])
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()


def load_postgresql(url: str, n: int, rng: random.Random) -> None:
    with psycopg.connect(url) as con, con.cursor() as cur:
        with cur.copy(f"COPY customer ({', '.join(CUSTOMER_COLUMNS)}) FROM STDIN") as copy:
            for chunk in chunked(customers(n, rng)):
                copy.write("".join("\t".join(map(str, r)) + "\n" for r in chunk))
        with cur.copy(f"COPY policy ({', '.join(POLICY_COLUMNS)}) FROM STDIN") as copy:
            for chunk in chunked(policies(3 * n, n, rng)):
                buf = io.StringIO()
                for r in chunk:
                    buf.write("\t".join((*map(str, r[:6]), *map(str, r[MONEY]),
                                         str(r[11]), str(r[12]), r[13], str(r[14]),
                                         "t" if r[15] else "f", "t" if r[16] else "f",
                                         str(r[17]), str(r[18]))) + "\n")
                copy.write(buf.getvalue())
        for table in ("customer", "policy"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))")
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("VACUUM ANALYZE")


# --- The two ways -----------------------------------------------------------------------------


def naive(engine, rules, on: date, sample: list[int]) -> float:
    """One customer at a time, with the pure functions; rolled back. Seconds per customer."""
    customer, policy = Customer.__table__, Policy.__table__
    review = is_review_day(on, rules)
    started = time.perf_counter()
    with engine.connect() as conn:
        trans = conn.begin()
        for cid in sample:
            held = conn.execute(select(customer.c.tier).where(customer.c.id == cid)).scalar_one()
            rows = conn.execute(select(policy).where(policy.c.customer_id == cid)).all()
            result = evaluate(rows, on, rules)
            change = decide(held, result.tier, in_force=result.in_force, review_day=review,
                            rules=rules)
            values = dict(contribution=result.total, evaluated_on=on)
            if change:
                effective = effective_date(change.reason, on)
                values.update(tier=change.tier, tier_since=effective)
                conn.execute(insert(TierHistory.__table__).values(
                    customer_id=cid, from_tier=held, to_tier=change.tier, reason=change.reason,
                    contribution=result.total, effective_date=effective, changed_at=datetime.now(timezone.utc)))
                conn.execute(insert(Notification.__table__).values(
                    customer_id=cid, kind="tier_changed", payload="{}", status="pending",
                    dedupe_key=f"tier:{cid}:{effective}:{change.tier}", created_at=datetime.now(timezone.utc)))
            conn.execute(update(customer).where(customer.c.id == cid).values(**values))
        trans.rollback()
    return (time.perf_counter() - started) / len(sample)


def timed(label: str, fn):
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    print(f"  {label:<44} {seconds:8.2f} s", flush=True)
    return result, seconds


def bench(kind: str, n: int, sample_size: int, seed: int) -> dict:
    rules = load_rules(ROOT / "rules.toml")
    rng = random.Random(seed)
    print(f"\n{kind}: {n:,} customers, {3 * n:,} policies", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="vipbot-bench-")
    admin, name = None, f"vipbot_bench_{uuid.uuid4().hex[:8]}"
    try:
        if kind == "sqlite":
            path = f"{tmp.name}/bench.db"
            url = f"sqlite:///{path}"
        else:
            admin = create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
                                  isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
        engine = make_engine(url)
        SQLModel.metadata.create_all(engine)
        if kind == "sqlite":
            timed("bulk load (executemany) + ANALYZE", lambda: load_sqlite(path, n, rng))
        else:
            timed("bulk load (COPY) + VACUUM ANALYZE",
                  lambda: load_postgresql(url.replace("+psycopg", ""), n, rng))
        sample = random.Random(seed + 1).sample(range(1, n + 1), min(sample_size, n))
        per_customer, _ = timed(f"naive loop, {len(sample):,}-customer sample",
                                lambda: naive(engine, rules, DAY, sample))
        naive_total = per_customer * n
        print(f"  {'naive loop, extrapolated to all customers':<44} {naive_total:8.1f} s"
              f"   ({per_customer * 1e6:.0f} µs per customer)")
        first, t_first = timed(f"recompute {DAY} (fresh book)", lambda: recompute(engine, rules, DAY))
        print(f"    {first.render()}")
        again, t_again = timed(f"recompute {DAY} again (no change)",
                               lambda: recompute(engine, rules, DAY))
        print(f"    {again.render()}")
        first_daily, _ = timed(f"daily job {DAY} (first run: everyone)",
                               lambda: recompute_due(engine, rules, DAY, review=False))
        print(f"    {first_daily.render()}")
        t_daily = []
        for k, day in enumerate((DAY + timedelta(days=1), DAY + timedelta(days=2))):
            with engine.begin() as c:  # an import changed 0.05% of the customers' policies
                c.execute(update(Customer.__table__)
                          .where((Customer.__table__.c.id + k) % 2000 == 0)
                          .values(needs_recompute=True))
            daily, t = timed(f"daily job {day} (events only)",
                             lambda day=day: recompute_due(engine, rules, day))
            print(f"    {daily.render()}  [{daily.evaluated / n:.2%} of the customers]")
            t_daily.append(t)
        with engine.begin() as c:  # some policies end before the review (not timed)
            c.execute(update(Policy.__table__).where(Policy.__table__.c.id % 50 == 0)
                      .values(status="surrendered"))
        review, t_review = timed(f"recompute {REVIEW} (review day)",
                                 lambda: recompute(engine, rules, REVIEW))
        print(f"    {review.render()}")
        print(f"  naive (extrapolated) / set-based (fresh book): {naive_total / t_first:.0f}×")
        engine.dispose()
        return dict(db=kind, naive=naive_total, first=t_first, again=t_again, review=t_review,
                    daily=min(t_daily))
    finally:
        if admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--sample", type=int, default=20_000,
                        help="customers the naive loop is timed on (then extrapolated)")
    parser.add_argument("--seed", type=int, default=20250317)
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    results = [bench(kind, args.customers, args.sample, args.seed) for kind in kinds]
    print(f"\nsummary ({args.customers:,} customers, {3 * args.customers:,} policies; "
          "naive figures extrapolated from the sample)")
    print(f"  {'db':<11}{'naive':>10}{'set-based':>11}{'same day':>10}{'daily job':>11}"
          f"{'review':>9}{'ratio':>8}")
    for r in results:
        print(f"  {r['db']:<11}{r['naive']:>9.0f}s{r['first']:>10.1f}s{r['again']:>9.1f}s"
              f"{r['daily']:>10.2f}s{r['review']:>8.1f}s{r['naive'] / r['first']:>7.0f}×")


if __name__ == "__main__":
    main()
