"""PII scrubbing: e-mail addresses, phone numbers and IP addresses become placeholders, counted."""

from __future__ import annotations

import re
from collections import Counter

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")
IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.])")
IPV6 = re.compile(
    r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}"
    r"[0-9A-Fa-f]{1,4})(?![\w:])"
)
# An international number (+CC ...), a number with an area code in brackets, or digit groups joined by
# '-' or '.': 9-15 digits in all. Plain runs of numbers separated by spaces (years, verses) are not phones.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
    r"|\(\d{2,4}\)[ .-]?\d{2,4}(?:[ .-]\d{2,4}){1,3}"
    r"|\d{2,4}(?:[.-]\d{2,4}){2,4})(?![\w])"
)
# cheap tests that rule a pattern out for most text, so the full patterns scan only candidates
_MAYBE_IPV4 = re.compile(r"\d\.\d{1,3}\.\d")
_MAYBE_IPV6 = re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:")
_MAYBE_PHONE = re.compile(r"\d[\d ().-]{7,}\d")
PLACEHOLDERS = {"email": "<EMAIL_ADDRESS>", "ip": "<IP_ADDRESS>", "phone": "<PHONE_NUMBER>"}


def _phone(match: re.Match[str]) -> bool:
    return 9 <= sum(c.isdigit() for c in match.group()) <= 15


def scrub(text: str) -> tuple[str, Counter[str]]:
    """Text with PII replaced, and how many of each kind were replaced."""
    counts: Counter[str] = Counter()
    if "@" in text:
        text, n = EMAIL.subn(PLACEHOLDERS["email"], text)
        counts["email"] += n
    for maybe, pattern in ((_MAYBE_IPV4, IPV4), (_MAYBE_IPV6, IPV6)):
        if maybe.search(text):
            text, n = pattern.subn(PLACEHOLDERS["ip"], text)
            counts["ip"] += n

    def phone(m: re.Match[str]) -> str:
        if _phone(m):
            counts["phone"] += 1
            return PLACEHOLDERS["phone"]
        return m.group()

    if _MAYBE_PHONE.search(text):
        text = PHONE.sub(phone, text)
    return text, +counts
