"""The benchmark's customers, set up through the public doors: `import policies` (five in-force
policies each, which the import's tier run makes gold), `import institutions` (dental clinics)
and the bulk binding `bind --file` (one openid per customer)."""
from __future__ import annotations

import csv
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from bot.domain.identity import make_id_number

ROOT = Path(__file__).resolve().parent.parent
POLICIES_PER_CUSTOMER = 5
# Annualised premiums of one customer's policies: 140,000 in all, gold.
PREMIUMS = ("30000.00", "25000.00", "20000.00", "25000.00", "40000.00")

INSTITUTIONS = [
    ("BN-D01", "瑞尔齿科北京国贸诊所", "北京", "北京市朝阳区建国门外大街1号", "commercial", "dental",
     "010-65052255", ""),
    ("BN-D02", "马泷齿科北京三里屯诊所", "北京", "北京市朝阳区三里屯路19号", "commercial", "dental",
     "010-64171234", "sun"),
    ("BN-D03", "佳美口腔上海静安门诊", "上海", "上海市静安区南京西路1266号", "commercial", "dental",
     "021-62881234", ""),
]


def id_number(i: int) -> str:
    """The ID number of benchmark customer `i` (distinct for i < 400 × 20,000)."""
    return make_id_number("110105", date(1960, 1, 1) + timedelta(days=i // 400), (i % 400) // 2,
                          "M" if i % 2 else "F")


def write_policies(path: Path, customers: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["policy_no", "holder_id_number", "holder_name", "holder_phone",
                    "product_name", "liabilities", "payment_mode", "annualized_basic_premium",
                    "single_premium", "annual_regular_topup", "initial_lump_sum_topup",
                    "irregular_topup", "effective_date", "payment_years", "status",
                    "cooling_off_end_date", "pledged", "policy_loan"])
        for i in range(customers):
            number = id_number(i)
            for k, premium in enumerate(PREMIUMS):
                effective = date(2019 + k, 1 + k, 10)
                w.writerow([f"BP{i:06d}{k}", number, f"客户{i}", f"139{i:08d}",
                            "安心人生两全保险", "critical_illness;hospitalization", "regular",
                            premium, "0", "1000.00" if k == 4 else "0", "0", "0",
                            effective.isoformat(), "10", "in_force",
                            (effective + timedelta(days=15)).isoformat(), "0", "0"])


def write_institutions(path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["code", "name", "city", "address", "kind", "services", "phone", "closed"])
        w.writerows(INSTITUTIONS)


def write_bindings(path: Path, openids: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["openid", "id_number"])
        w.writerows((openid, id_number(i)) for i, openid in enumerate(openids))


def cli(env: dict, *args: str) -> str:
    res = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"main.py {' '.join(args)} failed:\n{res.stdout}{res.stderr}")
    return res.stdout


def set_up(env: dict, tmp: Path, openids: list[str]) -> str:
    """Customers (five policies each), clinics, and `openids` bound one per customer.
    Returns the CLI's reports."""
    write_policies(tmp / "policies.csv", len(openids))
    write_institutions(tmp / "institutions.csv")
    write_bindings(tmp / "bindings.csv", openids)
    return "\n".join(cli(env, *args) for args in (
        ("import", "policies", str(tmp / "policies.csv")),
        ("import", "institutions", str(tmp / "institutions.csv")),
        ("bind", "--file", str(tmp / "bindings.csv"))))
