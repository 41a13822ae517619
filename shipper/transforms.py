"""Transforms over batches of record dicts: filter, rate limit, drop fields, pseudonymise.

Pure: no I/O, no clock of its own (the rate limiter takes ``now``). Each
function takes and returns a list of records (the flat dicts of
docs/records.md), in order; records are changed in place where that is cheaper.

Records of the shipper itself (gap reports: ``own_record``) are never filtered or
rate limited: they say that data was lost. A log line that names "shipper" as its
program is not one of them.

Pseudonyms are ``anon:`` + 16 hex digits of HMAC-SHA256(key, value): the same
address gives the same pseudonym for as long as the key is the same, so a SIEM
can still count and correlate, while the address itself cannot be read back
without the key (a plain hash could be reversed by hashing every address
seen in the wild; the key prevents that).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shipper.config import (
    DEFAULT_HOST_FIELDS,
    DEFAULT_IP_FIELDS,
    DEFAULT_MAIL_FIELDS,
    DEFAULT_TEXT_FIELDS,
    SinkConfig,
    TransformConfig,
)
from shipper.ipaddr import ip_address
from shipper.record import every_record

Records = list[dict[str, Any]]

PREFIX = "anon:"
F_PSEUDONYMISED = "pseudonymised"  # addresses replaced by keyed pseudonyms
SELF_PROGRAM = "shipper"  # gap records and other reports of our own: never dropped


def own_record(rec: dict[str, Any]) -> bool:
    """A record the shipper made (a gap report), never dropped or left out. Not a line
    whose program is "shipper": anyone can log as that (logger -t shipper) and it went
    through every filter, the rate limit and a summaries-only sink (a security review).
    Ours have an event id ending "-gap"; a line's ends in hex digits."""
    return rec.get("program") == SELF_PROGRAM and str(rec.get("event_id") or "").endswith("-gap")
# Rate-limit drops are counted per program for this many programs (syslog tags are
# free text), then under OTHER_PROGRAMS
_NAMED_DROPS = 1000
OTHER_PROGRAMS = "(other)"
_CACHE_MAX = 65536

# Pragmatic patterns for addresses inside free text; candidates are checked
# before replacing (IP addresses with the ipaddress module). A mail address: a quoted
# or plain local part (not "=": "user=alice@x" is a key and its value, and an SRS
# address's last part still names its sender) and a domain, IDN or a literal.
_LOCAL = r"(?:\"[^\"\r\n]{1,64}\"|[\w.%+!#$&'*^{}|~-]+)"
_DOMAIN = (r"(?:\[(?:IPv6:)?[0-9A-Fa-f:.]{2,45}\]"
           r"|[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*)")
_MAIL_RE = re.compile(rf"(?<![\w.%+!#$&'*^{{}}|~-])(?<!anon:){_LOCAL}@{_DOMAIN}")
# IPv6 next to anything but a letter, digit or dot: "host:2001:db8::1:25" (tcpserver),
# "2001:db8::7: OK"; a match that is not an address as a whole is cut to the address in
# it (_v6_within)
_IPV6_RE = re.compile(r"(?<![0-9A-Za-z.])(?:[0-9A-Fa-f]{0,4}:){2,8}"
                      r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![0-9A-Za-z]|\.\d)")
_IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_MIN_KNOWN = 3  # a field's value shorter than this is not looked for in text ("a", "5")


# ---------------------------------------------------------------- filtering


def make_filter(include_programs: Iterable[str] = (), exclude_programs: Iterable[str] = (),
                include_events: Iterable[str] = (), exclude_events: Iterable[str] = ()
                ) -> Callable[[dict[str, Any]], bool] | None:
    """A predicate "keep this record?"; None when it would keep everything.

    An empty include list means every program (event); exclude wins over include.
    Records with no program match the name ``-``.
    """
    inc_p, exc_p = frozenset(include_programs), frozenset(exclude_programs)
    inc_e, exc_e = frozenset(include_events), frozenset(exclude_events)
    if not (inc_p or exc_p or inc_e or exc_e):
        return None

    def keep(rec: dict[str, Any]) -> bool:
        if own_record(rec):
            return True
        program = rec.get("program") or "-"
        event = rec.get("event")
        if inc_p and program not in inc_p or program in exc_p:
            return False
        return not (inc_e and event not in inc_e or event in exc_e)

    return keep


def filter_records(records: Records, keep: Callable[[dict[str, Any]], bool] | None) -> Records:
    return records if keep is None else [r for r in records if keep(r)]


def drop_fields(records: Records, names: Iterable[str]) -> Records:
    """Remove the named keys from every record (in place)."""
    names = tuple(names)
    if names:
        for rec in records:
            for name in names:
                rec.pop(name, None)
    return records


# ---------------------------------------------------------------- rate limit


@dataclass(slots=True)
class RateLimiter:
    """A token bucket per program: ``rate`` records/s, bursts up to ``burst``.

    Dropped records are counted per program in ``dropped`` (exported as a
    metric): a rate limit loses data on purpose, never silently.
    """

    rate: float
    burst: int
    max_programs: int = 10_000  # bound on buckets (syslog tags are free text)
    buckets: dict[str, list[float]] = field(default_factory=dict)  # program → [tokens, last]
    dropped: dict[str, int] = field(default_factory=dict)

    def allow(self, program: str, now: float) -> bool:
        bucket = self.buckets.get(program)
        if bucket is None:
            if len(self.buckets) >= self.max_programs:
                self._forget_full(now)
            bucket = self.buckets[program] = [float(self.burst), now]
        tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        dropped = self.dropped
        if program not in dropped and len(dropped) >= _NAMED_DROPS:
            program = OTHER_PROGRAMS  # counted still, under one name: memory and series bounded
        dropped[program] = dropped.get(program, 0) + 1
        return False

    def _forget_full(self, now: float) -> None:
        # A bucket refilled to the brim is the same as a new one: forget those.
        full = [p for p, (tokens, last) in self.buckets.items()
                if tokens + (now - last) * self.rate >= self.burst]
        for p in full or list(self.buckets)[: len(self.buckets) // 2]:
            del self.buckets[p]

    def apply(self, records: Records, now: float) -> Records:
        out = []
        allow = self.allow
        for rec in records:
            if own_record(rec) or allow(rec.get("program") or "-", now):
                out.append(rec)
        return out


# ---------------------------------------------------------------- pseudonyms


@dataclass(slots=True)
class Pseudonymiser:
    """Replace mail addresses, IP addresses and client host names by keyed pseudonyms."""

    key: bytes
    mail_fields: tuple[str, ...] = DEFAULT_MAIL_FIELDS
    ip_fields: tuple[str, ...] = DEFAULT_IP_FIELDS
    host_fields: tuple[str, ...] = DEFAULT_HOST_FIELDS
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    in_text: bool = True
    keep_domain: bool = False
    _cache: dict[str, str] = field(default_factory=dict)
    _fids: dict[str, str] = field(default_factory=dict)

    def pseudonym(self, value: str) -> str:
        """``anon:`` + 16 hex digits; case-insensitive, stable for a given key."""
        got = self._cache.get(value)
        if got is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            digest = hmac.new(self.key, value.lower().encode("utf-8", "surrogatepass"),
                              hashlib.sha256).hexdigest()
            got = self._cache[value] = PREFIX + digest[:16]
        return got

    def file_id(self, fid: str) -> str:
        """A file id keyed as the pseudonyms are: the plain one is a hash of the file's
        first 64 bytes, which a pseudonymised line gives away but for its address, so
        hashing every IPv4 address (seconds) would find that address again."""
        got = self._fids.get(fid)
        if got is None:
            if len(self._fids) >= 4096:
                self._fids.clear()
            got = self._fids[fid] = hmac.new(self.key, b"file_id\0" + fid.encode("utf-8", "surrogatepass"),
                                             hashlib.sha256).hexdigest()[:16]
        return got

    def mail(self, address: str) -> str:
        if not address or address.startswith(PREFIX):  # "" is the null sender: keep it
            return address
        if "," in address and "@" in address:  # qlog's rcptto=a@x,b@y: each its own
            return ",".join(self.mail(a) for a in address.split(","))
        if self.keep_domain and "@" in address:
            local, _, domain = address.rpartition("@")
            if domain.startswith("["):  # a literal: the domain is an address
                inner = domain[1:-1]
                tag = "IPv6:" if inner[:5].lower() == "ipv6:" else ""
                domain = f"[{tag}{self.ip(inner[len(tag):])}]"
            return f"{self.pseudonym(address)}@{domain}"
        return self.pseudonym(address)

    def ip(self, text: str) -> str:
        return text if not text or text.startswith(PREFIX) else self.pseudonym(_canonical_ip(text))

    def host(self, name: str) -> str:
        return name if not name or name.startswith(PREFIX) else self.pseudonym(name)

    def text(self, text: str, known: dict[str, str] | None = None) -> str:
        """Every mail address and IP address inside free text replaced; first the
        values ``known`` from the record's own fields (original → pseudonym), found
        as whole words: host and user names no pattern can find, and so the text's
        pseudonym is the field's."""
        parts = _known_parts(text, known) if known else [text]
        for i in range(0, len(parts), 2):  # odd parts are pseudonyms already
            t = parts[i]
            if "@" in t:
                t = _MAIL_RE.sub(self._mail_match, t)
            if t.count(":") >= 2:
                t = _IPV6_RE.sub(self._ipv6_match, t)
            if "." in t:
                t = _IPV4_RE.sub(self._ipv4_match, t)
            parts[i] = t
        return parts[0] if len(parts) == 1 else "".join(parts)

    def _mail_match(self, m: re.Match[str]) -> str:
        return self.mail(m.group(0))

    def _ipv6_match(self, m: re.Match[str]) -> str:
        s = m.group(0)
        span = _v6_within(s)
        if span is None:
            return s
        a, b = span
        return s[:a] + self.ip(s[a:b]) + s[b:]

    def _ipv4_match(self, m: re.Match[str]) -> str:
        s = m.group(0)
        if any(int(octet) > 255 for octet in s.split(".")):
            return s
        return self.ip(s)

    def _fields(self, rec: dict[str, Any], known: dict[str, str]) -> bool:
        """The record's own address fields (a list of them too: a summary's
        ``accepted_rcpts``), their originals noted in ``known``."""
        changed = False
        for names, fn in ((self.mail_fields, self.mail), (self.ip_fields, self.ip),
                          (self.host_fields, self.host)):
            for name in names:
                v = rec.get(name)
                if isinstance(v, str):
                    if v and not v.startswith(PREFIX):
                        rec[name] = new = fn(v)
                        if len(v) >= _MIN_KNOWN:
                            known[v] = new
                        changed = True
                elif isinstance(v, list) and v and all(isinstance(x, str) for x in v):
                    news = [fn(x) for x in v]
                    if news != v:
                        for x, y in zip(v, news, strict=True):
                            if len(x) >= _MIN_KNOWN and x != y:
                                known[x] = y
                        rec[name] = news
                        changed = True
        return changed

    def _texts(self, rec: dict[str, Any], known: dict[str, str]) -> bool:
        changed = False
        for name in self.text_fields:
            v = rec.get(name)
            if isinstance(v, str) and v:
                new = self.text(v, known)
                if new != v:
                    rec[name] = new
                    changed = True
        return changed

    def apply(self, records: Records) -> Records:
        fid_of = self.file_id
        for rec in records:
            known: dict[str, str] = {}
            changed = self._fields(rec, known)
            if self.in_text:
                changed = self._texts(rec, known) or changed
            if rec.pop("raw_base64", None) is not None:
                changed = True  # the exact bytes hold the addresses too, in_text or not
            fid = rec.get("file_id")
            if isinstance(fid, str) and fid:
                rec["file_id"] = new_fid = fid_of(fid)
                eid = rec.get("event_id")
                if isinstance(eid, str) and eid.startswith(fid):
                    rec["event_id"] = new_fid + eid[len(fid):]
            if changed:
                _flag(rec)
        return records

    def apply_deep(self, records: Records) -> Records:
        """Summaries: their nested recipients, attempts, decisions and sessions too.
        Values pseudonymised already are kept (a summary is made of records that were,
        but for those read before pseudonymisation was turned on by a reload)."""
        for rec in records:
            known: dict[str, str] = {}
            if self._deep(rec, known, 0):
                _flag(rec)
        return records

    def _deep(self, d: dict[str, Any], known: dict[str, str], depth: int) -> bool:
        changed = self._fields(d, known)
        if depth < 8:
            for v in d.values():
                if isinstance(v, dict):
                    changed = self._deep(v, known, depth + 1) or changed
                elif isinstance(v, list):
                    for x in v:
                        if isinstance(x, dict):
                            changed = self._deep(x, known, depth + 1) or changed
        if self.in_text:
            changed = self._texts(d, known) or changed
        return changed


def _flag(rec: dict[str, Any]) -> None:
    flags = rec.get("flags")
    if isinstance(flags, list):
        if F_PSEUDONYMISED not in flags:
            flags.append(F_PSEUDONYMISED)
    else:
        rec["flags"] = [F_PSEUDONYMISED]


def _known_parts(text: str, known: dict[str, str]) -> list[str]:
    """``text`` cut around whole-word occurrences of ``known``'s originals: [plain,
    pseudonym, plain, …]. A word ends where a letter, digit, "-", "@" or a dot before
    a letter or digit does not follow (and began where none of those precedes): the
    HELO "mail" is not the "mail" of "qmail", nor "5" the one of "5.7.1"."""
    spans: list[tuple[int, int, str]] = []
    n = len(text)
    for orig in sorted(known, key=len, reverse=True):  # the longest first: a name in a name
        start = text.find(orig)
        while start >= 0:
            end = start + len(orig)
            before = text[start - 1] if start else ""
            after = text[end] if end < n else ""
            if not (before and (before.isalnum() or before in "-.@")) and \
                    not (after and (after.isalnum() or after in "-@" or
                                    after == "." and end + 1 < n and text[end + 1].isalnum())) and \
                    not any(a < end and start < b for a, b, _ in spans):
                spans.append((start, end, known[orig]))
            start = text.find(orig, start + 1)
    if not spans:
        return [text]
    spans.sort()
    parts: list[str] = []
    at = 0
    for a, b, new in spans:
        parts.append(text[at:a])
        parts.append(new)
        at = b
    parts.append(text[at:])
    return parts


def _v6_within(s: str) -> tuple[int, int] | None:
    """Where in ``s`` (a match of _IPV6_RE, at most 9 groups) an IPv6 address is: all
    of it, or, cut at one of its first or last two colons, the longest part that is
    ("2001:db8::25::51234": tcpserver's address, a colon and its port)."""
    colons = [i for i, c in enumerate(s) if c == ":"]
    starts = [0, *(c + 1 for c in colons[:2])]
    ends = [len(s), *colons[-2:]]
    for a, b in sorted(((a, b) for a in starts for b in ends if b - a >= 2),
                       key=lambda ab: ab[0] - ab[1]):
        if s.count(":", a, b) >= 2:
            try:
                ipaddress.IPv6Address(s[a:b])
            except ValueError:
                continue
            return a, b
    return None


def _canonical_ip(text: str) -> str:
    """One spelling per address, so ``::ffff:1.2.3.4`` and ``1.2.3.4`` (an IP field
    holds the IPv4, free text may hold either: shipper.ipaddr) and ``2001:DB8::1`` and
    ``2001:db8::1`` get one pseudonym."""
    addr = ip_address(text)
    return text if addr is None else str(addr)


# ---------------------------------------------------------------- all together


@dataclass(slots=True)
class Transformer:
    """The configured transforms, in two steps around the correlator.

    ``pseudonymise`` comes first, so neither the correlator's state nor anything
    after it holds an address; ``select`` (filter, rate limit, drop fields) comes
    after it, so a mail's summary is made of all its lines, also those not shipped.
    ``tidy_summaries`` does both to the summaries, which no filter drops.
    """

    keep: Callable[[dict[str, Any]], bool] | None = None
    rate_limiter: RateLimiter | None = None
    dropped_fields: tuple[str, ...] = ()
    pseudonymiser: Pseudonymiser | None = None
    filtered: int = 0  # records dropped by the include/exclude filter

    def __call__(self, records: Records, now: float | None = None) -> Records:
        """Both steps: for what no correlator sits between (replay)."""
        return self.select(self.pseudonymise(records), now)

    def pseudonymise(self, records: Records) -> Records:
        if self.pseudonymiser is not None:
            self.pseudonymiser.apply(records)
        return records

    def select(self, records: Records, now: float | None = None) -> Records:
        if self.keep is not None:
            n = len(records)
            records = filter_records(records, self.keep)
            self.filtered += n - len(records)
        if self.rate_limiter is not None:
            records = self.rate_limiter.apply(records, time.monotonic() if now is None else now)
        if self.dropped_fields:
            drop_fields(records, self.dropped_fields)
        return records

    def tidy_summaries(self, records: Records) -> Records:
        """The correlator's summaries: pseudonymised (what they took from lines read
        before a reload turned pseudonymisation on is still plain), the dropped keys
        dropped (their own ``raw``, ``message``, ...)."""
        if self.pseudonymiser is not None:
            self.pseudonymiser.apply_deep(records)
        if self.dropped_fields:
            drop_fields(records, self.dropped_fields)
        return records

    @property
    def is_noop(self) -> bool:
        return (self.keep is None and self.rate_limiter is None and not self.dropped_fields
                and self.pseudonymiser is None)


def build_transformer(cfg: TransformConfig, *, rate_limit: bool = True) -> Transformer:
    """The ``[transforms]`` section as a callable over batches; ``rate_limit`` False
    leaves out its rate limit (a replay, paced by --rate, would drop most of it)."""
    t = Transformer(keep=make_filter(cfg.include_programs, cfg.exclude_programs,
                                     cfg.include_events, cfg.exclude_events),
                    dropped_fields=tuple(cfg.drop_fields))
    if rate_limit and cfg.rate_limit.enabled:
        t.rate_limiter = RateLimiter(cfg.rate_limit.rate, cfg.rate_limit.burst)
    p = cfg.pseudonymise
    if p.enabled:
        if p.key is None:
            raise ValueError("pseudonymise is enabled but its key was not loaded "
                             "(load the config with check_files=True)")
        t.pseudonymiser = Pseudonymiser(p.key.value.encode("utf-8"), tuple(p.mail_fields),
                                        tuple(p.ip_fields), tuple(p.host_fields),
                                        tuple(p.text_fields), p.in_text, p.keep_domain)
    return t


def sink_filter(sink: SinkConfig, is_summary: Callable[[dict[str, Any]], bool]
                ) -> Callable[[dict[str, Any]], bool]:
    """The records a sink wants: its ``records`` choice and include/exclude lists.

    ``is_summary`` tells a tracking summary from a per-line record (the
    tracker owns that distinction).
    """
    keep = make_filter(sink.include_programs, sink.exclude_programs, sink.include_events,
                       sink.exclude_events)
    mode = sink.records
    if mode == "both":
        return keep if keep is not None else every_record
    want_summary = mode == "summaries"

    def wants(rec: dict[str, Any]) -> bool:
        if not own_record(rec) and is_summary(rec) != want_summary:
            return False
        return keep is None or keep(rec)

    return wants

