"""HTTP sink: POST batches to ClickHouse, Elasticsearch, Loki, Splunk HEC, OTLP...

The standard library's ``http.client`` does the HTTP; each request runs in a
worker thread (``asyncio.to_thread``) on one persistent keep-alive connection,
so the event loop never blocks. One ``send`` is one attempt, as the contract in
``shipper.sinks.base`` says:

* 2xx → delivered (Elasticsearch: the bulk items are checked too; OTLP: a
  ``partialSuccess`` with rejected records counts as refused);
* 5xx, 408, 429 and connection/TLS/timeout errors → ``SinkError``, with
  ``retry_after`` from ``Retry-After`` (seconds or an HTTP date); but a ClickHouse
  exception for a value it cannot take (``CLICKHOUSE_DATA_ERRORS``: a parse error, a
  constraint, a throwIf), 500 on older servers, is the records' fault, as a 400 is,
  and an insert over too many partitions (Code 252, not "Too many parts") is sent
  again in smaller parts, none refused;
* 401, 403, 404, 405, 407, 421 → ``SinkError`` too: credentials, a missing table or a
  wrong URL (Elasticsearch answers 405 to a POST to ``/``) are not the records'
  fault, and the fix makes them go through;
* 3xx → ``SinkError`` naming ``Location``: a moved endpoint is the URL's to fix (not
  followed: the credentials would go along);
* 413 → the batch is sent again in halves (and later batches kept that small),
  down to one record;
* a 413 for one record → that record alone is refused (``PermanentError`` with
  ``refused``, after the rest of the batch went): the pipeline dead-letters it only;
  a GELF message is cut instead (to Graylog's 64 KiB, then halves) until it goes
  (``_truncated``), as the UDP and TCP sinks cut one;
* any other 4xx (400, 422): the records' fault, some of them or all: the part is
  sent again in halves, down to the records refused alone (within ``SPLIT_REQUESTS``
  requests a try), and those only are refused (``PermanentError`` with ``refused``,
  or none: the whole batch): the pipeline dead-letters them, the rest is delivered.
  Splunk HEC says which event it refused (``invalid-event-number``; it indexed those
  before it): that one is refused and the rest sent again, nothing twice. A ClickHouse
  refusal of the query itself (400 with another code: a syntax error) refuses the
  part whole at once, as does any other status; the refusal said is the first.

A batch whose body exceeds ``max_batch_bytes`` (before compression) is split in
halves until each part fits; parts are sent in order. A part delivered is not sent
again when a later one fails and the batch is tried again (ClickHouse would keep it
twice), nor when a batch refused in part comes again while its dead letter cannot be
written (its refused records are refused again, unsent); a stop that cuts the tries
short leaves unacknowledged only what follows the first record not delivered
(``answered``), for the next start to send.

Elasticsearch: a 200 whose items include mapping errors (400-class) refuses
those items only (PermanentError with ``refused``: they are dead-lettered, the
others are in the index). Retryable item errors (429/5xx) make the batch be
sent again; items already created then come back as 409 and count as delivered.

Secrets (basic password, bearer token) are read once, at construction, from a
file or an environment variable (or given as a value by the config loader).
They go into the Authorization header only: never into a log line, an
exception or a repr. With format ``splunk_hec`` a bearer token is sent as
``Authorization: Splunk <token>``, the scheme HEC expects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from shipper.encode import gelf as _gelf
from shipper.encode import http_body
from shipper.sinks.base import (
    PermanentError,
    SinkError,
    SinkStats,
    SlowPeer,
    describe_error,
    lookup,
    printable,
)
from shipper.sinks.confirm import socket_unacked
from shipper.tlsconfig import TlsOptions, client_context

log = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 429})
# Refusals that say nothing about the records: wrong credentials, a table or index
# that is not there (ClickHouse answers 404 for a missing table, also while it
# restarts), a URL that takes no POST (405). Dead-lettering the stream for them would lose it to a typo: retry.
NOT_THE_RECORDS = frozenset({401, 403, 404, 405, 407, 421})
MAX_ERROR_BODY = 1000  # characters of a refusal kept in the error / dead letter
MAX_ANSWER = 16 << 20  # bytes of an answer read (an Elasticsearch bulk reply of 10k item errors: ~10 MB)
COLUMNS_TTL = 300.0  # seconds: how often a ClickHouse table's columns are looked at again
DESCRIBE_RETRY = 10.0  # seconds: after a DESCRIBE the server did not answer
# ClickHouse refusals that name a column (Code 16 NO_SUCH_COLUMN_IN_TABLE, 117 INCORRECT_DATA)
_COLUMN_WORDS = ("Unknown field", "No such column", "There is no column", "Cannot parse input")
# ClickHouse's exception codes for a value it cannot take: parse errors (6, 25, 26, 27, 38,
# 41, 72), type and range (53, 69, 70, 321), 117 INCORRECT_DATA, 131 a string too long, 190
# arrays of unequal sizes, 349 NULL in a plain column, 395 a throwIf, 469 a CHECK
# constraint, 691 an unknown Enum element. The records' fault, whatever the status: 18.16
# answers 500 for 27, 117 and 395 (400 for 26, 38), and a 5xx is retried: one such record
# held its sink for good while the buffer filled (a poison-record hunt).
CLICKHOUSE_DATA_ERRORS = frozenset({6, 25, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 190, 321,
                                    349, 395, 469, 691})
# the code and the message of the first exception: 18.16 "Code: 117, e.displayText() =
# DB::Exception: Unknown field ...", newer "Code: 117. DB::Exception: Unknown field ..."
_CH_CODE = re.compile(r"\bCode: (\d+)[.,]? *(?:e\.displayText\(\) = )?(?:DB::Exception: )?")
# Code 252 is also "Too many parts" (merges behind: the server's, retried), but this one
# is the batch's: its rows span more partitions than max_partitions_per_insert_block
# (a replay into a table partitioned by day); smaller parts go, none is refused
_CH_SPREAD = "Too many partitions for single INSERT block"
# Requests a try of one batch may spend finding the records a receiver refuses in it (by
# halving the refused parts): k refused records among n take about 2k*log2(n/k); past it a
# refused part goes to the dead letter whole. So a try costs at most its parts plus this,
# also when every record is refused (Loki's 400 for a replay older than it keeps: 2n
# requests unbounded).
SPLIT_REQUESTS = 64


GELF_HTTP_LIMIT = 64 << 10  # Graylog's GELF HTTP input: max_chunk_size, its default


SEND_CHUNK = 64 << 10  # bytes handed to the socket at a time: `timeout` is per chunk


def _ch_exception(text: str) -> tuple[int | None, str]:
    """A ClickHouse refusal's code and message (of its first exception), told by the
    message's own words, never by words anywhere in it: a constraint's refusal quotes
    the record ("Column values: message = '...'"), and one whose text held "Unknown
    field" was taken for the table's fault and retried for good, holding the sink."""
    m = _CH_CODE.search(text)
    return (int(m.group(1)), text[m.end():]) if m else (None, "")


def _chunks(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for i in range(0, len(view), SEND_CHUNK):
        yield view[i:i + SEND_CHUNK]


def _response_within(conn: http.client.HTTPConnection, timeout: float) -> http.client.HTTPResponse:
    """``conn.getresponse()`` given ``timeout`` in all for its status line and headers:
    http.client's timeout is per receive, and a receiver trickling a byte of its
    headers every half second held the sink, shown up, for good (a security review).
    Past it the socket is shut down, which ends the read."""
    sock = conn.sock
    lock = threading.Lock()
    state = {"done": False, "cut": False}

    def give_up() -> None:
        with lock:  # never once the headers are in: the body is read on that socket
            if state["done"]:
                return
            state["cut"] = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException):
        with lock:
            state["done"] = True
        if state["cut"]:
            raise SlowPeer(f"the answer's headers took longer than {timeout:g}s") from None
        raise
    finally:
        timer.cancel()
    with lock:
        state["done"] = True
    if state["cut"]:  # (the shutdown may read as the headers' end: not an answer)
        raise SlowPeer(f"the answer's headers took longer than {timeout:g}s")
    return resp


def _await_answer(sock: socket.socket, timeout: float) -> None:
    """Wait until the peer answers, for as long as it keeps taking the body: a slow
    reader is no dead one. TimeoutError once it neither reads nor answers for
    ``timeout``. (A batch that a slow link needs longer than ``timeout`` for was
    otherwise never delivered: sent again, whole, forever.)"""
    tls = isinstance(sock, ssl.SSLSocket)
    if tls and sock.pending():
        return
    poll = select.poll()
    poll.register(sock, select.POLLIN | select.POLLPRI)
    left = socket_unacked(sock) or 0
    deadline = time.monotonic() + timeout
    # Over TLS, bytes to read need not be the answer: TLS 1.3's session tickets come
    # right after the handshake and stay unread until the answer is (found by review:
    # a slow receiver over HTTPS was not waited for). Once something came, the wait
    # goes on while the peer takes the body, then the answer is read.
    came = False
    while True:
        wait = min(deadline - time.monotonic(), 1.0)
        if wait <= 0:
            if came:  # it stopped taking the body: what came may be an early answer
                return
            raise TimeoutError
        if not came:
            if poll.poll(wait * 1000):
                if not tls:
                    return
                came = True
                poll.modify(sock, 0)  # from now on a hang-up or an error only (close())
        elif poll.poll(min(wait, 0.05) * 1000):
            return  # the connection ended (our close() shuts it down): nothing to wait for
        now = socket_unacked(sock) or 0
        if came and now == 0:
            return
        if now < left:  # the peer took bytes: it is alive
            deadline = time.monotonic() + timeout
        left = now


def read_answer(resp: http.client.HTTPResponse, timeout: float, limit: int | None = None) -> bytes:
    """The answer's body (its first ``limit`` bytes), given up (TimeoutError) when it
    comes slower than 64 KiB per ``timeout``: http.client's timeout is per receive,
    and a peer trickling a byte a second held the sink on one batch for a day, up and
    saying nothing (a black-box review)."""
    parts: list[bytes] = []
    got = since = 0
    deadline = time.monotonic() + timeout
    while limit is None or got < limit:
        chunk = resp.read1(65536 if limit is None else min(65536, limit - got))
        if not chunk:
            if resp.length:  # (read1 says nothing of a body cut short)
                raise http.client.IncompleteRead(b"".join(parts), resp.length)
            resp.read()  # (nothing left) the answer ends: its connection may serve the next
            break
        parts.append(chunk)
        got += len(chunk)
        since += len(chunk)
        if since >= 65536:
            since, deadline = 0, time.monotonic() + timeout
        elif time.monotonic() > deadline:
            raise SlowPeer(f"the answer came slower than 64 KiB in {timeout:g}s")
    return b"".join(parts)


def _with_query(path: str, param: str) -> str:
    return path + ("&" if "?" in path else "?") + param


def _error_text(data: bytes) -> str:
    """The start of a peer's refusal, as text."""
    return data[:4 * MAX_ERROR_BODY].decode("utf-8", "replace")[:MAX_ERROR_BODY]


def read_secret(value: str | None = None, file: str | None = None, env: str | None = None,
                what: str = "secret") -> str | None:
    """The secret from a value, a file (first line, whitespace stripped) or an env var.

    Errors name where the secret should have come from, never the secret.
    """
    given = [x for x in (value, file, env) if x is not None]
    if len(given) > 1:
        raise ValueError(f"{what}: give one of value, file or environment variable")
    if file is not None:
        try:
            with open(file, encoding="utf-8") as f:
                value = f.readline().strip()
        except OSError as exc:
            raise ValueError(f"{what}: cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{what}: {file} is not UTF-8 text") from None
    elif env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"{what}: environment variable {env} is not set")
        value = value.strip()
    if value is not None:
        if not value and (file is not None or env is not None):
            raise ValueError(f"{what} is empty")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"{what} contains a line break or NUL")
    return value


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` → seconds to wait (delta-seconds or HTTP-date), None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _connect_any(infos: list[Any], timeout: float | None) -> socket.socket:
    """A connected socket to the first of ``infos`` (getaddrinfo's) that takes it, as
    socket.create_connection tries each address of a name."""
    error: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(addr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError("no address")


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS with its own TLS handshake timeout and SNI name (``TlsOptions.server_name``)."""

    def __init__(self, host: str, port: int | None, *, timeout: float, context: ssl.SSLContext,
                 server_name: str | None, handshake_timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._handshake_timeout = handshake_timeout

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP (+ CONNECT tunnel) with self.timeout
        sock = self.sock
        sock.settimeout(self._handshake_timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name or self.host)
        except TimeoutError:  # said as the other sinks say it (it was "timed out")
            sock.close()
            raise SlowPeer(f"TLS handshake timed out after {self._handshake_timeout:g}s (peer accepted "
                           "TCP but did not complete the handshake)") from None


class HttpSink:
    """POST record batches to an HTTP endpoint in one of ``http_body.FORMATS``."""

    def __init__(self, url: str, format: str = "ndjson", *, name: str = "http",
                 table: str | None = None, index: str | None = None, gzip: bool = True,
                 timeout: float = 30.0, connect_timeout: float = 10.0,
                 tls: TlsOptions | None = None, headers: dict[str, str] | None = None,
                 user: str | None = None, password: str | None = None,
                 password_file: str | None = None, password_env: str | None = None,
                 token: str | None = None, token_file: str | None = None,
                 token_env: str | None = None, max_batch_bytes: int = 10 << 20,
                 max_batch_records: int | None = None, keepalive: bool = True, reuse: bool = True,
                 default_host: str | None = None) -> None:
        if format not in http_body.FORMATS:
            raise ValueError(f"format must be one of {http_body.FORMATS}, not {format!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http://HOST[:PORT]/PATH or https://...")
        self.name = name
        self.stats = SinkStats()
        self.format = format
        self.table = table
        self.index = index
        self.gzip = gzip
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.reuse = reuse  # one connection for every request (the config's keepalive)
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_records = max_batch_records
        self.default_host = default_host or socket.gethostname()
        if format == "clickhouse" and not table:
            raise ValueError('format "clickhouse" needs table=')
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._post_path = self._path
        if format == "clickhouse":
            # a key the table has no column for is an error (then the columns are read
            # again and it goes to `fields`), never dropped without a word, as newer
            # servers do by default
            self._post_path = _with_query(self._path, "input_format_skip_unknown_fields=0")
        # the URL as it may be shown: no user:password@
        port = f":{parts.port}" if parts.port else ""
        self.url = f"{parts.scheme}://{parts.hostname}{port}{parts.path or '/'}"
        self._tls = tls or TlsOptions() if parts.scheme == "https" else None
        self._ctx = client_context(self._tls) if self._tls is not None else None
        self._headers = {"User-Agent": "shipper", "Connection": "keep-alive" if reuse else "close"}
        for k, v in (headers or {}).items():
            if any(c in str(k) + str(v) for c in "\r\n\0"):
                raise ValueError(f"header {k!r}: line break or NUL in name or value")
            self._headers[str(k)] = str(v)
        if parts.username is not None and user is None:
            user = unquote(parts.username)
            password = password if password is not None else unquote(parts.password or "")
        password = read_secret(password, password_file, password_env, "basic auth password")
        token = read_secret(token, token_file, token_env, "bearer token")
        if user is not None and token is not None:
            raise ValueError("give basic auth (user/password) or a bearer token, not both")
        self._auth: str | None = None
        if user is not None:
            cred = f"{user}:{password or ''}".encode()
            self._auth = "Basic " + base64.b64encode(cred).decode("ascii")
        elif token is not None:
            self._auth = ("Splunk " if format == "splunk_hec" else "Bearer ") + token
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one request at a time on the connection
        self._refusal: PermanentError | None = None  # the first refusal of the batch
        # the batch being sent, and what became of its records (by id(): the batch holds
        # them): True delivered, False refused for good; kept while a try fails
        self._batch: list[dict[str, Any]] | None = None
        self._settled: dict[int, bool] = {}
        self._held: list[dict[str, Any]] | None = None  # the dicts whose ids _settled holds
        self._split_left = SPLIT_REQUESTS  # requests a try may still spend halving refusals
        self._looked = False  # the table's columns looked at again in this try
        self._closing = False
        # ClickHouse: the table's columns (DESCRIBE TABLE), looked at again every
        # COLUMNS_TTL and after a refusal that names a column; None: conf/clickhouse.sql's
        self._columns: http_body.Columns | None = None
        self._columns_at: float | None = None
        self._told_no_fields = False
        self._told_no_describe = False
        self._aux: http.client.HTTPConnection | None = None  # a DESCRIBE's connection
        self._addrs: list[Any] | None = None  # the receiver's, looked up for the next connect

    def __repr__(self) -> str:
        return f"HttpSink(name={self.name!r}, url={self.url!r}, format={self.format!r})"

    # -- the contract ----------------------------------------------------

    async def send(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        if records is not self._batch:
            # a new batch; a try again of the last one sends only what it has not settled:
            # a part delivered stays delivered (ClickHouse keeps an insert that went, and
            # had it twice when the whole batch went again after a later part's 503).
            # So does a record of a batch refused in part that comes again in a new list
            # (the same dict: the pipeline sends the batch again while its dead letter
            # cannot be written): 199 good records went 26 times in 3 s to a full disk.
            # (An id is only looked up while the old batch, holding its dict, is alive; the
            # batch sent again starts where the old one did, with the same first record.)
            old = self._settled
            again = bool(old) and id(records[0]) in old
            settled = {id(r): old[id(r)] for r in records if id(r) in old} if again else {}
            if False not in settled.values():
                self._refusal = None
            self._batch = self._held = records
            self._settled = settled
        self._split_left = SPLIT_REQUESTS
        self._looked = False
        await self.look_up()
        if self.format == "clickhouse" and (self._columns_at is None
                                            or time.monotonic() - self._columns_at > COLUMNS_TTL):
            await asyncio.to_thread(self._describe)
        settled = self._settled
        await self._send_parts([r for r in records if id(r) not in settled])
        refused = [i for i, r in enumerate(records) if settled.get(id(r)) is False]
        self._batch = None  # answered: nothing (the pipeline has the outcome)
        if refused:
            # the outcomes kept (_held keeps their dicts) for the next batch: see above
            first = self._refusal
            assert first is not None
            raise PermanentError(str(first), response=first.response,
                                 refused=None if len(refused) == len(records) else refused)
        self._held, self._settled = None, {}

    def answered(self, records: list[dict[str, Any]]) -> int:
        """How many of ``records``, from the first, are delivered: a batch cut short by a
        stop or a reload while its parts went is acknowledged that far by the pipeline
        (the rest goes again; a refused record ends the count: it is not dead-lettered)."""
        if records is not self._batch:
            return 0
        n = 0
        for r in records:
            if self._settled.get(id(r)) is not True:
                break
            n += 1
        return n

    async def close(self) -> None:
        # A request may be waiting on a slow peer (up to ``timeout``) with the lock held:
        # shut its socket down first, so it ends now and the stop is not held past the
        # drain (the batch stays in the buffer, sent again at the next start).
        self._closing = True
        for conn in (self._conn, self._aux):
            sock = getattr(conn, "sock", None) if conn is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    # the plain socket's shutdown: SSLSocket.shutdown drops its TLS state
                    # first, and a send in flight could then go out in clear
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
        await asyncio.to_thread(self._close_conn)

    # -- internals -------------------------------------------------------

    async def look_up(self) -> None:
        """The receiver's addresses for the next connect, looked up off the request
        thread (bounded, a retry joining a look-up still running): http.client's own
        look-up held an executor thread for the name server's whole timeout, and a stop
        waited for it (20 s with a 5 s drain, found by fault injection). Looked up again
        for each new connection, as http.client did (a name moved to another host)."""
        if self._conn is not None and self._addrs is not None:
            return
        port = self._port or (443 if self._ctx is not None else 80)
        try:
            self._addrs = await asyncio.wait_for(lookup(self._host or "", port, socket.SOCK_STREAM),
                                                 self.connect_timeout)
        except TimeoutError as exc:  # the words of the look-up's own end (see open_stream)
            raise SinkError(f"{self.url}: cannot resolve the host name: Temporary failure in "
                            "name resolution") from exc
        except OSError as exc:
            raise SinkError(f"{self.url}: {describe_error(exc)}") from exc

    def _split(self, records: list[dict[str, Any]]) -> list[tuple[list[dict[str, Any]], http_body.HttpBody]]:
        """Parts of at most max_batch_records whose plain body is at most max_batch_bytes."""
        n = self.max_batch_records
        todo = [records[i:i + n] for i in range(0, len(records), n)] if n else [records]
        out: list[tuple[list[dict[str, Any]], http_body.HttpBody]] = []
        while todo:
            part = todo.pop(0)
            body = http_body.encode(part, self.format, table=self.table, index=self.index,
                                    default_host=self.default_host, columns=self._columns)
            if len(part) > 1 and len(body.body) > self.max_batch_bytes:
                half = len(part) // 2
                todo[:0] = [part[:half], part[half:]]
            else:
                out.append((part, body))  # one oversized record goes as it is: the peer decides
        return out

    async def _send_parts(self, records: list[dict[str, Any]]) -> None:
        """Send ``records`` in parts; each record's outcome goes to ``_settled`` (True
        delivered, False refused for good). A part refused takes only itself: the parts
        after it still go. ``_refusal``: the first refusal."""
        for part, body in self._split(records):
            try:
                await self._send_part(part, body)
            except PermanentError as exc:
                self._refuse(part, range(len(part)) if exc.refused is None else exc.refused, exc)

    def _delivered(self, records: list[dict[str, Any]]) -> None:
        self.stats.acked += len(records)
        for r in records:
            self._settled[id(r)] = True

    def _refuse(self, records: list[dict[str, Any]], refused: Any, exc: PermanentError) -> None:
        """``records[i]`` for i in ``refused`` are refused for good; the others are in."""
        self._refusal = self._refusal or exc
        bad = set(refused)
        self.stats.acked += len(records) - len(bad)
        for i, r in enumerate(records):
            self._settled[id(r)] = i not in bad

    def _records_fault(self, status: int, text: str) -> bool | None:
        """Whether a refusal is the records' (some of them may go: the part is halved to
        find those), the whole part's for good (False: as it is), or nothing of the
        records' (None: retried). Called for statuses other than 2xx, 3xx and 413."""
        if self.format == "clickhouse":
            code, said = _ch_exception(text)
            if code in CLICKHOUSE_DATA_ERRORS and not said.startswith("Unknown field"):
                return True  # (an unknown field: the table's, see _COLUMN_WORDS: as before)
            if code == 252 and said.startswith(_CH_SPREAD):
                return True
            if code == 49 and said.startswith("Unknown element"):
                return True  # 18.16's word for an Enum value it does not know (LOGICAL_ERROR)
            if code is not None and 400 <= status < 500 and status not in NOT_THE_RECORDS | RETRYABLE:
                return False  # a query the server cannot run (62 a syntax error): every record alike
        if status >= 500 or status in RETRYABLE or status in NOT_THE_RECORDS:
            return None
        return 400 <= status < 500  # (another status: the whole part, as before)

    async def _send_part(self, records: list[dict[str, Any]], body: http_body.HttpBody) -> None:
        """Send one part; its records' outcomes go to ``_settled`` (a 413 for one record,
        or one a receiver refuses among others: the others go on). A refusal of the
        whole part raises PermanentError; one to retry, SinkError."""
        self.stats.sent += len(records)
        status, reason, resp_headers, data = await asyncio.to_thread(self._request, body)
        if 200 <= status < 300:
            self._check_2xx(records, data)
            self._delivered(records)
            return
        text = _error_text(data)
        what = f"HTTP {status} {reason} from {self.url}"
        if self.format == "clickhouse" and any(w in text for w in _COLUMN_WORDS) and not self._looked:
            # the table may have changed: look at its columns again, and when they did
            # change, the batch goes again as they are now (modern servers answer 400).
            # Once a try: the halves of a batch with one bad value each said it again.
            self._looked = True
            before = self._columns
            await asyncio.to_thread(self._describe)
            if self._columns != before:
                raise SinkError(f"{what}: the table's columns changed; sending again: {text}")
        if status == 413 and len(records) > 1:
            # Too large for the peer: learn its limit, send the batch again in halves.
            self.stats.sent -= len(records)
            limit = max(1024, min(self.max_batch_bytes, len(body.body) // 2))
            if limit < self.max_batch_bytes:  # said once per step down, not once per part
                self.max_batch_bytes = limit
                log.warning("%s: HTTP 413 for %d bytes; sending batches of at most %d bytes from now on",
                            self.name, len(body.body), limit)
            # Halved here, not by the limit: at its floor a part under it would go again
            # whole, forever (found by fault injection: RecursionError ended the daemon).
            half = len(records) // 2
            await self._send_parts(records[:half])
            await self._send_parts(records[half:])
            return
        if status == 413 and self.format == "gelf" and len(body.body) > 1024:
            # GELF carries a message cut to fit (as over UDP and TCP), not refused: Graylog's
            # GELF HTTP input takes 64 KiB by default (max_chunk_size), less than one long
            # line's record, which went to the dead letter while UDP delivered it cut
            size = len(body.body)  # the input's own limit first, then halves
            limit = GELF_HTTP_LIMIT if size > GELF_HTTP_LIMIT else size // 2
            line, cut = _gelf.encode_line_within(records[0], self.default_host, limit)
            if cut:
                self.stats.sent -= 1
                if b'"_truncated"' not in body.body:
                    self.stats.truncated += 1  # (once a record, however often halved)
                await self._send_part(records, http_body.HttpBody(line, body.content_type, body.headers))
                return
        if status == 413:  # one record the peer will never take: that record only
            raise PermanentError(f"{what} for one record of {len(body.body)} bytes"
                                 + (f": {text}" if text else ""), response=text)
        if 300 <= status < 400:
            # a moved endpoint (http → https, a load balancer): the URL is the sink's to
            # fix, not the records' fault; not followed (credentials would go along)
            where = resp_headers.get("location")
            raise SinkError(f"{what}: the endpoint moved" + (f" to {where}" if where else "")
                            + "; set url to it")
        fault = self._records_fault(status, text)
        if fault is None:
            if status in NOT_THE_RECORDS:
                raise SinkError(f"{what} (the sink's URL, table or credentials, not the records: "
                                f"retrying): {text}" if text else what)
            raise SinkError(f"{what}: {text}" if text else what,
                            retry_after=parse_retry_after(resp_headers.get("retry-after")))
        refusal = PermanentError(f"{what}: {text}" if text else what, response=text)
        if fault and self.format == "splunk_hec" and await self._hec_refused(records, data, refusal):
            return
        if fault and len(records) > 1 and self._split_left >= 2:
            # Refused for what some records hold (a value the table cannot take, Loki's
            # entry too old): the halves go on their own, down to the records refused
            # alone, which go to the dead letter; the rest is delivered, each part once.
            # Loki takes the good entries of a refused push and drops those sent again
            # (same time and line); ClickHouse and ndjson receivers store none of it.
            self._split_left -= 2
            self.stats.sent -= len(records)
            half = len(records) // 2
            await self._send_parts(records[:half])
            await self._send_parts(records[half:])
            return
        code, said = _ch_exception(text) if self.format == "clickhouse" else (None, "")
        if code == 252 and said.startswith(_CH_SPREAD):
            # no record is at fault: the next try goes on halving what is left
            raise SinkError(f"{what}: {text}")
        raise refusal

    async def _hec_refused(self, records: list[dict[str, Any]], data: bytes,
                           refusal: PermanentError) -> bool:
        """Splunk HEC names the first event it refuses (``invalid-event-number``): that
        one is refused, the others go again in one request. Whether Splunk indexed those
        before it is not sure (not tried against a real Splunk): sent again, they may be
        there twice, with the same event ids, rather than lost. False without the number:
        the part is halved as for any other refusal of the records."""
        n = http_body.hec_invalid_event(data)
        if n is None or not 0 <= n < len(records):
            return False
        self._refuse(records[n:n + 1], [0], refusal)
        rest = records[:n] + records[n + 1:]
        if rest and self._split_left < 1:
            self._refuse(rest, range(len(rest)), refusal)
        elif rest:
            self._split_left -= 1
            self.stats.sent -= len(rest)
            await self._send_parts(rest)
        return True

    def _check_2xx(self, records: list[dict[str, Any]], data: bytes) -> None:
        if self.format == "clickhouse" and b"DB::Exception" in data:
            # An error after the headers went (a 200 already sent): not stored
            text = _error_text(data)
            if any(w in text for w in _COLUMN_WORDS):
                self._columns_at = None
            raise SinkError(f"HTTP 200 with an error from {self.url}: {text}")
        if self.format == "elasticsearch" and b'"errors":true' in data.replace(b" ", b""):
            if len(data) >= MAX_ANSWER:
                # cut at the cap: which items were refused cannot be read; all again
                # (those in the index already come back 409: counted delivered)
                raise SinkError(f"a bulk answer over {MAX_ANSWER >> 20} MiB with item errors: "
                                "sending the batch again (set batch_max_records lower)")
            out = http_body.elasticsearch_outcome(data)
            if out.duplicates:
                self.stats.extra["duplicates"] = self.stats.extra.get("duplicates", 0) + out.duplicates
            if out.retryable:
                raise SinkError(f"{len(out.retryable)} bulk items to retry: "
                                f"{out.retryable[0]}")
            if out.permanent:
                # the other items are in the index: only the refused go to the dead letter
                text = "; ".join(out.permanent[:5])[:MAX_ERROR_BODY]
                refused = [i for i in out.refused if i < len(records)]
                raise PermanentError(f"{len(out.permanent)} of {len(records)} bulk "
                                     f"items refused: {text}", response=text,
                                     refused=refused if len(refused) == len(out.permanent) else None)
        elif self.format == "otlp" and b"partialSuccess" in data:
            rejected, message = http_body.otlp_rejected(data)
            if rejected:
                # OTLP says not to send a partial success again, nor which were rejected:
                # the whole batch goes to the dead letter, the rest were taken
                raise PermanentError(f"collector rejected {rejected} of {len(records)} "
                                     f"log records (it does not say which: the whole batch is "
                                     f"kept, the others were taken): {message[:MAX_ERROR_BODY]}",
                                     response=data[:MAX_ERROR_BODY].decode("utf-8", "replace"))

    def _describe(self) -> None:
        """Learn the ClickHouse table's columns (blocking; in a worker thread). On any
        failure the columns stay as they were: the insert will say what is wrong."""
        # looked at again after COLUMNS_TTL whatever comes of it: a user who may only
        # INSERT must not cost a failing query a batch (the columns stay as they were)
        self._columns_at = time.monotonic()
        try:
            status, reason, data = self._get(f"DESCRIBE TABLE {self.table} FORMAT TSV", 1 << 20)
        except (OSError, http.client.HTTPException) as exc:
            # the server down (a start before ClickHouse's): asked again soon, not after
            # COLUMNS_TTL, whose inserts wrote only the default columns
            self._columns_at = time.monotonic() - COLUMNS_TTL + DESCRIBE_RETRY
            self._describe_failed(describe_error(exc))
            return
        cols = http_body.clickhouse_columns(data.decode("utf-8", "replace")) if status == 200 else {}
        if not cols:
            self._describe_failed(f"HTTP {status} {reason}")
            return
        self._columns = cols
        if "fields" not in cols and not self._told_no_fields:
            self._told_no_fields = True
            log.warning("%s: table %s has no `fields` column: keys without a column of their "
                        "own are not stored (conf/clickhouse.sql has one)", self.name, self.table)

    def _describe_failed(self, why: str) -> None:
        if not self._told_no_describe:
            self._told_no_describe = True
            log.info("%s: cannot read the columns of table %s (%s): writing the columns of "
                     "conf/clickhouse.sql", self.name, self.table, printable(why, 300))

    def _get(self, query: str | None, limit: int) -> tuple[int, str, bytes]:
        """A GET of ours (blocking): DESCRIBE, check's probe; ClickHouse's ``query`` in the
        URL. On its own connection, which ``close`` may shut (never past the drain),
        with the sink's headers (a ClickHouse user or database may be chosen by
        X-ClickHouse-* headers) and credentials."""
        path = self._path if query is None else _with_query(self._path, "query=" + urllib.parse.quote(query))
        headers = {k: v for k, v in self._headers.items() if k != "Connection"}
        headers["Connection"] = "close"
        if self._auth is not None:
            headers["Authorization"] = self._auth
        conn = self._aux = self._connect()
        try:
            conn.request("GET", path, headers=headers)
            resp = _response_within(conn, self.timeout)  # (its headers trickled: check waited for good)
            return resp.status, resp.reason, read_answer(resp, self.timeout, limit or MAX_ANSWER)
        finally:
            conn.close()
            self._aux = None

    def probe(self) -> str:
        """What ``shipper check`` finds at the door (blocking): "" when a GET with our
        credentials gets the answer a door of this format gives, else the problem.
        ClickHouse is asked whether the table exists; other formats' endpoints take
        only POST, so their 405 to a GET is the good answer."""
        shown = self._path.split("?", 1)[0]
        try:
            status, reason, data = self._get(
                f"EXISTS TABLE {self.table}" if self.format == "clickhouse" else None, 4096)
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            # (a verification failure too: with the hint run's log gives, which check left out)
            return describe_error(exc)
        if status in (401, 403, 407):
            return f"HTTP {status} {reason} from GET {shown}: the credentials were refused"
        if status == 404 and self.format in ("elasticsearch", "loki", "splunk_hec", "otlp"):
            return f"HTTP 404 from GET {shown}: no {self.format} endpoint at this URL"
        if self.format == "clickhouse" and status == 200 and data.strip() == b"0":
            return f"table {self.table} does not exist (conf/clickhouse.sql makes it)"
        if status >= 500 or (self.format == "clickhouse" and status != 200):
            text = data[:200].decode("utf-8", "replace").strip().splitlines()
            return f"HTTP {status} {reason} from GET {shown}" + (f": {text[0]}" if text else "")
        return ""

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._ctx is not None:
            assert self._tls is not None
            conn = _HTTPSConnection(self._host, self._port, timeout=self.connect_timeout,
                                    context=self._ctx, server_name=self._tls.server_name,
                                    handshake_timeout=self._tls.handshake_timeout)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.connect_timeout)
        addrs = self._addrs
        if addrs:  # http.client's connect goes through _create_connection(address, timeout, ...)
            conn._create_connection = (  # type: ignore[attr-defined]
                lambda _address, timeout, source=None: _connect_any(addrs, timeout))
        conn.connect()
        sock = conn.sock
        if self.keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(self.timeout)
        return conn

    def _close_conn(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self.stats.connected = False

    def _request(self, body: http_body.HttpBody) -> tuple[int, str, dict[str, str], bytes]:
        """One POST (in a worker thread). Reconnects once if a kept-alive connection went stale."""
        if self.gzip:
            body = http_body.gzip_body(body)  # here: zlib lets other threads run meanwhile
        headers = dict(self._headers)
        headers["Content-Type"] = body.content_type
        headers["Content-Length"] = str(len(body.body))  # else a body in chunks goes chunked
        headers.update(body.headers)
        if self._auth is not None:
            headers["Authorization"] = self._auth
        with self._lock:
            for attempt in (1, 2):
                if self._closing:
                    raise SinkError(f"{self.url}: the sink is closing")
                reused = self._conn is not None
                try:
                    if self._conn is None:
                        self._conn = self._connect()
                        self.stats.connected = True
                    # In chunks, each with its own `timeout` (one sendall of it all must
                    # be done within one `timeout`), and no answer awaited while the
                    # peer still reads: found by fault injection, a receiver reading
                    # 30 kB/s never got a batch of 500 kB in and nothing was delivered.
                    self._conn.request("POST", self._post_path, body=_chunks(body.body), headers=headers)
                    _await_answer(self._conn.sock, self.timeout)
                    resp = _response_within(self._conn, self.timeout)
                    data = read_answer(resp, self.timeout, MAX_ANSWER)
                    if not resp.isclosed():
                        # an answer over MAX_ANSWER (a hostile or broken receiver: 1.5 GB
                        # read whole, a security review): the rest unread, not reusable
                        resp.close()
                        self._conn.close()
                        self._conn = None
                        self.stats.connected = False
                    elif resp.will_close or not self.reuse:
                        self._conn.close()
                        self._conn = None
                    return resp.status, resp.reason, {k.lower(): v for k, v in resp.getheaders()}, data
                except (OSError, http.client.HTTPException) as exc:
                    if self._conn is not None:
                        self._conn.close()
                        self._conn = None
                    self.stats.connected = False
                    # A kept-alive connection the server closed while idle: try a fresh one
                    # at once. Safe: the server did not answer, and receivers dedupe by id.
                    # (Over TLS without a close_notify, ssl says "EOF occurred in violation
                    # of protocol".)
                    if attempt == 1 and reused and not self._closing and isinstance(
                            exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                            | ssl.SSLEOFError):
                        continue
                    raise SinkError(f"{self.url}: {describe_error(exc)}") from None
        raise AssertionError("unreachable")
