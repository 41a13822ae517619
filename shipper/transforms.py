"""Transforms over batches of record dicts: filter, rate limit, drop fields, pseudonymise.

Pure: no I/O, no clock of its own (the rate limiter takes ``now``). Each
function takes and returns a list of records (the flat dicts of
docs/records.md), in order; records are changed in place where that is cheaper.

Records of the shipper itself (``program = "shipper"``: gap reports and the
like) are never filtered or rate limited: they say that data was lost.

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
_CACHE_MAX = 65536

# Pragmatic patterns for addresses inside free text; candidates are checked
# before replacing (IP addresses with the ipaddress module).
_MAIL_RE = re.compile(r"(?<![\w.%+=!#$&*^{}|~-])(?<!anon:)[\w.%+=!#$&*^{}|~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_IPV6_RE = re.compile(r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}"
                      r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![0-9A-Za-z:]|\.\d)")
_IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")


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
        program = rec.get("program") or "-"
        if program == SELF_PROGRAM:
            return True
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
        self.dropped[program] = self.dropped.get(program, 0) + 1
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
            program = rec.get("program") or "-"
            if program == SELF_PROGRAM or allow(program, now):
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

    def mail(self, address: str) -> str:
        if not address or address.startswith(PREFIX):  # "" is the null sender: keep it
            return address
        if self.keep_domain and "@" in address:
            local, _, domain = address.rpartition("@")
            return f"{self.pseudonym(address)}@{domain}"
        return self.pseudonym(address)

    def ip(self, text: str) -> str:
        return text if not text or text.startswith(PREFIX) else self.pseudonym(_canonical_ip(text))

    def text(self, text: str) -> str:
        """Every mail address and IP address inside free text replaced."""
        if "@" in text:
            text = _MAIL_RE.sub(lambda m: self.mail(m.group(0)), text)
        if text.count(":") >= 2:
            text = _IPV6_RE.sub(self._ipv6_match, text)
        if "." in text:
            text = _IPV4_RE.sub(self._ipv4_match, text)
        return text

    def _ipv6_match(self, m: re.Match[str]) -> str:
        s = m.group(0)
        try:
            ipaddress.IPv6Address(s)
        except ValueError:
            return s
        return self.ip(s)

    def _ipv4_match(self, m: re.Match[str]) -> str:
        s = m.group(0)
        if any(int(octet) > 255 for octet in s.split(".")):
            return s
        return self.ip(s)

    def apply(self, records: Records) -> Records:
        mail, ip, text, pseudonym = self.mail, self.ip, self.text, self.pseudonym
        for rec in records:
            # original → pseudonym for this record's host names, which no pattern
            # can find in free text (and which often embed the client's IP)
            hosts: dict[str, str] = {}
            changed = False
            for name in self.mail_fields:
                v = rec.get(name)
                if isinstance(v, str) and v:
                    rec[name] = mail(v)
                    changed = True
            for name in self.ip_fields:
                v = rec.get(name)
                if isinstance(v, str) and v:
                    rec[name] = ip(v)
                    changed = True
            for name in self.host_fields:
                v = rec.get(name)
                if isinstance(v, str) and v and not v.startswith(PREFIX):
                    rec[name] = hosts[v] = pseudonym(v)
                    changed = True
            if self.in_text:
                for name in self.text_fields:
                    v = rec.get(name)
                    if isinstance(v, str) and v:
                        new = text(v)
                        for host in sorted(hosts, key=len, reverse=True):
                            if host in new:
                                new = new.replace(host, hosts[host])
                        if new != v:
                            rec[name] = new
                            changed = True
                if rec.pop("raw_base64", None) is not None:
                    changed = True  # the exact bytes hold the addresses too
            if changed:
                flags = rec.get("flags")
                if isinstance(flags, list):
                    if F_PSEUDONYMISED not in flags:
                        flags.append(F_PSEUDONYMISED)
                else:
                    rec["flags"] = [F_PSEUDONYMISED]
        return records


def _canonical_ip(text: str) -> str:
    """One spelling per address, so ``::ffff:1.2.3.4`` and ``1.2.3.4`` (an IP field
    holds the IPv4, free text may hold either: shipper.ipaddr) and ``2001:DB8::1`` and
    ``2001:db8::1`` get one pseudonym."""
    addr = ip_address(text)
    return text if addr is None else str(addr)


# ---------------------------------------------------------------- all together


@dataclass(slots=True)
class Transformer:
    """The configured transforms, in a fixed order: filter, rate limit, drop, pseudonymise.

    Filtering and rate limiting come first so no work is spent on records that
    are dropped; pseudonymising comes last so no later step sees an address.
    """

    keep: Callable[[dict[str, Any]], bool] | None = None
    rate_limiter: RateLimiter | None = None
    dropped_fields: tuple[str, ...] = ()
    pseudonymiser: Pseudonymiser | None = None
    filtered: int = 0  # records dropped by the include/exclude filter

    def __call__(self, records: Records, now: float | None = None) -> Records:
        if self.keep is not None:
            n = len(records)
            records = filter_records(records, self.keep)
            self.filtered += n - len(records)
        if self.rate_limiter is not None:
            records = self.rate_limiter.apply(records, time.monotonic() if now is None else now)
        if self.dropped_fields:
            drop_fields(records, self.dropped_fields)
        if self.pseudonymiser is not None:
            self.pseudonymiser.apply(records)
        return records

    def tidy_summaries(self, records: Records) -> Records:
        """The correlator's summaries, made of records already transformed: only the
        dropped keys are left to drop (their own ``raw``, ``message``, ...)."""
        if self.dropped_fields:
            drop_fields(records, self.dropped_fields)
        return records

    @property
    def is_noop(self) -> bool:
        return (self.keep is None and self.rate_limiter is None and not self.dropped_fields
                and self.pseudonymiser is None)


def build_transformer(cfg: TransformConfig) -> Transformer:
    """The ``[transforms]`` section as a callable over batches."""
    t = Transformer(keep=make_filter(cfg.include_programs, cfg.exclude_programs,
                                     cfg.include_events, cfg.exclude_events),
                    dropped_fields=tuple(cfg.drop_fields))
    if cfg.rate_limit.enabled:
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
        if rec.get("program") != SELF_PROGRAM and is_summary(rec) != want_summary:
            return False
        return keep is None or keep(rec)

    return wants

