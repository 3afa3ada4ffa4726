"""ID numbers (GB 11643-1999), mobile numbers and the masks of personal data."""
from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.identity import (check_digit, id_birth_date, id_sex, is_valid_phone, make_id_number,
                          normalize_id_number, validate_id_number)
from bot.infra.privacy import mask_id_number, mask_name, mask_phone, mask_policy_no

# The standard's own example (X check digit), and two whose check digits were worked by hand.
VALID = ["11010519491231002X", "110105194912310038", "440106198001010019"]


@pytest.mark.parametrize("n", VALID)
def test_valid_numbers(n):
    assert validate_id_number(n) == n


def test_lower_case_x_and_blanks_are_normalised():
    assert normalize_id_number(" 11010519491231002x\n") == "11010519491231002X"
    assert validate_id_number(" 11010519491231002x ") == "11010519491231002X"


def test_sex_and_birth_date():
    assert id_sex("11010519491231002X") == "F"  # 17th digit 2
    assert id_sex("440106198001010019") == "M"  # 17th digit 1
    assert id_birth_date("11010519491231002X") == date(1949, 12, 31)


@pytest.mark.parametrize("n,reason", [
    ("", "18 characters"),
    ("11010519491231002", "18 characters"),
    ("11010519491231002X1", "18 characters"),
    ("1101051949123100X2", "17 digits"),
    ("11010519491231002Y", "17 digits"),
    ("１１０１０５１９４９１２３１００２X", "17 digits"),  # full-width digits
    ("110105194902300027", "birth date"),  # 30 February
    ("110105189912310021", "birth date"),  # before 1900
    ("110105209912310027", "birth date"),  # in the future
    ("110105194912310021", "check digit"),
    ("110105194912310029", "check digit"),
    ("44010619800101001X", "check digit"),
])
def test_invalid_numbers(n, reason):
    with pytest.raises(ValueError, match=reason):
        validate_id_number(n)


def test_future_birth_is_judged_against_today():
    n = make_id_number("110105", date(2030, 1, 1), 1, "M")
    with pytest.raises(ValueError, match="birth date"):
        validate_id_number(n, today=date(2029, 12, 31))
    assert validate_id_number(n, today=date(2030, 1, 1)) == n


@pytest.mark.parametrize("sex", ["M", "F"])
@pytest.mark.parametrize("seq", [0, 1, 249, 499])
def test_make_id_number(sex, seq):
    n = make_id_number("310101", date(1988, 2, 29), seq, sex)
    assert validate_id_number(n) == n
    assert id_sex(n) == sex and id_birth_date(n) == date(1988, 2, 29)


def test_make_id_number_gives_distinct_numbers():
    numbers = {make_id_number("310101", date(1988, 2, 29), s, x) for s in range(500) for x in "MF"}
    assert len(numbers) == 1000


@pytest.mark.parametrize("args", [("31010", date(1980, 1, 1), 1, "M"),
                                  ("310101", date(1980, 1, 1), 500, "M"),
                                  ("310101", date(1980, 1, 1), 1, "X")])
def test_make_id_number_refuses_bad_arguments(args):
    with pytest.raises(ValueError):
        make_id_number(*args)


def test_check_digit_x():
    assert check_digit("11010519491231002") == "X"


@pytest.mark.parametrize("s,ok", [("13812345678", True), ("19912345678", True),
                                  ("12812345678", False), ("1381234567", False),
                                  ("138123456789", False), ("+8613812345678", False),
                                  ("1381234567a", False), ("", False)])
def test_phone(s, ok):
    assert is_valid_phone(s) is ok


@pytest.mark.parametrize("mask,value,expected", [
    (mask_id_number, "11010519491231002X", "1101**********002X"),
    (mask_phone, "13812345678", "138****5678"),
    (mask_policy_no, "P2024000123", "P2*****0123"),
    (mask_name, "张三丰", "张**"),
    (mask_name, "张三", "张*"),
    (mask_name, "欧阳娜娜", "欧***"),
    (mask_name, "张", "*"),
    (mask_name, None, ""),
    (mask_id_number, "110105491231002", "1101*******1002"),  # a 15-digit first-generation number
])
def test_masks(mask, value, expected):
    assert mask(value) == expected


@pytest.mark.parametrize("mask", [mask_id_number, mask_phone, mask_policy_no])
@pytest.mark.parametrize("value", ["", None, "1", "12", "1234", "12345678", "张"])
def test_short_values_are_starred_entirely(mask, value):
    masked = mask(value)
    assert set(masked) <= {"*"} and len(masked) == len(value or "")


@pytest.mark.parametrize("mask,shown,hidden", [(mask_id_number, 8, 6), (mask_phone, 7, 4),
                                               (mask_policy_no, 6, 3), (mask_name, 1, 1)])
@given(value=st.text(max_size=40))
def test_masks_never_show_more_than_intended(mask, shown, hidden, value):
    masked = mask(value)
    assert len(masked) == len(value.strip())
    assert len(masked) - masked.count("*") <= shown
    assert masked.count("*") >= min(hidden, len(masked))
