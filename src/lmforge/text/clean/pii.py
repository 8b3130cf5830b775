"""PII redaction: e-mail addresses, phone numbers, IPv4/IPv6 addresses, credit-card numbers
(Luhn-checked), IBANs (ISO 13616 mod-97 checked) and credentials in URLs, each replaced by a
typed placeholder. Patterns are anchored on word boundaries so that an '@' inside a word, a
version number or a date is not taken for PII."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

PLACEHOLDERS = {
    "url_credentials": "<CREDENTIALS>",
    "email": "<EMAIL>",
    "iban": "<IBAN>",
    "credit_card": "<CREDIT_CARD>",
    "ipv6": "<IPV6>",
    "ipv4": "<IPV4>",
    "phone": "<PHONE>",
}

# scheme://user:password@host -> the user:password part
_URL_CREDENTIALS = re.compile(r"(?<=://)[^\s/@:]+:[^\s/@]+(?=@[\w.-]+)")
_EMAIL = re.compile(
    r"(?<![\w.+%@-])[A-Za-z0-9][\w.+%-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w@-])"
)
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)")
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w-]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_IPV4 = re.compile(
    r"(?<![\w.])(?<!v)(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
)
_VERSION_WORDS = re.compile(r"(?:version|ver\.?|release|v)\s*$", re.IGNORECASE)
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w-]|\.\d)"
)
# lengths by country (ISO 13616 registry), for the countries most often met
IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
    "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18,
    "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
}  # fmt: skip


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_issuer_ok(digits: str) -> bool:
    """Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro prefixes."""
    n, p2, p4 = len(digits), int(digits[:2]), int(digits[:4])
    return (
        (digits[0] == "4" and n in (13, 16, 19))
        or (51 <= p2 <= 55 or 2221 <= p4 <= 2720)
        and n == 16
        or p2 in (34, 37)
        and n == 15
        or (digits.startswith(("6011", "65", "64")) and n in (16, 19))
        or (3528 <= p4 <= 3589 and 16 <= n <= 19)
        or (p2 in (36, 38, 39) or 300 <= int(digits[:3]) <= 305)
        and 14 <= n <= 19
        or (digits.startswith("62") and 16 <= n <= 19)
        or (p2 in (50, 56, 57, 58, 67) and 12 <= n <= 19)
    )


def iban_valid(text: str) -> bool:
    iban = text.replace(" ", "")
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _is_ipv6(s: str) -> bool:
    if s.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", s):
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    # "12:30:45" style times are not valid IPv6; '::'-compressed short forms need a hex letter
    # or 3+ groups to be told from ratios and times
    return "::" not in s or len(re.findall(r"[0-9A-Fa-f]+", s)) >= 2 or s == "::1"


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, kind) spans, earlier kinds in PLACEHOLDERS winning."""
    spans: list[tuple[int, int, str]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e, _ in spans)

    def add(pattern: re.Pattern, kind: str, check=None):
        for m in pattern.finditer(text):
            if (check is None or check(m)) and free(m.start(), m.end()):
                spans.append((m.start(), m.end(), kind))

    add(_URL_CREDENTIALS, "url_credentials")
    add(_EMAIL, "email")
    add(_IBAN, "iban", lambda m: iban_valid(m.group()))

    def card(m):
        digits = re.sub(r"\D", "", m.group())
        return luhn_valid(digits) and card_issuer_ok(digits)

    add(_CARD, "credit_card", card)
    add(_IPV6, "ipv6", lambda m: _is_ipv6(m.group()))
    add(
        _IPV4, "ipv4", lambda m: not _VERSION_WORDS.search(text[max(0, m.start() - 12) : m.start()])
    )
    add(_PHONE, "phone", lambda m: len(re.sub(r"\D", "", m.group())) >= 7)
    return sorted(spans)


def redact(text: str, kinds: set[str] | None = None) -> tuple[str, Counter]:
    """(text with each PII span replaced by its placeholder, counts per kind)."""
    out, counts, last = [], Counter(), 0
    for start, end, kind in find_pii(text):
        if kinds is not None and kind not in kinds:
            continue
        out.append(text[last:start])
        out.append(PLACEHOLDERS[kind])
        counts[kind] += 1
        last = end
    out.append(text[last:])
    return "".join(out), counts
