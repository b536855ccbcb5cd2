"""Credentials in text: provider API keys, tokens, private key blocks, JWTs and high-entropy values after a keyword.

Provider formats are matched by their documented prefixes (``AKIA``, ``ghp_``, ``sk-ant-``, ``xoxb-``…), which makes
them precise. Anything else counts only when it sits right after a word such as *key*, *secret*, *token* or
*password* and looks random (entropy and a mix of character classes), so prose and identifiers are left alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator

from llmops.guardrails._findings import Finding, sort_findings
from llmops.guardrails._validators import shannon_entropy

__all__ = ["SECRET_KINDS", "SecretDetector"]

SECRET_KINDS = frozenset({"API_KEY", "PRIVATE_KEY", "JWT", "SECRET"})

# (reason, pattern) for credentials with a recognisable shape; all are API_KEY findings.
_PROVIDER_KEYS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern))
    for reason, pattern in (
        ("aws access key id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b"),
        ("github token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),
        ("github fine-grained token", r"\bgithub_pat_[A-Za-z0-9_]{60,255}\b"),
        ("anthropic api key", r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_\-]{40,}"),
        ("openai api key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}(?:T3BlbkFJ[A-Za-z0-9_\-]{20,})?"),
        ("stripe key", r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{20,}\b"),
        ("slack token", r"\bxox[abposre]-(?:\d+-)?[0-9A-Za-z\-]{10,}\b"),
        ("slack webhook", r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"),
        ("google api key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
        ("gitlab token", r"\bglpat-[0-9A-Za-z_\-]{20,}\b"),
        ("hugging face token", r"\bhf_[A-Za-z0-9]{30,}\b"),
        ("npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
        ("twilio key", r"\bSK[0-9a-f]{32}\b"),
        ("sendgrid key", r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b"),
    )
)

_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,\-]*)"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{16,}")
_URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s:/@]+:([^\s:/@]{3,})@[^\s/]+", re.IGNORECASE)

# A keyword, optional filler ("is", ":", "=", quotes), then the value. The value may not start with a placeholder
# sigil such as ``<`` or ``$`` (``password: <PASSWORD>``, ``token=$TOKEN`` are templates, not secrets).
_KEYWORD_VALUE = re.compile(
    r"(?i)\b(?P<keyword>api[_\-\s]?key|access[_\-\s]?key|secret(?:[_\-\s]?key)?|client[_\-\s]?secret|auth[_\-\s]?token"
    r"|access[_\-\s]?token|bearer|token|password|passwd|passphrase|pwd|credentials?)\b"
    r"(?P<filler>[\"']?\s*(?:[:=]|=>|\bis\b|\bwas\b)?\s*[\"']?)"
    r"(?P<value>[^\s\"'<>$`,;]{6,200})"
)
_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase", "pwd"})


class SecretDetector:
    """Finds credentials: provider API keys, private keys, JWTs and random-looking values after a keyword.

    Kinds: ``API_KEY`` (a provider format), ``PRIVATE_KEY`` (a PEM block, even a truncated one), ``JWT`` (a token
    whose header decodes to JSON with ``alg``), ``SECRET`` (a password or random value introduced by a keyword, or
    the password part of ``scheme://user:password@host``).

    Example:
        >>> SecretDetector().detect("export OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz012345")[0].kind
        'API_KEY'
    """

    name = "secrets"

    def __init__(self, *, min_entropy: float = 3.0) -> None:
        """Create the detector.

        Args:
            min_entropy: Bits per character a keyword-introduced value needs (passwords are exempt when they mix
                character classes); raise it to flag fewer values.
        """
        self._min_entropy = min_entropy

    def detect(self, text: str) -> list[Finding]:
        findings = list(self._scan(text))
        kept: list[Finding] = []
        # A provider key is often also preceded by "key=", so the generic rule fires on it too: keep the most
        # specific finding for each span.
        for finding in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start))):
            if not any(finding.overlaps(other) for other in kept):
                kept.append(finding)
        return sort_findings(kept)

    def _scan(self, text: str) -> Iterator[Finding]:
        if "-----BEGIN" in text:
            for match in _PRIVATE_KEY.finditer(text):
                yield Finding("PRIVATE_KEY", match.start(), match.end(), 1.0, self.name, "pem private key block")
        for reason, pattern in _PROVIDER_KEYS:
            for match in pattern.finditer(text):
                yield Finding("API_KEY", match.start(), match.end(), 0.95, self.name, reason)
        if "eyJ" in text:
            for match in _JWT.finditer(text):
                if _is_jwt(match.group()):
                    yield Finding("JWT", match.start(), match.end(), 0.95, self.name, "jwt with a json header")
        if "://" in text:
            for match in _URL_CREDENTIALS.finditer(text):
                yield Finding("SECRET", match.start(1), match.end(1), 0.9, self.name, "password in a url")
        for match in _KEYWORD_VALUE.finditer(text):
            value = match.group("value").rstrip(".!?)]}")
            keyword = match.group("keyword").lower()
            score = self._keyword_value_score(keyword, value, bool(match.group("filler").strip()))
            if score > 0:
                start = match.start("value")
                yield Finding("SECRET", start, start + len(value), score, self.name, f"value after {keyword!r}")

    def _keyword_value_score(self, keyword: str, value: str, has_separator: bool) -> float:
        """How likely ``value`` after ``keyword`` is a real credential, 0 when it is not one."""
        if len(value) < 6 or (value.isalpha() and not has_separator):
            return 0.0  # "the token expired", "password reset": words, not values
        classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value),
                       any(c.isdigit() for c in value), any(not c.isalnum() for c in value)))  # fmt: skip
        entropy = shannon_entropy(value)
        if keyword in _PASSWORD_WORDS:
            # Passwords are short and human-made: a separator plus mixed classes is enough evidence.
            if has_separator and classes >= 2 and not value.isalpha():
                return 0.85
            return 0.0
        if len(value) >= 16 and entropy >= self._min_entropy and classes >= 2:
            return 0.9 if has_separator else 0.75
        return 0.0


def _is_jwt(token: str) -> bool:
    header = token.split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        parsed = json.loads(decoded)
    except (binascii.Error, ValueError):
        return False
    return isinstance(parsed, dict) and "alg" in parsed
