"""Reply text normalized for speech: how numbers, money, dates, times and codes are said on the phone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.speech_text import SpeechOptions, cardinal, digits, normalize_for_speech, ordinal, year

CASES = [
    # money
    ("₹1,250.50", "one thousand two hundred fifty rupees and fifty paise"),
    ("Rs. 1250.50", "one thousand two hundred fifty rupees and fifty paise"),
    ("INR 1250", "one thousand two hundred fifty rupees"),
    ("Your refund of Rs 500/- is done.", "Your refund of five hundred rupees is done."),
    ("₹1", "one rupee"),
    ("₹0.50", "fifty paise"),
    ("1250.50 rupees", "one thousand two hundred fifty rupees and fifty paise"),
    ("₹1,50,000", "one hundred fifty thousand rupees"),
    ("₹500-1000", "five hundred to one thousand rupees"),
    ("$12.99", "twelve dollars and ninety-nine cents"),
    ("$1.01", "one dollar and one cent"),
    ("$2.5 million", "two point five million dollars"),
    ("£3.50", "three pounds and fifty pence"),
    # times
    ("3:30 pm", "three thirty p.m."),
    ("at 3:05 PM.", "at three oh five p.m."),
    ("3.30 p.m.", "three thirty p.m."),
    ("10am", "ten a.m."),
    ("15:05", "three oh five p.m."),
    ("09:00", "nine a.m."),
    ("00:30", "twelve thirty a.m."),
    ("12:00", "twelve noon"),
    ("00:00", "twelve midnight"),
    ("3:00", "three o'clock"),
    ("10:15", "ten fifteen"),
    ("open 9am-5pm", "open nine a.m. to five p.m."),
    ("between 2-3 pm", "between two and three p.m."),
    ("raised at 14:32.", "raised at two thirty-two p.m."),
    # dates
    ("2026-11-21", "November twenty-first, twenty twenty-six"),
    ("21/11/2026", "November twenty-first, twenty twenty-six"),
    ("11/21/2026", "November twenty-first, twenty twenty-six"),
    ("03/04/2026", "April third, twenty twenty-six"),
    ("21 Nov 2026", "November twenty-first, twenty twenty-six"),
    ("Nov 21st, 2026", "November twenty-first, twenty twenty-six"),
    ("by 5 May.", "by May fifth."),
    ("on 1/1/2005", "on January first, two thousand five"),
    ("since 1999", "since nineteen ninety-nine"),
    # ordinals, percentages, plain numbers
    ("21st", "twenty-first"),
    ("the 2nd and 3rd", "the second and third"),
    ("112th", "one hundred twelfth"),
    ("15%", "fifteen percent"),
    ("2.5%", "two point five percent"),
    ("-5%", "minus five percent"),
    ("2.5", "two point five"),
    ("0.75", "zero point seven five"),
    ("1,000,000", "one million"),
    ("3,450,000,000", "three billion four hundred fifty million"),
    ("999999", "nine hundred ninety-nine thousand nine hundred ninety-nine"),
    ("Press 1 for sales, 2 for support.", "Press one for sales, two for support."),
    ("10-20 items", "ten to twenty items"),
    ("-5 degrees", "minus five degrees"),
    # phone numbers
    ("+91 98765 43210", "plus nine one, nine eight seven six five, four three two one zero"),
    ("9876543210", "nine eight seven, six five four, three two one zero"),
    ("+919876543210", "plus nine one, nine eight seven, six five four, three two one zero"),
    ("987-654-3210", "nine eight seven, six five four, three two one zero"),
    ("Call 1800 123 4567.", "Call one eight zero zero, one two three, four five six seven."),
    # order and reference numbers
    ("Your order number is 12345.", "Your order number is one two three, four five."),
    ("order #4521", "order number four five two one"),
    ("AB12345", "eh B one two three, four five"),
    ("ticket TKT-4521", "ticket T K T, four five two one"),
    ("ref: XY-12-99", "reference X Y, one two, nine nine"),
    ("Your OTP is 482913", "Your O T P is four eight two, nine one three"),
    ("account no. 00123", "account number zero zero one, two three"),
    ("The order is 12 days late.", "The order is twelve days late."),
    # abbreviations and symbols
    ("Dr. Rao will call.", "Doctor Rao will call."),
    ("12 Main St., Bangalore", "twelve Main Street, Bangalore"),
    ("It is on Elm Dr.", "It is on Elm Drive."),
    ("approx. 5 mins", "approximately five minutes"),
    ("e.g. shoes", "for example shoes"),
    ("bags, shoes, etc. and more", "bags, shoes, et cetera and more"),
    ("Sharma & Sons", "Sharma and Sons"),
    ("We are open 24/7.", "We are open twenty-four seven."),
    ("Mon-Fri", "Monday to Friday"),
    ("1 hr", "one hour"),
    ("Write to support@acme.com.", "Write to support at acme dot com."),
    ("See www.acme.co.in today", "See acme dot co dot in today"),
    ("Get **50%** off", "Get fifty percent off"),
    ("4G network", "four G network"),
]

ORDINARY = [
    "Hello, thank you for calling.",
    "I'm sorry to hear that! Could you tell me what happened?",
    "Let me check that for you; it'll take a moment.",
    "I understand — that's frustrating.",
    "May I have your name, please?",
    "A refund was issued. Is there anything else?",
    "Plan A, B, or C?",
    "I am in the U.S. now.",
    "three thirty p.m.",  # already normalized
]


@pytest.mark.parametrize(("text", "said"), CASES)
def test_reads_like_a_person_on_the_phone(text: str, said: str) -> None:
    assert normalize_for_speech(text) == said
    assert normalize_for_speech(said) == said  # idempotent


@pytest.mark.parametrize("text", ORDINARY)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert normalize_for_speech(text) == text


def test_options_change_the_locale() -> None:
    us = SpeechOptions(day_first=False)
    assert normalize_for_speech("03/04/2026", us) == "March fourth, twenty twenty-six"
    assert normalize_for_speech("21/11/2026", us) == "November twenty-first, twenty twenty-six"
    clock24 = SpeechOptions(twelve_hour=False)
    assert normalize_for_speech("15:05 or 15:00", clock24) == "fifteen oh five or fifteen hundred"


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (105, "one hundred five"),
        (1250, "one thousand two hundred fifty"),
        (1_000_001, "one million one"),
        (
            999_999_999_999,
            "nine hundred ninety-nine billion nine hundred ninety-nine million "
            "nine hundred ninety-nine thousand nine hundred ninety-nine",
        ),
        (-7, "minus seven"),
    ],
)
def test_cardinal(n: int, words: str) -> None:
    assert cardinal(n) == words


def test_ordinals_years_and_digit_groups() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 5, 9, 12, 20, 21, 100)] == [
        "first",
        "second",
        "third",
        "fifth",
        "ninth",
        "twelfth",
        "twentieth",
        "twenty-first",
        "one hundredth",
    ]
    assert [year(n) for n in (2026, 2005, 2000, 2010, 1999, 1905, 1900)] == [
        "twenty twenty-six",
        "two thousand five",
        "two thousand",
        "twenty ten",
        "nineteen ninety-nine",
        "nineteen oh five",
        "nineteen hundred",
    ]
    assert digits("123456") == "one two three, four five six"
    assert digits("1234567") == "one two three, four five six seven"
    assert digits("12345678") == "one two three four, five six seven eight"
    assert digits("0042") == "zero zero four two"


FRAGMENTS = [
    "₹1,250.50",
    "Rs. 500/-",
    "$12.99",
    "3:30 pm",
    "3:30pm",
    "15:05",
    "09:00",
    "2026-11-21",
    "21/11/2026",
    "21st",
    "15%",
    "-5",
    "2.5",
    "+91 98765 43210",
    "9876543210",
    "order #4521",
    "AB12345",
    "ticket is 42",
    "No. 5",
    "Dr. Rao",
    "Main St.",
    "e.g.",
    "etc.",
    "approx.",
    "&",
    "24/7",
    "Mon-Fri",
    "10-20",
    "5 mins",
    "support@acme.com",
    "acme.com",
    "Nov 21",
    "in 2026",
    "1/2",
    "007",
    "4G",
    "COVID-19",
    "hello",
    "Thanks",
    "the",
    "A",
    "I",
    "-",
    "/",
    "(",
    ")",
    "@",
    "~",
    "+",
    "—",
    "*",
    "\n",
    "1,00,000",
    "p.m.",
    "ID",
    "OTP",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from([" ", ", ", ". ", " - ", "\n", "? "]))))
def test_normalizing_twice_changes_nothing_and_leaves_no_digits(parts: list[tuple[str, str]]) -> None:
    text = "".join(fragment + gap for fragment, gap in parts)
    once = normalize_for_speech(text)
    assert normalize_for_speech(once) == once
    assert not any(char.isdigit() for char in once)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789 .,:-/+%$₹#&*aAbpmZxhrsDt\n@", max_size=30))
def test_idempotent_on_arbitrary_text(text: str) -> None:
    once = normalize_for_speech(text)
    assert normalize_for_speech(once) == once
