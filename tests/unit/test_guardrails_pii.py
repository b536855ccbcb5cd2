"""PII and secret detection: every validator with its negative cases, redaction and reversible pseudonymisation."""

from __future__ import annotations

import pytest

from llmops.guardrails import (
    PII_ENTITY_TYPES,
    ContextualDetector,
    Detector,
    Finding,
    PiiDetector,
    PiiLeakageDetector,
    Pseudonymizer,
    SecretDetector,
    SpacyNerDetector,
    redact,
)
from llmops.guardrails._validators import card_network, is_valid_iban, is_valid_us_ssn, luhn_valid, shannon_entropy


@pytest.fixture(scope="module")
def pii() -> PiiDetector:
    return PiiDetector()


def kinds(detector: Detector, text: str) -> list[tuple[str, str]]:
    return [(f.kind, f.value(text)) for f in detector.detect(text)]


def test_detectors_implement_the_protocols(pii: PiiDetector) -> None:
    assert isinstance(pii, Detector)
    assert isinstance(SecretDetector(), Detector)
    assert isinstance(PiiLeakageDetector(pii), ContextualDetector)


def test_a_finding_holds_offsets_not_the_value() -> None:
    text = "mail ana@example.com"
    (finding,) = PiiDetector().detect(text)
    assert finding == Finding("EMAIL_ADDRESS", 5, 20, 1.0, "pii", "email syntax")
    assert "ana@example.com" not in repr(finding)
    assert finding.value(text) == "ana@example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Write to ana.ruiz+hr@mail.example.co.uk today", [("EMAIL_ADDRESS", "ana.ruiz+hr@mail.example.co.uk")]),
        ("Card: 4111 1111 1111 1111.", [("CREDIT_CARD", "4111 1111 1111 1111")]),
        ("amex 378282246310005", [("CREDIT_CARD", "378282246310005")]),
        ("IBAN DE89 3704 0044 0532 0130 00 please", [("IBAN_CODE", "DE89 3704 0044 0532 0130 00")]),
        ("pay to gb82west12345698765432", [("IBAN_CODE", "gb82west12345698765432")]),
        ("Here's my SSN: 460-89-9847", [("US_SSN", "460-89-9847")]),
        ("my ssn is 460899847", [("US_SSN", "460899847")]),
        ("ITIN 912-70-1234", [("US_ITIN", "912-70-1234")]),
        ("my driver's license number is 2270-66-1551", [("US_DRIVER_LICENSE", "2270-66-1551")]),
        ("blocked at 106.31.73.20.", [("IP_ADDRESS", "106.31.73.20")]),
        ("host 2001:db8::8a2e:370:7334 is down", [("IP_ADDRESS", "2001:db8::8a2e:370:7334")]),
        ("see https://www.example.com/a?b=1).", [("URL", "https://www.example.com/a?b=1")]),
        ("Call +44 20 7946 0958 now", [("PHONE_NUMBER", "+44 20 7946 0958")]),
        ("Phone:\n60-56-85-91", [("PHONE_NUMBER", "60-56-85-91")]),
        ("office (212) 555-0199 ext. 12", [("PHONE_NUMBER", "(212) 555-0199 ext. 12")]),
        ("Born 1978-04-13 12:20:39", [("DATE_TIME", "1978-04-13 12:20:39")]),
        ("on March 3, 2020 and 2/8/1935", [("DATE_TIME", "March 3, 2020"), ("DATE_TIME", "2/8/1935")]),
        ("I am cambodian but I live in United Kingdom.", [("NRP", "cambodian"), ("LOCATION", "United Kingdom")]),
    ],
)
def test_finds_each_kind(pii: PiiDetector, text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(pii, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Card 4111 1111 1111 1112 declined",  # one digit off: Luhn fails
        "order 1234 5678 1234 5670 shipped",  # Luhn-valid, but no card network issues numbers starting with 1234
        "reference 0000 0000 0000 0000",  # all one digit
        "IBAN DE89 3704 0044 0532 0130 01",  # check digits wrong
        "IBAN XX89 3704 0044 0532 0130 00",  # no such country
        "IBAN GB82 WEST 1234 5698 7654",  # too short for GB
        "SSN 000-12-3456, 666-12-3456, 123-00-4567, 123-45-0000, 078-05-1120",  # never issued
        "order 460899847 shipped",  # nine bare digits without a word saying SSN
        "version 1.2.3.4 released",  # a version, not an address
        "ip 999.31.73.20",  # octet out of range
        "meet at 12:30:45 on the 3rd",  # a time, not IPv6
        "a.b@c",  # no top-level domain
        "file name.txt and config.yaml",  # bare words with dots are not URLs
        "the 1.2.23 build",  # dotted version with a two-digit tail is not a date
        "on 2021-02-30",  # no such day
        "I went to china and ate turkey; a conservative estimate; shoe polish",  # lower-case common words
        "there are 12345678 ways",  # a bare number without a phone word
    ],
)
def test_leaves_valid_looking_but_invalid_values_alone(pii: PiiDetector, text: str) -> None:
    assert pii.detect(text) == []


def test_validators() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112") and not luhn_valid("")
    assert card_network("4111111111111111") == "visa"
    assert card_network("5500000000000004") == "mastercard"
    assert card_network("1234567812345670") is None
    assert is_valid_iban("GB82 WEST 1234 5698 7654 32") and not is_valid_iban("GB82 WEST 1234 5698 7654 33")
    assert is_valid_us_ssn("460", "89", "9847") and not is_valid_us_ssn("900", "89", "9847")
    assert shannon_entropy("aaaa") == 0.0 and shannon_entropy("abcd") == 2.0


def test_a_phone_number_needs_a_phone_word_unless_it_is_valid_in_the_first_region(pii: PiiDetector) -> None:
    assert kinds(pii, "ring 9472 7916 tonight") == [("PHONE_NUMBER", "9472 7916")]
    assert pii.detect("batch 9472 7916 tonight") == []
    assert kinds(pii, "batch 415-555-0132") == [("PHONE_NUMBER", "415-555-0132")]


def test_overlaps_keep_the_validated_finding(pii: PiiDetector) -> None:
    text = "When: 2000-04-16 11:34:35"
    assert kinds(pii, text) == [("DATE_TIME", "2000-04-16 11:34:35")]


def test_entity_types_select_and_unknown_names_are_refused() -> None:
    only_email = PiiDetector(entity_types={"EMAIL_ADDRESS"})
    assert kinds(only_email, "ana@example.com 4111 1111 1111 1111") == [("EMAIL_ADDRESS", "ana@example.com")]
    with pytest.raises(ValueError, match="unknown PII entity types"):
        PiiDetector(entity_types={"EMAIL"})
    with pytest.raises(ValueError, match="unknown phone regions"):
        PiiDetector(phone_regions=["XX"])
    with pytest.raises(ValueError, match="min_score"):
        PiiDetector(min_score=2)
    assert {"EMAIL_ADDRESS", "PERSON", "API_KEY"} <= PII_ENTITY_TYPES


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("aws AKIAIOSFODNN7EXAMPLE key", "API_KEY", "AKIAIOSFODNN7EXAMPLE"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "API_KEY", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        (
            "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz012345",
            "API_KEY",
            "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        ),
        ("key sk-ant-api03-" + "a1B2" * 12, "API_KEY", "sk-ant-api03-" + "a1B2" * 12),
        ("slack xoxb-123456789012-abcdefghijklmnop", "API_KEY", "xoxb-123456789012-abcdefghijklmnop"),
        ("google AIzaSyA1234567890abcdefghijklmnopqrstuv", "API_KEY", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
        ("password: hunter2!x", "SECRET", "hunter2!x"),
        ('client_secret = "q8Zr2LmX9vTa4NcE7pWd"', "SECRET", "q8Zr2LmX9vTa4NcE7pWd"),
        ("postgres://app:s3cr3tPw@db.internal:5432/app", "SECRET", "s3cr3tPw"),
    ],
)
def test_secrets(text: str, kind: str, value: str) -> None:
    assert kinds(SecretDetector(), text) == [(kind, value)]


def test_private_key_blocks_and_jwts() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\n-----END RSA PRIVATE KEY-----"
    assert kinds(SecretDetector(), f"key:\n{pem}\nthanks") == [("PRIVATE_KEY", pem)]
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"
    assert [f.kind for f in SecretDetector().detect(truncated)] == ["PRIVATE_KEY"]
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert kinds(SecretDetector(), f"Bearer {jwt}") == [("JWT", jwt)]


@pytest.mark.parametrize(
    "text",
    [
        "Reset your password from the settings page.",
        "The token expired yesterday; ask for a new token.",
        "password: <PASSWORD>",
        "api_key=$OPENAI_API_KEY",
        "The secret is to keep the dough cold.",
        "sk-short",
        "eyJnotreally.eyJnotajwt.signaturepartlong",  # header does not decode to JSON with "alg"
    ],
)
def test_secret_negatives(text: str) -> None:
    assert SecretDetector().detect(text) == []


def test_redact_replaces_each_finding_with_its_kind(pii: PiiDetector) -> None:
    text = "Mail ana@example.com or call +44 20 7946 0958."
    assert redact(text, pii.detect(text)) == "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>."
    assert redact(text, pii.detect(text), template="[{kind}]") == "Mail [EMAIL_ADDRESS] or call [PHONE_NUMBER]."
    assert redact("nothing here", []) == "nothing here"


def test_pseudonymisation_is_stable_and_reversible(pii: PiiDetector) -> None:
    names = Pseudonymizer()
    first = "Write to ana@example.com and bob@example.com."
    masked = names.pseudonymize(first, pii.detect(first))
    assert masked == "Write to <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2>."
    second = "Did ANA@example.com answer?"
    assert names.pseudonymize(second, pii.detect(second)) == "Did <EMAIL_ADDRESS_1> answer?"
    answer = "Yes, < EMAIL_ADDRESS_1 > answered; <EMAIL_ADDRESS_9> is unknown."
    assert names.restore(answer) == "Yes, ana@example.com answered; <EMAIL_ADDRESS_9> is unknown."
    assert "ana@example.com" not in repr(names)
    resumed = Pseudonymizer(names.mapping)
    assert resumed.restore("<EMAIL_ADDRESS_2>") == "bob@example.com"
    third = "and carol@example.com"
    assert resumed.pseudonymize(third, pii.detect(third)) == "and <EMAIL_ADDRESS_3>"


def test_pseudonymisation_never_reuses_a_placeholder_the_user_typed(pii: PiiDetector) -> None:
    text = "I literally typed <EMAIL_ADDRESS_1>; my mail is ana@example.com"
    masked = Pseudonymizer().pseudonymize(text, pii.detect(text))
    assert masked == "I literally typed <EMAIL_ADDRESS_1>; my mail is <EMAIL_ADDRESS_2>"


def test_pseudonymizer_refuses_a_mapping_without_placeholders() -> None:
    with pytest.raises(ValueError, match="not a placeholder"):
        Pseudonymizer({"PERSON_1": "Ana"})


def test_leakage_reports_only_what_the_user_did_not_supply(pii: PiiDetector) -> None:
    leakage = PiiLeakageDetector(pii)
    answer = "We will reply to ANA@example.com; payroll is bob@corp.example, +44 20 7946 0958."
    found = leakage.detect(answer, ["I am ana@example.com, who runs payroll?"])
    assert [(f.kind, f.value(answer), f.detector) for f in found] == [
        ("EMAIL_ADDRESS", "bob@corp.example", "pii-leakage"),
        ("PHONE_NUMBER", "+44 20 7946 0958", "pii-leakage"),
    ]


def test_repeated_texts_return_equal_findings(pii: PiiDetector) -> None:
    text = "ana@example.com"
    first = pii.detect(text)
    first.clear()  # callers may mutate what they get back without touching the detector's memory
    assert pii.detect(text) == [Finding("EMAIL_ADDRESS", 0, 15, 1.0, "pii", "email syntax")]


needs_spacy = pytest.mark.skipif(not SpacyNerDetector.is_available(), reason="spaCy model not installed")


@pytest.fixture(scope="module")
def ner() -> SpacyNerDetector:
    return SpacyNerDetector()


@needs_spacy
def test_ner_names_places_and_organisations(ner: SpacyNerDetector) -> None:
    text = "Dr. John Smith's office moved to Paris in May 2020; he works at Acme Corp."
    found = kinds(ner, text)
    assert ("PERSON", "John Smith") in found
    assert ("LOCATION", "Paris") in found
    assert ("DATE_TIME", "May 2020") in found
    assert all(f.detector == "spacy-ner" for f in ner.detect(text))


@needs_spacy
def test_ner_drops_dates_without_a_day_month_or_year_and_names_without_letters(ner: SpacyNerDetector) -> None:
    text = "Two weeks ago he called 0490 75 40 81 about the last quarter."
    assert [k for k, _ in kinds(ner, text) if k in ("DATE_TIME", "NRP", "PERSON")] == []


@needs_spacy
def test_pii_with_ner_merges_model_and_patterns(ner: SpacyNerDetector) -> None:
    detector = PiiDetector(ner=ner)
    text = "You can write to John Smith at john.smith@example.com"
    assert kinds(detector, text) == [("PERSON", "John Smith"), ("EMAIL_ADDRESS", "john.smith@example.com")]
    assert ner.detect_many([text, "Ana lives in Lisbon."])[1][-1].kind == "LOCATION"
