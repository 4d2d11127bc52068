"""Redaction for support bundles: one place that decides what is a secret.

Two kinds of rule, both on by default:

- **by name**: the value of a setting, environment variable, tag, property
  or JSON key whose name looks secret (``password``, ``token``, ``api_key``,
  ``client_secret``, ``authorization``, ``dsn`` ...) is replaced whole. Names
  ending in ``_file``, ``_path`` or ``_dir`` hold where a secret is, not the
  secret, and are kept (their values still go through the value rules).
- **by value**, in any text (log lines, tracebacks, settings, JSON): bearer
  tokens, ``mltrail_``-style prefixed tokens (``ghp_``, ``glpat-``, ``sk-``,
  ``xoxb-`` ...), JSON web tokens, passwords in URLs (``scheme://user:PASS@``),
  private key blocks, AWS access key ids and secret keys, and ``password=...``
  assignments. ``--redact PATTERN`` adds a regular expression of your own.

A redacted value becomes ``[REDACTED:<rule>]``, so a reader sees that
something was there and which rule took it; the secret itself never appears.
Every replacement is counted per file and per rule (the bundle's manifest).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

MARKER = "[REDACTED:{rule}]"

# Words that make a name secret; compounds are matched on the joined words, so
# "api_key", "apiKey" and "API-KEY" are all "apikey".
_SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "token", "tokens",
    "apikey", "accesskey", "secretkey", "privatekey", "signingkey", "credential",
    "credentials", "auth", "authorization", "cookie", "dsn", "sas", "signature",
    "connectionstring", "clientsecret", "sessionid", "bearer",
})
_LOCATION_SUFFIXES = ("file", "path", "dir", "files", "paths")
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

# (rule, regex, triggers): a group named "secret" limits what is replaced. A rule
# with triggers (lowercase literals) runs only on the lines holding one, found
# with str.find on the lowered text: regexes over every line run at ~1 MiB/s,
# this at hundreds.
_VALUE_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("private_key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
                    r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)", ()),
    ("url_password", r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@\"']*:(?P<secret>[^@\s/\"']+)@",
     ("://",)),
    ("bearer_token", r"\b(?:[Bb]earer|BEARER|[Bb]asic|BASIC)\s+"
                     r"(?P<secret>[A-Za-z0-9._~+/=-]{8,})", ("bearer", "basic")),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", ("eyj",)),
    # a body with a digit and a capital: tokens are random; metric names such as
    # mltrail_agent_sent_bytes are not
    ("prefixed_token", r"\b(?:mlt|mltrail|ghp|gho|ghu|ghs|ghr|github_pat|glpat|hf|xox[abprs]|"
                       r"sk|rk|pk|npm|pypi|dop_v1|shpat|AIza)[_-]"
                       r"(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Z])[A-Za-z0-9_\-]{16,}",
     ("mlt", "gh", "glpat", "hf_", "hf-", "xox", "sk_", "sk-", "rk_", "rk-", "pk_", "pk-",
      "npm_", "npm-", "pypi", "dop_v1", "shpat", "aiza")),
    ("aws_access_key", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b",
     ("akia", "asia", "agpa", "aida", "aroa", "anpa")),
    ("assignment", r"(?i)\b[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|"
                   r"access[_-]?key|private[_-]?key|auth)[a-z0-9_.-]*\b[\"']?\s*[=:]\s*"
                   r"(?!\[REDACTED|[Bb]earer\b|[Bb]asic\b)"
                   r"(?P<secret>\"[^\"\n]+\"|'[^'\n]+'|[^\s,;&\"'}{\]\[]+)",
     ("pass", "pwd", "secret", "token", "key", "auth")),
)


def secret_name(name: str) -> bool:
    """Whether a setting, variable, tag or key called ``name`` holds a secret."""
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words or words[-1] in _LOCATION_SUFFIXES:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(a + b in _SECRET_WORDS for a, b in itertools.pairwise(words))


class Redactor:
    """Replaces secrets in text and structures, counting what it replaced where.

    ``extra`` are regular expressions (``--redact``); a bad one raises
    ``ValueError`` naming it. ``counts[file][rule]`` is what was replaced.
    """

    def __init__(self, extra: Iterable[str] = ()) -> None:
        rules = [(name, re.compile(rx), triggers) for name, rx, triggers in _VALUE_RULES]
        for pattern in extra:
            try:
                rules.append(("custom", re.compile(pattern), ()))
            except re.error as exc:
                raise ValueError(f"--redact {pattern!r} is not a valid regular expression "
                                 f"({exc}); nothing was written") from None
        self._rules = rules
        self.extra = tuple(extra)
        self.counts: dict[str, Counter[str]] = {}

    def _count(self, where: str, rule: str, n: int = 1) -> None:
        self.counts.setdefault(where, Counter())[rule] += n

    def text(self, text: str, where: str) -> str:
        """``text`` with every value rule applied."""
        lower: str | None = None
        for rule, rx, triggers in self._rules:
            replacer = _Replacer(rule)
            if not triggers:
                text = rx.sub(replacer, text)
            else:
                if lower is None:
                    lower = text.lower()
                spans = _trigger_lines(lower, triggers)
                if spans:
                    text = _sub_in_spans(rx, replacer, text, spans)
            if replacer.count:
                self._count(where, rule, replacer.count)
                lower = None  # lengths changed
        return text

    def open_key_block(self, text: str) -> int:
        """Where an unfinished private key block starts in ``text`` (-1: none).

        A streaming writer keeps text from there for its next piece, so a key
        split across pieces is still redacted whole."""
        begin = text.rfind("-----BEGIN ")
        if begin < 0 or "PRIVATE KEY" not in text[begin:begin + 60]:
            return -1
        return begin if text.find("-----END ", begin) < 0 else -1

    def value(self, name: str, value: Any, where: str) -> Any:
        """A named value: replaced whole when the name looks secret, else redacted inside."""
        if secret_name(str(name)) and value not in (None, "", [], {}, ()):
            self._count(where, "secret_name")
            return MARKER.format(rule="secret_name")
        return self.structure(value, where)

    def structure(self, value: Any, where: str) -> Any:
        """Dicts by key name, lists item by item, strings by value rules."""
        if isinstance(value, str):
            return self.text(value, where)
        if isinstance(value, Mapping):
            return {k: self.value(k, v, where) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.structure(v, where) for v in value]
        return value

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def report(self) -> dict[str, dict[str, int]]:
        return {where: dict(sorted(c.items())) for where, c in sorted(self.counts.items())}


def _trigger_lines(lower: str, triggers: tuple[str, ...]) -> list[tuple[int, int]]:
    """The lines (start, end) of ``lower`` that hold a trigger, in order, merged."""
    starts: set[int] = set()
    for trigger in triggers:
        at = lower.find(trigger)
        while at >= 0:
            start = lower.rfind("\n", 0, at) + 1
            starts.add(start)
            end = lower.find("\n", at)
            if end < 0:
                break
            at = lower.find(trigger, end)
    spans = []
    for start in sorted(starts):
        end = lower.find("\n", start)
        spans.append((start, len(lower) if end < 0 else end))
    return spans


def _sub_in_spans(rx: re.Pattern[str], replacer: _Replacer, text: str,
                  spans: list[tuple[int, int]]) -> str:
    parts, at = [], 0
    for start, end in spans:
        parts.append(text[at:start])
        parts.append(rx.sub(replacer, text[start:end]))
        at = end
    parts.append(text[at:])
    return "".join(parts)


class _Replacer:
    """``re.sub``'s replacement function for one rule; counts what it replaced."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.count = 0

    def __call__(self, match: re.Match[str]) -> str:
        new = _replace(match, self.rule)
        self.count += new != match.group(0)
        return new


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _replace(match: re.Match[str], rule: str) -> str:
    marker = MARKER.format(rule=rule)
    if "secret" not in match.re.groupindex or match.group("secret") is None:
        return marker
    if rule == "assignment" and _is_json_count(match):
        return match.group(0)
    start, end = match.span("secret")
    whole_start = match.start()
    text = match.group(0)
    return text[: start - whole_start] + marker + text[end - whole_start:]


def _is_json_count(match: re.Match[str]) -> bool:
    """``"tokens": 19`` in a JSON document is a count, not a password."""
    before = match.string[:match.start("secret")].rstrip()
    return (before.endswith(":") and before[:-1].rstrip().endswith('"')
            and _NUMBER.fullmatch(match.group("secret")) is not None)
