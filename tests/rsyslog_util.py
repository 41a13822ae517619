"""Test helpers: a private real rsyslogd, certificates made with the openssl CLI, and a
tiny RFC 5424 parser to read back what we (and rsyslog) wrote.

``Rsyslog`` runs ``rsyslogd -n -f CONF -i PIDFILE`` in a temp dir with only the input
modules a test needs (imudp, imtcp plain / TLS / mTLS, imrelp) on 127.0.0.1 free ports;
``tcp_nul`` is plain imtcp that also ends an LF frame at NUL, as syslog-ng does.
Each input writes what rsyslog parsed to ``<input>.jsonl`` (one JSON object per message:
``ts`` = %timereported:::date-rfc3339%, ``host``, ``app``, ``procid``, ``msgid``, ``sd``
= %structured-data%, ``msg``, ``raw`` = %rawmsg%), JSON-escaped by rsyslog's ``json``
property option so that any byte in a field survives the trip into the file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import free_port, require_binary

MODULE_DIR = Path("/usr/lib/x86_64-linux-gnu/rsyslog")

FIELDS_TEMPLATE = (
    '{\\"ts\\":\\"%timereported:::date-rfc3339%\\",\\"host\\":\\"%hostname:::json%\\",'
    '\\"app\\":\\"%app-name:::json%\\",\\"procid\\":\\"%procid:::json%\\",\\"msgid\\":\\"%msgid:::json%\\",'
    '\\"sd\\":\\"%structured-data:::json%\\",\\"msg\\":\\"%msg:::json%\\",\\"raw\\":\\"%rawmsg:::json%\\"}\\n'
)

INPUTS = ("udp", "tcp", "tcp_nul", "tls", "mtls", "relp", "relp_tls")


@dataclass
class Certs:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # another CA: verifying our server against it must fail
    # a server certificate signed by other_ca (the "wrong certificate" a server may present)
    other_server_cert: Path = Path()
    other_server_key: Path = Path()


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run([require_binary("openssl"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.fail(f"openssl {' '.join(args[:2])} failed: {r.stderr.strip()}")


def make_certs(directory: Path) -> Certs:
    """A CA, a server cert (SAN DNS:localhost, IP:127.0.0.1), a client cert, another CA."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "3",
                 "-subj", f"/CN=shipper test {ca}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "subjectAltName=DNS:client.test\nextendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}.test", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "3", "-extfile", f"{name}.ext", cwd=d)
    (d / "other-server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl("req", *key, "-keyout", "other-server.key", "-out", "other-server.csr", "-subj", "/CN=other", cwd=d)
    _openssl("x509", "-req", "-in", "other-server.csr", "-CA", "other-ca.pem", "-CAkey", "other-ca.key",
             "-CAcreateserial", "-out", "other-server.pem", "-days", "3", "-extfile", "other-server.ext", cwd=d)
    return Certs(d, d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
                 d / "other-ca.pem", d / "other-server.pem", d / "other-server.key")


@dataclass
class Rsyslog:
    """A private rsyslogd. ``inputs``: subset of INPUTS. Ports stay the same across restarts."""

    workdir: Path
    inputs: tuple[str, ...]
    certs: Certs | None = None
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    server_cert: tuple[Path, Path] | None = None  # (cert, key) instead of certs.server_*
    # the global maxMessageSize; None: rsyslog's default (8096), as a receiver set up as shipped
    max_message_size: str | None = "64k"

    def use_server_cert(self, cert: Path, key: Path) -> None:
        """Present another server certificate from the next start on."""
        self.server_cert = (cert, key)
        self.conf.write_text(self._config())

    def __post_init__(self) -> None:
        self.binary = require_binary("rsyslogd")
        for mod in self._modules():
            if not (MODULE_DIR / f"{mod}.so").exists():
                pytest.fail(f"rsyslog module {mod} not found in {MODULE_DIR}: install rsyslog"
                            f"{'-relp' if mod == 'imrelp' else ''}{'-gnutls' if mod == 'lmnsd_gtls' else ''}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in self.inputs:
            kind = socket.SOCK_DGRAM if name == "udp" else socket.SOCK_STREAM
            self.ports[name] = free_port(kind)
        self.conf = self.workdir / "rsyslog.conf"
        self.pidfile = self.workdir / "rsyslogd.pid"
        self.conf.write_text(self._config())

    def _modules(self) -> list[str]:
        mods = []
        if "udp" in self.inputs:
            mods.append("imudp")
        if {"tcp", "tcp_nul", "tls", "mtls"} & set(self.inputs):
            mods.append("imtcp")
        if {"tls", "mtls"} & set(self.inputs):
            mods.append("lmnsd_gtls")
        if {"relp", "relp_tls"} & set(self.inputs):
            mods.append("imrelp")
        return mods

    def _config(self) -> str:
        w = self.workdir
        lines = []
        glob = [f'workDirectory="{w}"', 'parser.escapeControlCharactersOnReceive="off"']
        if self.max_message_size is not None:
            glob.append(f'maxMessageSize="{self.max_message_size}"')
        if self.certs is not None:
            c = self.certs
            cert, key = self.server_cert or (c.server_cert, c.server_key)
            glob += ['DefaultNetstreamDriver="gtls"', f'DefaultNetstreamDriverCAFile="{c.ca}"',
                     f'DefaultNetstreamDriverCertFile="{cert}"', f'DefaultNetstreamDriverKeyFile="{key}"']
        lines.append(f"global({' '.join(glob)})")
        # direct queues: a message is in the output file before the input acknowledges it
        # (RELP) or reads the next one, so killing rsyslogd loses nothing it has taken
        lines.append('main_queue(queue.type="direct")')
        lines.append(f'template(name="fields" type="string" string="{FIELDS_TEMPLATE}")')
        if "udp" in self.inputs:
            lines.append('module(load="imudp")')
            lines.append(f'input(type="imudp" port="{self.ports["udp"]}" address="127.0.0.1" ruleset="r_udp")')
        if {"tcp", "tcp_nul", "tls", "mtls"} & set(self.inputs):
            lines.append('module(load="imtcp" maxSessions="100")')
        if "tcp" in self.inputs:
            lines.append(f'input(type="imtcp" port="{self.ports["tcp"]}" address="127.0.0.1" ruleset="r_tcp")')
        if "tcp_nul" in self.inputs:
            lines.append(f'input(type="imtcp" port="{self.ports["tcp_nul"]}" address="127.0.0.1" '
                         'ruleset="r_tcp_nul" addtlFrameDelimiter="0")')
        if "tls" in self.inputs:
            lines.append(f'input(type="imtcp" port="{self.ports["tls"]}" address="127.0.0.1" ruleset="r_tls" '
                         'streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")')
        if "mtls" in self.inputs:
            lines.append(f'input(type="imtcp" port="{self.ports["mtls"]}" address="127.0.0.1" ruleset="r_mtls" '
                         'streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")')
        if {"relp", "relp_tls"} & set(self.inputs):
            lines.append('module(load="imrelp")')
        if "relp" in self.inputs:
            lines.append(f'input(type="imrelp" port="{self.ports["relp"]}" address="127.0.0.1" ruleset="r_relp")')
        if "relp_tls" in self.inputs:
            c = self.certs
            assert c is not None, "relp_tls needs certs"
            cert, key = self.server_cert or (c.server_cert, c.server_key)
            lines.append(f'input(type="imrelp" port="{self.ports["relp_tls"]}" address="127.0.0.1" '
                         f'ruleset="r_relp_tls" tls="on" tls.caCert="{c.ca}" tls.myCert="{cert}" '
                         f'tls.myPrivKey="{key}" tls.authMode="certvalid")')
        for name in self.inputs:
            lines.append(f'ruleset(name="r_{name}") {{ action(type="omfile" file="{self.out(name)}" '
                         'template="fields") }')
        return "\n".join(lines) + "\n"

    def out(self, name: str) -> Path:
        return self.workdir / f"{name}.jsonl"

    # -- process control (only the rsyslogd we started, by its PID)

    def start(self, timeout: float = 15.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.pidfile.unlink(missing_ok=True)
        log = open(self.workdir / "rsyslogd.stderr", "ab")  # noqa: SIM115 — handed to the child
        self.proc = subprocess.Popen([self.binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                     stdout=log, stderr=log, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout
        tcp_ports = [p for n, p in self.ports.items() if n != "udp"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"rsyslogd exited with {self.proc.returncode}: {self.stderr()[-2000:]}")
            if all(_port_open(p) for p in tcp_ports) and (tcp_ports or self.pidfile.exists()):
                if not tcp_ports:
                    time.sleep(0.3)  # UDP has no handshake to poll: the pidfile plus a moment
                return
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"rsyslogd did not open its ports {self.ports} within {timeout}s: {self.stderr()[-2000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stderr(self) -> str:
        p = self.workdir / "rsyslogd.stderr"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- output

    def messages(self, name: str) -> list[dict[str, str]]:
        p = self.out(name)
        if not p.exists():
            return []
        out = []
        # only complete lines: rsyslog may be half-way through writing the last one
        for line in p.read_bytes().split(b"\n")[:-1]:
            if line:
                out.append(json.loads(line))
        return out

    def wait_messages(self, name: str, count: int, timeout: float = 10.0) -> list[dict[str, str]]:
        """Poll (bounded) until at least ``count`` messages are in the file; then a short
        settle so that extra (duplicate) messages show up too."""
        deadline = time.monotonic() + timeout
        msgs = self.messages(name)
        while len(msgs) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            msgs = self.messages(name)
        time.sleep(0.2)
        return self.messages(name)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# -- a tiny RFC 5424 reader (test side, written from the RFC's ABNF)

_HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


def parse_sd(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """STRUCTURED-DATA → [(SD-ID, [(name, value), ...]), ...]; ValueError if malformed.

    Unescapes ``\\"``, ``\\\\`` and ``\\]``; any other backslash is kept (RFC 5424 6.3.3).
    """
    out: list[tuple[str, list[tuple[str, str]]]] = []
    i, n = 0, len(text)
    if text == "-":
        return out
    while i < n:
        if text[i] != "[":
            raise ValueError(f"expected [ at {i}: {text[i:i + 20]!r}")
        j = i + 1
        while j < n and text[j] not in " ]":
            j += 1
        sd_id = text[i + 1:j]
        params: list[tuple[str, str]] = []
        while j < n and text[j] == " ":
            k = text.index("=", j + 1)
            name = text[j + 1:k]
            if text[k + 1] != '"':
                raise ValueError(f"expected quote after {name}=")
            k += 2
            value = []
            while True:
                c = text[k]
                if c == "\\" and k + 1 < n and text[k + 1] in '"\\]':
                    value.append(text[k + 1])
                    k += 2
                elif c == '"':
                    k += 1
                    break
                else:
                    value.append(c)
                    k += 1
            params.append((name, "".join(value)))
            j = k
        if j >= n or text[j] != "]":
            raise ValueError(f"SD element {sd_id} not closed")
        out.append((sd_id, params))
        i = j + 1
    return out


def split_message(data: bytes) -> tuple[dict[str, str | int], str, bytes]:
    """An RFC 5424 message → (header fields, STRUCTURED-DATA text, MSG bytes)."""
    m = _HEADER.match(data)
    if m is None:
        raise ValueError(f"not an RFC 5424 header: {data[:80]!r}")
    head = {"pri": int(m[1]), "ts": m[2].decode(), "host": m[3].decode(), "app": m[4].decode(),
            "procid": m[5].decode(), "msgid": m[6].decode()}
    rest = data[m.end():].decode("utf-8")
    if rest.startswith("-"):
        sd_end = 1
    else:
        # walk the SD elements honouring escapes to find where MSG starts
        k, depth_in_value = 0, False
        while k < len(rest):
            c = rest[k]
            if depth_in_value:
                if c == "\\":
                    k += 2
                    continue
                if c == '"':
                    depth_in_value = False
            elif c == '"':
                depth_in_value = True
            elif c == "]" and (k + 1 == len(rest) or rest[k + 1] != "["):
                k += 1
                break
            k += 1
        sd_end = k
    sd = rest[:sd_end]
    msg = rest[sd_end + 1:].encode("utf-8") if len(rest) > sd_end else b""
    return head, sd, msg
