"""Personal data in text: patterns with validators first, an optional NER model for names, places and organisations.

The pattern tier is deterministic and fast (well under a millisecond per kilobyte): every candidate a regular
expression finds must also pass the rule of its kind (Luhn and issuer ranges for cards, mod-97 for IBANs, the
``phonenumbers`` library for phones, SSA rules for SSNs, ``ipaddress`` for IPs, a JSON header for JWTs) before it
becomes a finding. Words around a candidate ("phone:", "SSN") raise its score. Names of people, places and
organisations need a model: pass one as ``ner`` (``SpacyNerDetector``) and its findings are merged in.

Entity type names follow Microsoft Presidio's, so policies and evaluation data carry over.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import pairwise

import phonenumbers

from llmops.guardrails._findings import Detector, Finding, sort_findings
from llmops.guardrails._secrets import SECRET_KINDS, SecretDetector
from llmops.guardrails._validators import (
    IBAN_LENGTHS,
    card_network,
    is_valid_iban,
    is_valid_ip,
    is_valid_us_itin,
    is_valid_us_ssn,
    luhn_valid,
)

__all__ = ["DEFAULT_PHONE_REGIONS", "NER_ENTITY_TYPES", "PII_ENTITY_TYPES", "PiiDetector"]

# Entity types that need a language model; the pattern tier covers LOCATION and NRP only through word lists.
NER_ENTITY_TYPES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"})

PII_ENTITY_TYPES = frozenset(
    {
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "IBAN_CODE",
        "US_SSN",
        "US_ITIN",
        "US_DRIVER_LICENSE",
        "IP_ADDRESS",
        "URL",
        *NER_ENTITY_TYPES,
        *SECRET_KINDS,
    }
)

# Regions a national-format phone number (no "+") is tried against, most likely first. A number valid in the first
# region scores higher than one valid only elsewhere.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "IN", "AU", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "NO", "DK", "FI", "PL", "CZ",
    "HU", "PT", "IE", "GR", "BR", "MX", "JP", "IL", "ZA",
)  # fmt: skip

_EMAIL = re.compile(
    r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w\-])"
)
_URL = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"'`{}|\\^\[\]]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?'\")]}*"
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)(?![\w:])")
_CARD = re.compile(r"(?<![\d\-.])\d(?:[ \-]?\d){11,18}(?![\d\-]|\.\d)")
_CARD_GROUPING = re.compile(r"\d+(?:([ \-])\d+)*")
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}\b")
_SSN = re.compile(r"(?<![\d\-])(\d{3})([\- ]?)(\d{2})\2(\d{4})(?![\d\-]|\.\d)")
_DRIVER_LICENSE = re.compile(
    r"(?i)\b(?:driver'?s?|driving)\s+licen[cs]e(?:\s+(?:number|no\.?|#))?\s*(?:is\b|:|#)?\s*"
    r"(?P<value>(?=[A-Z\-]*\d)[A-Z0-9][A-Z0-9\-]{4,16}[A-Z0-9])\b"
)
# A run of digits with the separators phone numbers use; an extension may follow. The digit count is checked later.
_PHONE = re.compile(
    r"(?<![\w+/.\-])(?:\+ ?|00)?(?:\(\d{1,4}\) ?)?\d[\d ().\-]{4,22}\d(?: ?(?:x|ext\.?|extension) ?\d{1,6})?(?!\w|-\d)"
    r"|(?<![\w+/.\-])\(\d{1,4}\) ?\d{3,}(?:[ .\-]\d+)*(?!\w|-\d)"
)
_PHONE_BAD_SEPARATORS = re.compile(r"[ .\-]{2,}|[.\-] |\([^)]*$|^[^(]*\)")

_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|cellphone|fax|call|calling|text|sms|whatsapp|contact|dial|ring|"
    r"office|desk|home|work|reach)\b"
)
_RECENT_RESULTS = 16
_PHONE_OTHER_REGION = 0.45  # score of a national number valid only outside the first region
_PHONE_CONTEXT_BOOST = 0.25
_VERSION_CONTEXT = re.compile(r"(?i)\b(?:version|release|v|ver|build)\.?\s*$")
_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|ssns|social\s+security|social\s+sec|ss#)")
_ITIN_CONTEXT = re.compile(r"(?i)\b(?:itin|taxpayer|tax\s+id)")

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
    r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_ISO_DATE = re.compile(
    r"\b(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(?:Z|[+\-]\d{2}:?\d{2})?)?(?![\d\-])"
)
_NUMERIC_DATE = re.compile(r"(?<![\d/.\-])(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})(?![\d/.\-]|\.\d)")
_WORDY_DATE = re.compile(
    rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}"
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|{_MONTH}\.?\s+\d{{4}})\b"
)


def _context_near(text: str, start: int, end: int, pattern: re.Pattern[str], before: int = 40, after: int = 16) -> bool:
    """Whether a context word appears shortly before or after the span (labels precede values, "x office" follows)."""
    return bool(pattern.search(text, max(0, start - before), start) or pattern.search(text, end, end + after))


_LEXICON_WORD = re.compile(r"[^\W\d_][\w'’\-]*")


@dataclass(frozen=True)
class _Lexicon:
    """A word list as lower-case phrases, indexed by first word, with the capitalised-only phrases."""

    phrases: frozenset[str]
    capitalised_only: frozenset[str]
    longest_from: dict[str, int]  # first word -> words in the longest phrase starting with it

    def matches(self, text: str, *, always_capitalised: bool = False) -> Iterator[tuple[int, int]]:
        """Spans of whole-word phrases of the list in ``text`` (plurals in -s/-es included), longest first."""
        words = [(m.start(), m.end(), m.group().lower()) for m in _LEXICON_WORD.finditer(text)]
        index = 0
        while index < len(words):
            longest = max((self.longest_from.get(w, 0) for w in _singulars(words[index][2])), default=0)
            matched = 0
            for size in range(min(longest, len(words) - index), 0, -1):
                window = words[index : index + size]
                # Only words separated by spaces form a phrase ("United Kingdom", not "United.Kingdom").
                if size > 1 and any(not text[a[1] : b[0]].isspace() for a, b in pairwise(window)):
                    continue
                phrase = " ".join(w for _, _, w in window)
                found = next((c for c in _singulars(phrase) if c in self.phrases), None)
                start = window[0][0]
                if found is None or (
                    (always_capitalised or found in self.capitalised_only) and not text[start].isupper()
                ):
                    continue
                matched = size
                yield start, window[-1][1]
                break
            index += matched or 1


def _singulars(word: str) -> tuple[str, ...]:
    """The word and the forms it may be the plural of ("saudis" -> "saudi", "swisses" -> "swiss")."""
    if word.endswith("es"):
        return word, word[:-1], word[:-2]
    if word.endswith("s"):
        return word, word[:-1]
    return (word,)


def _load_lexicon(resource: str) -> _Lexicon:
    phrases: set[str] = set()
    capitalised: set[str] = set()
    longest_from: dict[str, int] = {}
    for line in (resources.files("llmops.guardrails") / "_data" / resource).read_text("utf-8").splitlines():
        term = line.strip()
        if not term or term.startswith("#"):
            continue
        words = term.lstrip("^").lower().split()
        phrase = " ".join(words)
        phrases.add(phrase)
        longest_from[words[0]] = max(longest_from.get(words[0], 0), len(words))
        if term.startswith("^"):
            capitalised.add(phrase)
    return _Lexicon(frozenset(phrases), frozenset(capitalised), longest_from)


class PiiDetector:
    """Finds personal data and credentials, each checked by the validator of its kind.

    Entity types: ``EMAIL_ADDRESS``, ``PHONE_NUMBER``, ``CREDIT_CARD``, ``IBAN_CODE``, ``US_SSN``, ``US_ITIN``,
    ``US_DRIVER_LICENSE``, ``IP_ADDRESS``, ``URL``, ``DATE_TIME`` (dates written in full), ``LOCATION`` (country
    names), ``NRP`` (nationalities, religious and political groups), the secrets of ``SecretDetector``
    (``API_KEY``, ``PRIVATE_KEY``, ``JWT``, ``SECRET``), and, when an NER detector is given, ``PERSON``,
    ``LOCATION``, ``ORGANIZATION``, ``NRP`` and ``DATE_TIME`` from the model.

    Example:
        >>> pii = PiiDetector()
        >>> text = "Card 4111 1111 1111 1111, call +44 20 7946 0958"
        >>> [(f.kind, f.value(text)) for f in pii.detect(text)]
        [('CREDIT_CARD', '4111 1111 1111 1111'), ('PHONE_NUMBER', '+44 20 7946 0958')]
    """

    name = "pii"

    def __init__(
        self,
        *,
        entity_types: Iterable[str] | None = None,
        ner: Detector | None = None,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
        min_score: float = 0.5,
    ) -> None:
        """Create the detector.

        Args:
            entity_types: The types to report (default: all of ``PII_ENTITY_TYPES``). Unknown names are refused.
            ner: A detector for names, places and organisations, such as ``SpacyNerDetector()``; its findings of
                the selected types are merged in. Without it, PERSON and ORGANIZATION are not found.
            phone_regions: ISO 3166 regions for numbers written without a country code, most likely first.
            min_score: Findings scoring below this are dropped.

        Raises:
            ValueError: An entity type or phone region is unknown, or ``min_score`` is outside [0, 1].
        """
        selected = frozenset(PII_ENTITY_TYPES if entity_types is None else entity_types)
        unknown = selected - PII_ENTITY_TYPES
        if unknown:
            raise ValueError(f"unknown PII entity types: {sorted(unknown)}; known: {sorted(PII_ENTITY_TYPES)}")
        regions = tuple(phone_regions)
        bad_regions = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if bad_regions:
            raise ValueError(f"unknown phone regions: {bad_regions}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {min_score}")
        self.entity_types = selected
        # The same text is usually scanned twice: by the input rail, then as the user's own text that the output
        # rail's leakage check compares the answer with. A few recent results are kept (in memory only).
        self._recent: OrderedDict[str, list[Finding]] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._ner = ner
        self._phone_regions = regions
        self._min_score = min_score
        self._secrets = SecretDetector() if selected & SECRET_KINDS else None
        self._countries = _load_lexicon("countries.txt")
        self._nrp = _load_lexicon("nrp.txt")

    def detect(self, text: str) -> list[Finding]:
        with self._recent_lock:
            cached = self._recent.get(text)
            if cached is not None:
                self._recent.move_to_end(text)
                return list(cached)
        candidates = [f for f in self._candidates(text) if f.kind in self.entity_types and f.score >= self._min_score]
        findings = resolve_overlaps(candidates)
        with self._recent_lock:
            self._recent[text] = findings
            if len(self._recent) > _RECENT_RESULTS:
                self._recent.popitem(last=False)
        return list(findings)

    def _candidates(self, text: str) -> Iterator[Finding]:
        wanted = self.entity_types
        if "@" in text and "EMAIL_ADDRESS" in wanted:
            yield from self._emails(text)
        if "URL" in wanted:
            yield from self._urls(text)
        if "IP_ADDRESS" in wanted:
            yield from self._ips(text)
        if "CREDIT_CARD" in wanted:
            yield from self._cards(text)
        if "IBAN_CODE" in wanted:
            yield from self._ibans(text)
        if wanted & {"US_SSN", "US_ITIN"}:
            yield from self._ssns(text)
        if "US_DRIVER_LICENSE" in wanted:
            for match in _DRIVER_LICENSE.finditer(text):
                yield self._finding(
                    "US_DRIVER_LICENSE", match.start("value"), match.end("value"), 0.9, "after 'license'"
                )
        if "PHONE_NUMBER" in wanted:
            yield from self._phones(text)
        if "DATE_TIME" in wanted:
            yield from self._dates(text)
        if "LOCATION" in wanted:
            yield from self._lexicon_matches(text, self._countries, "LOCATION", 0.7, capitalised_only=True)
        if "NRP" in wanted:
            yield from self._lexicon_matches(text, self._nrp, "NRP", 0.7)
        if self._secrets is not None:
            yield from self._secrets.detect(text)
        if self._ner is not None and wanted & NER_ENTITY_TYPES:
            yield from self._ner.detect(text)

    def _finding(self, kind: str, start: int, end: int, score: float, reason: str) -> Finding:
        return Finding(kind, start, end, round(min(score, 1.0), 3), self.name, reason)

    def _emails(self, text: str) -> Iterator[Finding]:
        for match in _EMAIL.finditer(text):
            local = match.group().split("@", 1)[0]
            if ".." not in local and not local.endswith("."):
                yield self._finding("EMAIL_ADDRESS", match.start(), match.end(), 1.0, "email syntax")

    def _urls(self, text: str) -> Iterator[Finding]:
        for match in _URL.finditer(text):
            url = match.group()
            while url and url[-1] in _URL_TRAILING and not (url[-1] == ")" and url.count("(") >= url.count(")")):
                url = url[:-1]
            if "." in url.split("://", 1)[-1]:
                yield self._finding("URL", match.start(), match.start() + len(url), 0.85, "url with scheme or www")

    def _ips(self, text: str) -> Iterator[Finding]:
        for match in _IPV4.finditer(text):
            if is_valid_ip(match.group()) and not _VERSION_CONTEXT.search(
                text, max(0, match.start() - 12), match.start()
            ):
                yield self._finding("IP_ADDRESS", match.start(), match.end(), 0.9, "ipv4")
        if text.count(":") >= 2:
            for match in _IPV6.finditer(text):
                candidate = match.group()
                if sum(c.isalnum() for c in candidate) >= 2 and is_valid_ip(candidate):
                    yield self._finding("IP_ADDRESS", match.start(), match.end(), 0.9, "ipv6")

    def _cards(self, text: str) -> Iterator[Finding]:
        for match in _CARD.finditer(text):
            grouping = _CARD_GROUPING.fullmatch(match.group())
            # Mixed separators ("4111-1111 1111") are two numbers that happen to be adjacent, not one card.
            if grouping is None or len(set(re.findall(r"[ \-]", match.group()))) > 1:
                continue
            digits = re.sub(r"\D", "", match.group())
            if len(set(digits)) > 1 and luhn_valid(digits) and (network := card_network(digits)):
                yield self._finding("CREDIT_CARD", match.start(), match.end(), 1.0, f"luhn checksum, {network} range")

    def _ibans(self, text: str) -> Iterator[Finding]:
        for match in _IBAN.finditer(text):
            candidate = match.group()
            length = IBAN_LENGTHS.get(candidate[:2].upper())
            if length is None:
                continue
            # The pattern may run on into the next word; cut the candidate at its country's length.
            end = match.start()
            count = 0
            for index, char in enumerate(candidate):
                if char != " ":
                    count += 1
                if count == length:
                    end = match.start() + index + 1
                    break
            if count == length and not text[end : end + 1].isalnum() and is_valid_iban(text[match.start() : end]):
                yield self._finding("IBAN_CODE", match.start(), end, 1.0, "mod-97 checksum")

    def _ssns(self, text: str) -> Iterator[Finding]:
        for match in _SSN.finditer(text):
            area, separator, group, serial = match.groups()
            if area.startswith("9"):
                kind, valid, context = "US_ITIN", is_valid_us_itin(area, group), _ITIN_CONTEXT
            else:
                kind, valid, context = "US_SSN", is_valid_us_ssn(area, group, serial), _SSN_CONTEXT
            if not valid:
                continue
            near = _context_near(text, match.start(), match.end(), context, before=48)
            # Nine bare digits are too common (order numbers, zip+4) to flag without a word saying what they are.
            score = (0.95 if near else 0.85) if separator else (0.8 if near else 0.0)
            if score:
                yield self._finding(kind, match.start(), match.end(), score, "ssa number rules")

    def _phones(self, text: str) -> Iterator[Finding]:
        for match in _PHONE.finditer(text):
            candidate = match.group()
            digits = sum(c.isdigit() for c in candidate.split("x")[0].split("ext")[0])
            if not 7 <= digits <= 15 or _PHONE_BAD_SEPARATORS.search(candidate.split("x")[0]):
                continue
            near = _context_near(text, match.start(), match.end(), _PHONE_CONTEXT, after=12)
            # Without a phone word only a number valid in the first region can reach the threshold, so the other
            # regions (a parse each, ~60 µs) are tried only when they could change the outcome.
            regions = self._phone_regions if near or self._min_score <= _PHONE_OTHER_REGION else self._phone_regions[:1]
            score, reason = self._phone_score(candidate, regions)
            if score and near:
                score += _PHONE_CONTEXT_BOOST
                reason += ", phone word nearby"
            if score:
                yield self._finding("PHONE_NUMBER", match.start(), match.end(), score, reason)

    def _phone_score(self, candidate: str, national_regions: Sequence[str]) -> tuple[float, str]:
        international = candidate.startswith(("+", "00"))
        regions: Sequence[str | None] = [None] if international else national_regions
        number_text = "+" + candidate[2:] if candidate.startswith("00") else candidate
        possible_in: str | None = None
        for position, region in enumerate(regions):
            try:
                number = phonenumbers.parse(number_text, region)
            except phonenumbers.NumberParseException:
                continue
            if not phonenumbers.is_possible_number(number):
                continue
            if phonenumbers.is_valid_number(number):
                where = phonenumbers.region_code_for_number(number) or region or "?"
                if international:
                    return 0.7, f"valid international number ({where})"
                return (0.6 if position == 0 else _PHONE_OTHER_REGION), f"valid number for {where}"
            possible_in = possible_in or (region or "international")
        if possible_in is not None:
            return (0.5 if international else 0.3), f"possible number for {possible_in}"
        return 0.0, ""

    def _dates(self, text: str) -> Iterator[Finding]:
        for match in _ISO_DATE.finditer(text):
            year, month, day, hour, minute, second = match.groups()
            if _valid_date(int(year), int(month), int(day)) and (
                hour is None or (int(hour) < 24 and int(minute) < 60 and int(second or 0) < 61)
            ):
                yield self._finding("DATE_TIME", match.start(), match.end(), 0.9, "iso date")
        for match in _NUMERIC_DATE.finditer(text):
            first, separator, second_part, year = match.groups()
            if separator == "." and len(year) == 2:
                continue  # "1.2.23" is more often a version number than a date
            full_year = int(year) + (2000 if len(year) == 2 else 0)
            a, b = int(first), int(second_part)
            if _valid_date(full_year, a, b) or _valid_date(full_year, b, a):
                yield self._finding("DATE_TIME", match.start(), match.end(), 0.9, "numeric date")
        for match in _WORDY_DATE.finditer(text):
            yield self._finding("DATE_TIME", match.start(), match.end(), 0.75, "date with a month name")

    def _lexicon_matches(
        self, text: str, lexicon: _Lexicon, kind: str, score: float, *, capitalised_only: bool = False
    ) -> Iterator[Finding]:
        for start, end in lexicon.matches(text, always_capitalised=capitalised_only):
            yield self._finding(kind, start, end, score, f"{kind.lower()} word list")


def _valid_date(year: int, month: int, day: int) -> bool:
    if not 1000 <= year <= 2999:
        return False
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the best finding wherever findings overlap: higher score first, then the longer span.

    A validated pattern (a Luhn-checked card, 1.0) beats a model's guess (a name, 0.85) over the same characters,
    and "2000-04-16" stays a date rather than also becoming a phone number.
    """
    kept: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        if not any(finding.overlaps(other) for other in kept):
            kept.append(finding)
    return sort_findings(kept)
