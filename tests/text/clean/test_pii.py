"""PII redaction on labelled strings: positives must be found as their kind, negatives left
alone; precision and recall per kind over the whole list."""

from __future__ import annotations

from collections import Counter

from lmforge.text.clean.pii import find_pii, iban_valid, luhn_valid, redact

POSITIVE = {
    "email": ["alice@example.com", "bob.smith+news@mail.example.co.uk", "x_y-z@sub.domain.org",
              "Contact: j.doe@uni-bonn.de."],
    "phone": ["+44 20 7946 0958", "(555) 123-4567", "555-123-4567", "+1 415 555 2671",
              "+49 (0) 30 1234 5678", "555.123.4567"],
    "ipv4": ["192.168.0.1", "10.0.0.255", "server at 8.8.8.8.", "255.255.255.0"],
    "ipv6": ["2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a", "::1",
             "2001:0db8:85a3:0000:0000:8a2e:0370:7334"],
    "credit_card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005",
                    "6011111111111117", "4012888888881881"],
    "iban": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606",
             "NL91 ABNA 0417 1643 00"],
    "url_credentials": ["https://admin:hunter2@db.example.com/x", "ftp://u:p4ss@files.example.org"],
}  # fmt: skip

NEGATIVE = [
    "4111 1111 1111 1112",  # fails Luhn
    "1234 5678 9012 3456",  # fails Luhn
    "0000000000000000000",  # no issuer
    "GB82 WEST 1234 5698 7654 33",  # bad IBAN checksum
    "DE89370400440532013001",
    "user@localhost",  # no domain
    "name@example",  # no top-level domain
    "foo@bar@baz.com",  # '@' inside a word
    "price@5.99",
    "version 1.2.3.4",  # version numbers look like IPs
    "v10.0.0.1",
    "1.2.3.4.5",
    "999.1.1.1",
    "at 12:30:45",  # a time is no IPv6
    "ratio 3:2",
    "date 2021-03-04",
    "order 12345",
    "ISBN 978-3-16-148410-0",
    "call me at noon",
    "https://example.com/path?a=b",  # a URL without credentials
    "3.14159265358979",
]


def test_labelled_strings_precision_and_recall_per_kind():
    tp, fp, fn = Counter(), Counter(), Counter()
    for kind, samples in POSITIVE.items():
        for s in samples:
            found = [k for _, _, k in find_pii(s)]
            if kind in found:
                tp[kind] += 1
            else:
                fn[kind] += 1
            for k in found:
                if k != kind:
                    fp[k] += 1
    for s in NEGATIVE:
        for _, _, k in find_pii(s):
            fp[k] += 1
    for kind in POSITIVE:
        precision = tp[kind] / max(1, tp[kind] + fp[kind])
        recall = tp[kind] / (tp[kind] + fn[kind])
        assert precision == 1.0 and recall == 1.0, (kind, precision, recall, fp, fn)


def test_each_negative_is_left_alone():
    for s in NEGATIVE:
        assert redact(s) == (s, Counter()), s


def test_typed_placeholders_and_counts():
    text = "Mail a@b.com or c@d.org, card 4111-1111-1111-1111, from 10.1.2.3 via https://u:pw@h.io/"
    out, counts = redact(text)
    assert (
        out
        == "Mail <EMAIL> or <EMAIL>, card <CREDIT_CARD>, from <IPV4> via https://<CREDENTIALS>@h.io/"
    )
    assert counts == {"email": 2, "credit_card": 1, "ipv4": 1, "url_credentials": 1}
    assert redact(text, {"email"})[1] == {"email": 2}


def test_checksums():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST1234569876543")
