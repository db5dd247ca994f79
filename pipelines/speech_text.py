"""Reply text as a person would say it on the phone (English): numbers, money, dates, times, codes.

Replies are templated with tool results, so they hold raw numbers. `normalize_for_speech` says them in
words, leaves ordinary words alone, and normalizing twice changes nothing. Conventions:
- Money: "₹1,250.50" / "Rs. 1250.50" / "INR 1250.50" → "one thousand two hundred fifty rupees and fifty
  paise"; "$12.99" → "twelve dollars and ninety-nine cents"; € and £ too. Scale up to billions, no "and".
- Numbers with commas or up to 6 digits are cardinals; bare runs of 7+ digits are phone numbers or
  ids, read digit by digit. Those, and codes ("AB12345", "order 4521", "#4521", "OTP 482913"), are read
  in groups of 3-4 digits with commas (pauses) between, "0" as "zero"; written groups ("+91 98765
  43210") are kept. A spelled "A" is written "eh": espeak-ng reads a lone "A" as the article.
- Times: "3:30 pm" → "three thirty p.m."; "3:05" → "three oh five"; "3:00" → "three o'clock". 24-hour
  style ("15:05", "09:00") is said on the 12-hour clock: "three oh five p.m.", "nine a.m."; "12:00" →
  "twelve noon", "00:00" → "twelve midnight". "a.m." keeps its dots: espeak-ng reads "AM" as "am".
- Dates: "2026-11-21", "21/11/2026", "21 Nov 2026", "Nov 21st, 2026" → "November twenty-first, twenty
  twenty-six". Numeric dates are day first unless `day_first=False`; when only one order is a valid
  date ("11/21/2026"), that order wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SpeechOptions:
    """Locale choices for `normalize_for_speech`."""

    day_first: bool = True
    """Numeric dates are dd/mm/yyyy (India, UK). False: mm/dd/yyyy (US)."""
    twelve_hour: bool = True
    """Say 24-hour times on the 12-hour clock ("15:05" → "three oh five p.m."). False: "fifteen oh five"."""


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth"}
_ORDINALS |= {"nine": "ninth", "twelve": "twelfth"}
_MONTHS = "January February March April May June July August September October November December".split()


def cardinal(n: int) -> str:
    """`n` in words: 1250 → "one thousand two hundred fifty"; negative numbers get "minus"."""
    if n < 0:
        return f"minus {cardinal(-n)}"
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else "")
    value, name = next(scale for scale in _SCALES if n >= scale[0])
    high, rest = divmod(n, value)
    return f"{cardinal(high)} {name}" + (f" {cardinal(rest)}" if rest else "")


def ordinal(n: int) -> str:
    """`n` as an ordinal in words: 21 → "twenty-first"."""
    words = cardinal(n)
    cut = max(words.rfind(" "), words.rfind("-")) + 1
    head, last = words[:cut], words[cut:]
    return head + _ORDINALS.get(last, last[:-1] + "ieth" if last.endswith("y") else last + "th")


def year(n: int) -> str:
    """A year as said: 2026 → "twenty twenty-six", 2005 → "two thousand five", 1905 → "nineteen oh five"."""
    if not 1100 <= n <= 2999 or 2000 <= n <= 2009:
        return cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{cardinal(high)} hundred"
    return f"{cardinal(high)} {'oh ' if low < 10 else ''}{cardinal(low)}"


def _group_sizes(n: int) -> list[int]:
    if n <= 4:
        return [n]
    if n % 4 == 0 and n % 3:
        return [4] * (n // 4)
    return [3] * (n // 3 - (n % 3 == 1)) + [[], [4], [2]][n % 3]


def digits(s: str) -> str:
    """Digits one by one, in groups of 3-4: "1234567" → "one two three, four five six seven"."""
    groups, start = [], 0
    for size in _group_sizes(len(s)):
        groups.append(" ".join(_ONES[int(d)] for d in s[start : start + size]))
        start += size
    return ", ".join(groups)


def spell(code: str) -> str:
    """A reference code: letters one by one, digit runs in groups, hyphens as pauses."""
    parts = []
    for run in re.findall(r"[A-Za-z]+|\d+|-", code):
        if run == "-":
            parts.append(",")
        elif run.isdigit():
            parts.append(digits(run))
        else:
            parts.append(" ".join("eh" if c == "A" else c for c in run.upper()))
    return " ".join(parts).replace(" ,", ",")


def number(text: str) -> str:
    """A written number as said: "1,250" → cardinal, "2.5" → "two point five", "007" → digit by digit."""
    whole, *decimals = text.replace(",", "").split(".")
    if len(whole) > 12 or (len(whole) > 1 and whole.startswith("0")):
        said = digits(whole)
    else:
        said = cardinal(int(whole)) if whole else ""
    for part in decimals:
        said += " point " + " ".join(_ONES[int(d)] for d in part)
    return said.strip()


_Match = re.Match[str]
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d{1,2}(?:,\d{2})+,\d{3}|\d+)(?:\.\d+)?"
"""A written number: plain, Western (1,250,000) or Indian (12,50,000) grouping, optional decimals."""
_NUM_END = r"(?!\d|[,.]\d)"

# name: (one, many, one hundredth, many hundredths)
_CURRENCIES = {
    "rupee": ("rupee", "rupees", "paisa", "paise"),
    "dollar": ("dollar", "dollars", "cent", "cents"),
}
_CURRENCIES |= {"euro": ("euro", "euros", "cent", "cents"), "pound": ("pound", "pounds", "penny", "pence")}
_CURRENCY_OF = {"₹": "rupee", "rs": "rupee", "inr": "rupee", "rupee": "rupee", "rupees": "rupee"}
_CURRENCY_OF |= {"$": "dollar", "us$": "dollar", "usd": "dollar", "dollar": "dollar", "dollars": "dollar"}
_CURRENCY_OF |= {"€": "euro", "eur": "euro", "euro": "euro", "euros": "euro", "£": "pound", "gbp": "pound"}
_CUR_PRE = r"(?:₹|(?<![A-Za-z])(?:Rs\.?|INR|USD|US\$|EUR|GBP)|\$|€|£)"
_CUR_POST = r"(?:INR|USD|EUR|GBP|Rs\b\.?|rupees?\b|dollars?\b|euros?\b)"


def _currency(symbol: str) -> tuple[str, str, str, str]:
    return _CURRENCIES[_CURRENCY_OF[symbol.strip().rstrip(".").lower()]]


def _money(amount: str, symbol: str) -> str:
    one, many, sub_one, sub_many = _currency(symbol)
    whole, _, frac = amount.replace(",", "").partition(".")
    if len(frac) > 2:
        return f"{number(amount)} {many}"
    units, subunits = int(whole or "0"), int(frac.ljust(2, "0")) if frac else 0
    said = f"{cardinal(units)} {one if units == 1 else many}" if units or not subunits else ""
    if subunits:
        said += (" and " if said else "") + f"{cardinal(subunits)} {sub_one if subunits == 1 else sub_many}"
    return said


def _money_match(m: _Match, _: SpeechOptions) -> str:
    if m["after"]:
        return _money(m["a2"], m["after"])
    low, high, magnitude = m["a"], m["b"], m["mag"]
    if magnitude:  # "$2.5 million" → "two point five million dollars"
        spread = f"{number(low)}{f' to {number(high)}' if high else ''}"
        return f"{spread} {magnitude} {_currency(m['cur'])[1]}"
    if high:
        return f"{number(low) if '.' not in low else _money(low, m['cur'])} to {_money(high, m['cur'])}"
    return _money(low, m["cur"])


_MONTH = (
    r"(?P<mon>Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\b"
)


def _date(day: int, month: int, year_digits: str | None) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    said = f"{_MONTHS[month - 1]} {ordinal(day)}"
    if year_digits:
        said += f", {year(int(year_digits) + (2000 if len(year_digits) == 2 else 0))}"
    return said


def _named_date(m: _Match, _: SpeechOptions) -> str:
    month = next(i for i, name in enumerate(_MONTHS, 1) if name.startswith(m["mon"][:3]))
    if "d" not in m.groupdict():  # "November 2026"
        return f"{_MONTHS[month - 1]} {year(int(m['y']))}"
    return _date(int(m["d"]), month, m["y"]) or m[0]


def _numeric_date(m: _Match, options: SpeechOptions) -> str:
    if m["iso"]:
        return _date(int(m["d"]), int(m["m"]), m["y"]) or m[0]
    if m["sep"] == "." and len(m["y2"]) == 2:  # "1.2.26" is more likely a version than a date
        return m[0]
    first, second = int(m["a"]), int(m["b"])
    day, month = (first, second) if options.day_first else (second, first)
    if month > 12 and day <= 12:  # only the other order makes a date
        day, month = month, day
    return _date(day, month, m["y2"]) or m[0]


def _clock(hour: int, minute: int, suffix: str = "") -> str:
    said = cardinal(hour)
    if minute:
        said += f" {'oh ' if minute < 10 else ''}{cardinal(minute)}"
    elif not suffix:
        said += " o'clock"
    return f"{said} {suffix}".rstrip()


def _time_with_suffix(m: _Match, _: SpeechOptions) -> str:
    hour, minute = int(m["h"]), int(m["min"] or 0)
    if hour > 23 or minute > 59:
        return m[0]
    return _clock(hour - 12 if hour > 12 else hour or 12, minute, f"{m['ap'].lower()}.m.")


def _time_24(m: _Match, options: SpeechOptions) -> str:
    hour, minute = int(m["h"]), int(m["min"])
    if hour == 12 and minute == 0:
        return "twelve noon"
    if not (hour == 0 or hour > 12 or m["h"].startswith("0")):  # 1-12 without a leading zero: no a.m./p.m.
        return _clock(hour, minute)
    if not options.twelve_hour:
        return f"{cardinal(hour)} hundred" if minute == 0 else _clock(hour, minute)
    if hour == 0 and minute == 0:
        return "twelve midnight"
    said = _clock(hour % 12 or 12, minute, "p.m." if hour >= 12 else "a.m.")
    return said[:-1] if m.string.startswith(".", m.end()) else said  # one dot for "p.m." and the stop


def _phone(m: _Match, _: SpeechOptions) -> str:
    groups = re.findall(r"\d+", m[0])
    if not 8 <= sum(map(len, groups)) <= 15 or (not m[0].startswith("+") and sum(map(len, groups)) < 10):
        return m[0]
    if m[0].startswith("+") and len(groups) == 1:  # "+919876543210": the national number is the last 10
        whole = groups[0]
        groups = [whole[:-10], whole[-10:]] if len(whole) > 10 else [whole[:2], whole[2:]]
    # Groups the writer chose (up to 5 digits, as in "98765 43210") are kept whole.
    said = ", ".join(" ".join(_ONES[int(d)] for d in g) if len(g) <= 5 else digits(g) for g in groups)
    return f"plus {said}" if m[0].startswith("+") else said


_KEY_WORDS = {"ref": "reference", "acct": "account", "a/c": "account", "txn": "transaction"}
_KEY_WORDS |= {"otp": "O T P", "pnr": "P N R", "awb": "eh W B"}


def _keyed_code(m: _Match, _: SpeechOptions) -> str:
    label, code = m["label"], m["code"]
    if m["verb"] and not label and len(code) < 4:  # "order is 12 days late" is not an order number
        return m[0]
    said = _KEY_WORDS.get(m["key"].lower(), m["key"])
    if (label and label.lower().rstrip(".") in ("no", "num")) or ("#" in m["sep"] and not label):
        label = "number"
    return " ".join(part for part in (said, label, (m["verb"] or "").strip(), spell(code)) if part)


def _range(m: _Match, _: SpeechOptions) -> str:
    between = re.search(r"between \S+$", m.string[: m.start()]) is not None  # "between 2 and 3"
    return f"{m['suf'] or ''} {'and' if between else 'to'} "


def _signed(m: _Match, _: SpeechOptions) -> str:
    return ("minus " if m["neg"] else "") + number(m["n"])


def _glued(m: _Match, _: SpeechOptions) -> str:
    """Digits stuck to letters ("4G", "iPhone15"), and whatever else is left: words, spaced off letters."""
    before, after = m.string[m.start() - 1 : m.start()], m.string[m.end() : m.end() + 1]
    return f"{' ' if before.isalpha() else ''}{number(m[0])}{' ' if after.isalpha() else ''}"


def _stop_after(m: _Match) -> str:
    """A full stop to keep when the abbreviation's dot in `m` also ended the sentence."""
    ended = m[0].endswith(".") and re.match(r"\s*$|\s+[A-Z]", m.string[m.end() :]) is not None
    return "." if ended else ""


_UNITS = {"min": "minute", "hr": "hour", "sec": "second", "km": "kilometer", "kg": "kilogram"}
_UNITS |= {"gb": "gigabyte", "mb": "megabyte", "tb": "terabyte", "ml": "milliliter", "cm": "centimeter"}


_ABBREVIATIONS = {"e.g.": "for example", "i.e.": "that is", "approx.": "approximately", "vs.": "versus"}
_ABBREVIATIONS |= {"mr.": "Mister", "mrs.": "Missus", "ms.": "Miz", "prof.": "Professor", "etc.": "et cetera"}
_ABBREVIATIONS |= {"rd.": "Road", "ave.": "Avenue", "ltd.": "Limited", "pvt.": "Private", "apt.": "Apartment"}
_ABBREVIATIONS |= {"dept.": "Department", "govt.": "Government", "dr.": "Drive", "st.": "Street"}
_SENTENCE_FINAL = ("etc.", "rd.", "ave.", "ltd.", "dr.", "st.")


def _abbreviation(m: _Match, _: SpeechOptions) -> str:
    word = m[0].lower()
    if word in ("dr.", "st.") and re.match(r"\s+[A-Z]", m.string[m.end() :]):  # before a name
        return "Doctor" if word == "dr." else "Saint"
    return _ABBREVIATIONS[word] + (_stop_after(m) if word in _SENTENCE_FINAL else "")


def _email(m: _Match, _: SpeechOptions) -> str:
    said = re.sub(r"\d+", lambda d: f" {digits(d[0])} ", m[0])
    for symbol, word in ((".", "dot"), ("@", "at"), ("_", "underscore"), ("-", "dash"), ("+", "plus")):
        said = said.replace(symbol, f" {word} ")
    return said


_CODE = r"(?=[A-Za-z0-9-]*\d)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?![\w-]|[.,]\d)"
_CODE_KEYS = "|".join(
    "order reference ref ticket account acct a/c booking invoice tracking case complaint pnr policy"
    " transaction txn awb consignment otp pin pincode zip serial member customer registration"
    " confirmation ID".split()
)
_FRACTIONS = {"1/2": "one half", "1/3": "one third", "2/3": "two thirds", "1/4": "one quarter"}
_FRACTIONS |= {"3/4": "three quarters"}
_DAYS = {d[:3].lower(): d for d in "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()}
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?"
_GROUP = r"[ -]?\(?\d{2,5}\)?"
_SUFFIX = r"(?:st|nd|rd|th)"
_SPACES = r"[ \t]+(?=[,.;:!?])|(?<=[ \t])[ \t]+"  # before punctuation, or doubled
_Say = Callable[[_Match, SpeechOptions], str]

# Order matters: each rule turns what it matches into words, so later rules never see it again.
_RULE_SOURCES: list[tuple[str, _Say]] = [
    (_SPACES, lambda m, o: ""),
    (r"[*`]", lambda m, o: ""),  # markdown emphasis an LLM may emit
    (r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+", _email),
    (
        r"(?<![\w@.])(?:https?://)?(?:www\.)?[\w-]+(?:\.[\w-]+)*\.(?:com|in|org|net|io|co|ai)(?![A-Za-z])",
        lambda m, o: re.sub(r"^(?:https?://)?(?:www\.)?", "", m[0]).replace(".", " dot "),
    ),
    (
        rf"(?:(?P<cur>{_CUR_PRE})\s?(?P<a>{_NUM})(?:/-)?(?:\s?[-–]\s?(?:{_CUR_PRE})?\s?(?P<b>{_NUM}))?"
        rf"|(?P<a2>{_NUM})\s?(?P<after>{_CUR_POST}))(?:/-)?{_NUM_END}"
        r"(?:\s(?P<mag>thousand|million|billion|lakhs?|crores?)\b)?",
        _money_match,
    ),
    (
        r"(?<![\d/.-])(?:(?P<iso>(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2}))"
        r"|(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<y2>\d{4}|\d{2}))(?![\d/-]|\.\d)",
        _numeric_date,
    ),
    (rf"\b{_MONTH}\.?\s(?P<d>\d{{1,2}}){_SUFFIX}?\b(?:,?\s(?P<y>\d{{4}})\b)?", _named_date),
    (rf"\b(?P<d>\d{{1,2}}){_SUFFIX}?\s(?:of\s)?{_MONTH}(?:\.?,?\s(?P<y>\d{{4}})\b)?", _named_date),
    (rf"\b{_MONTH}\.?,?\s(?P<y>\d{{4}})\b", _named_date),
    (
        rf"(?<![\w+-])(?:\+\d{{1,3}}(?:{_GROUP}){{1,4}}|\+\d{{8,14}}"
        rf"|(?:\(\d{{2,5}}\)|\d{{3,5}})(?:{_GROUP}){{1,3}})(?![\d-])",
        _phone,
    ),
    (
        rf"(?i)\b(?P<key>{_CODE_KEYS})(?:\s(?P<label>number|no\.?|num|id|code)\b)?"
        rf"(?P<verb>\s(?:is|was))?(?P<sep>\s?[:#]?\s?)(?P<code>{_CODE})",
        _keyed_code,
    ),
    (rf"(?i)(?:#|\bNo\.)\s?(?P<code>{_CODE})", lambda m, o: f"number {spell(m['code'])}"),
    (  # a capitalized code, unless it is a word with a number ("COVID-19")
        r"(?<![\w-])(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9][A-Z0-9-]{2,}[A-Z0-9](?![\w-])",
        lambda m, o: m[0] if re.search("[A-Z]{5}", m[0]) else spell(m[0]),
    ),
    (r"(?<![\w.,])\d{7,}(?![\w,]|\.\d)", lambda m, o: digits(m[0])),
    (r"\b24\s?[/x]\s?7\b", lambda m, o: "twenty-four seven"),
    (r"(?<![\d/.])[1-3]/[2-4](?![\d/])", lambda m, o: _FRACTIONS.get(m[0], m[0])),
    (
        rf"(?i)\b{_DAY}(?:\s?[-–]\s?{_DAY})+\b",
        lambda m, o: " to ".join(_DAYS[d[:3].lower()] for d in re.findall(_DAY, m[0], re.I)),
    ),
    (r"(?i)(?<=\d)(?P<suf>\s?(?:[ap]\.?\s?m\b\.?|%))?\s?[-–]\s?(?=[₹$€£]?\d)", _range),
    (r"(?i)(?<![\d:.])(?P<h>\d{1,2})(?:[:.](?P<min>\d{2}))?\s?(?P<ap>[ap])\.?\s?m\b\.?", _time_with_suffix),
    (r"(?<![\d:.])(?P<h>[01]?\d|2[0-3]):(?P<min>[0-5]\d)(?![\d:])", _time_24),
    (rf"(?<![\w.,])(?P<neg>-)?(?P<n>{_NUM})\s?%", lambda m, o: f"{_signed(m, o)} percent"),
    (rf"(?i)(?<![\w.,])(?P<n>\d+){_SUFFIX}\b", lambda m, o: ordinal(int(m["n"]))),
    (
        rf"(?i)(?<![\w.,])(?P<n>{_NUM})\s?(?P<u>min|hr|sec|km|kg|gb|mb|tb|ml|cm)s?\b\.?",
        lambda m, o: f"{m['n']} {_UNITS[m['u'].lower()]}{'' if m['n'] == '1' else 's'}{_stop_after(m)}",
    ),
    (
        r"\b(?:in|since|year|until|till|by|from|before|after)\s(?P<y>1[5-9]\d\d|20\d\d)\b(?![.,]\d)",
        lambda m, o: m[0][: -len(m["y"])] + year(int(m["y"])),
    ),
    (r"(?<=\d)/(?=\d)", lambda m, o: " slash "),
    (r"~\s?(?=\d)", lambda m, o: "about "),
    (r"(?<=\d)\+", lambda m, o: " plus"),
    (rf"(?<![\w.,])(?P<neg>[-−])?(?P<n>{_NUM}(?:\.\d+)*){_NUM_END}(?![A-Za-z])", _signed),
    (r"\d+", _glued),
    (r"\s?&\s?", lambda m, o: " and "),
    (r"\s?@\s?", lambda m, o: " at "),
    (_SPACES, lambda m, o: ""),  # again: rules above leave spaces
    (r"(?<![\w.])(?:Mr|Mrs|Ms|Dr|St|Prof|Rd|Ave|Ltd|Pvt|Dept|Govt|Apt)\.(?=\s|[,;:)]|$)", _abbreviation),
    (r"(?i)(?<![\w.])(?:e\.g\.|i\.e\.|(?:approx|vs|etc)\.)(?=\s|[,;:)]|$)", _abbreviation),
    (r"(?m)^[ \t]*(?:[-*•][ \t]+)+", lambda m, o: ""),  # markdown bullets
]
_RULES = [(re.compile(source), say) for source, say in _RULE_SOURCES]


def normalize_for_speech(text: str, options: SpeechOptions | None = None) -> str:
    """`text` with numbers, money, dates, times, phone numbers, codes and abbreviations in spoken words.

    Ordinary words are left alone, and the result normalizes to itself. The module docstring lists
    the conventions.
    """
    opts = options or SpeechOptions()
    for pattern, say in _RULES:
        text = pattern.sub(lambda m: say(m, opts), text)  # noqa: B023 (used before the loop moves on)
    return text.strip()
