"""Checksums and format rules that turn a pattern match into a finding worth trusting.

Each function answers one question about a candidate string and is the single place that rule lives, so the detector
and its negative tests exercise the same code.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter

__all__ = [
    "IBAN_LENGTHS",
    "card_network",
    "is_valid_iban",
    "is_valid_ip",
    "is_valid_us_itin",
    "is_valid_us_ssn",
    "luhn_valid",
    "shannon_entropy",
]

# ISO 13616 IBAN lengths per country (SWIFT IBAN registry). A wrong length is refused before the checksum runs.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum of a string of digits, as payment cards carry it."""
    if not digits.isdigit() or not digits:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# Issuer prefixes and the lengths each network issues. A Luhn-valid number outside every range is most likely an
# order or account number that passes the checksum by chance (one in ten random numbers does).
_CARD_NETWORKS: tuple[tuple[str, tuple[tuple[int, int], ...], frozenset[int]], ...] = (
    ("visa", ((4, 4),), frozenset({13, 16, 19})),
    ("mastercard", ((51, 55), (2221, 2720)), frozenset({16})),
    ("amex", ((34, 34), (37, 37)), frozenset({15})),
    ("discover", ((6011, 6011), (644, 649), (65, 65), (622126, 622925)), frozenset({16, 19})),
    ("diners", ((300, 305), (36, 36), (38, 39), (3095, 3095)), frozenset({14, 16, 19})),
    ("jcb", ((3528, 3589), (1800, 1800), (2131, 2131)), frozenset({15, 16, 19})),
    ("unionpay", ((62, 62),), frozenset({16, 17, 18, 19})),
    ("maestro", ((50, 50), (56, 69)), frozenset(range(12, 20))),
)


def card_network(digits: str) -> str | None:
    """The card network whose prefixes and lengths fit ``digits``, or None. Does not check the Luhn sum."""
    for network, ranges, lengths in _CARD_NETWORKS:
        if len(digits) not in lengths:
            continue
        for low, high in ranges:
            width = len(str(low))
            if low <= int(digits[:width]) <= high:
                return network
    return None


def is_valid_iban(candidate: str) -> bool:
    """ISO 13616: a known country, that country's length, and the mod-97 check digits (ISO 7064)."""
    compact = candidate.replace(" ", "").upper()
    country = compact[:2]
    if IBAN_LENGTHS.get(country) != len(compact) or not compact.isalnum() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    # Letters become two digits (A=10 … Z=35); folding the remainder as we go keeps the integers small.
    remainder = 0
    for char in rearranged:
        value = int(char, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder == 1


# Numbers the SSA has said it will never issue, plus ones printed in advertising and handed out by thousands.
_SSN_NEVER_ISSUED = frozenset({"078051120", "219099999", "123456789", "111111111", "333333333", "666666666"})


def is_valid_us_ssn(area: str, group: str, serial: str) -> bool:
    """US Social Security Number rules: no 000/666/9xx area, no 00 group, no 0000 serial, no famous samples."""
    if area in ("000", "666") or area.startswith("9") or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_NEVER_ISSUED


def is_valid_us_itin(area: str, group: str) -> bool:
    """US Individual Taxpayer Identification Number: 9xx area and a group in 50–65, 70–88, 90–92 or 94–99."""
    if not area.startswith("9"):
        return False
    value = int(group)
    return 50 <= value <= 65 or 70 <= value <= 88 or 90 <= value <= 92 or 94 <= value <= 99


def is_valid_ip(candidate: str) -> bool:
    """A syntactically valid IPv4 or IPv6 address (leading zeros in IPv4 octets are refused, as Python does)."""
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def shannon_entropy(text: str) -> float:
    """Bits per character; random base64 is near 6, hex near 4, English words near 3 or below."""
    if not text:
        return 0.0
    counts = Counter(text)
    length = len(text)
    return -sum(n / length * math.log2(n / length) for n in counts.values())
