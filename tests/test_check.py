"""`shipper check`: validation errors, and probes against a real rsyslog and dead ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, require_binary
from rsyslog_util import Rsyslog


def run(*args):
    return subprocess.run([sys.executable, "-m", "shipper", "check", *args], capture_output=True,
                          text=True, timeout=60)


def _cfg(tmp_path, sinks: str) -> str:
    p = tmp_path / "c.toml"
    p.write_text(f'state_dir = "{tmp_path / "state"}"\n[sources.q]\ntype = "multilog"\n'
                 f'paths = ["{tmp_path}/log/*"]\n{sinks}')
    return str(p)


def test_invalid_config_exit_2_one_line_per_error(tmp_path):
    r = run("-c", _cfg(tmp_path, '[sinks.a]\ntype = "syslog"\nport = "abc"\nhost = "x"\n'))
    assert r.returncode == 2
    assert r.stdout.splitlines() == ['error: sinks.a.port: must be an integer 1-65535, got "abc"']



def test_lf_framing_over_tls_is_refused(tmp_path):
    # RFC 5425 4.3: octet counting over TLS; syslog-ng drops an LF-framed connection
    # while we would count the records sent
    r = run("-c", _cfg(tmp_path, '[sinks.a]\ntype = "syslog"\nprotocol = "tls"\nframing = "lf"\nhost = "x"\n'))
    assert r.returncode == 2
    assert r.stdout.splitlines() == ['error: sinks.a.framing: must be "octet-counted" with protocol "tls" '
                                     '(RFC 5425 4.3: TLS receivers read octet counts), got "lf"']

def test_probes_real_rsyslog_and_reports_dead_ends(tmp_path):
    rs = Rsyslog(tmp_path / "rs", ("tcp", "relp"))
    rs.start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts TCP, never speaks TLS
    closed = free_port()
    try:
        cfg = _cfg(tmp_path, f"""
[sinks.good]
type = "syslog"
protocol = "tcp"
host = "127.0.0.1"
port = {rs.ports["tcp"]}
[sinks.refused]
type = "syslog"
protocol = "tcp"
host = "127.0.0.1"
port = {closed}
[sinks.mute]
type = "syslog"
protocol = "tls"
host = "127.0.0.1"
port = {silent.getsockname()[1]}
connect_timeout = "1s"
[sinks.mute.tls]
handshake_timeout = "1s"
[sinks.relp_good]
type = "relp"
host = "127.0.0.1"
port = {rs.ports["relp"]}
[sinks.relp_wrong]
type = "relp"
host = "127.0.0.1"
port = {rs.ports["tcp"]}
connect_timeout = "1s"
""")
        t0 = time.monotonic()
        r = run("-c", cfg)
        assert time.monotonic() - t0 < 30
    finally:
        silent.close()
        rs.stop()
    out = r.stdout.splitlines()
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"ok: sinks.good: tcp 127.0.0.1:{rs.ports['tcp']}" in out
    # the sinks' own words (run's log says the same), not asyncio's "Connect call failed (...)"
    assert f"error: sinks.refused: tcp 127.0.0.1:{closed}: connect failed: Connection refused" in out, out
    assert any(line.startswith("error: sinks.mute:") and "handshake" in line.lower() for line in out), out
    # RELP: a real session is opened; a plain syslog port takes TCP but never answers "open"
    assert f"ok: sinks.relp_good: relp 127.0.0.1:{rs.ports['relp']}" in out, out
    assert any(line.startswith("error: sinks.relp_wrong:") and "RELP" in line for line in out), out
    assert f"warning: sources.q: {tmp_path}/log/*: matches nothing yet; followed when it appears" in out, out


def test_a_receiver_that_refuses_our_client_certificate_is_an_error(tmp_path):
    """Found by a black-box review: against an mTLS receiver (real rsyslog, TLS 1.3)
    with no cert_file, check said ok (the refusal comes a round trip after our side of
    the handshake) and run then failed, or, for GELF, counted records delivered. check
    now connects as the sink does."""
    from rsyslog_util import make_certs

    certs = make_certs(tmp_path / "certs")
    rs = Rsyslog(tmp_path / "rs", ("mtls",), certs)
    rs.start()
    try:
        client = f'cert_file = "{certs.client_cert}"\nkey_file = "{certs.client_key}"\n'
        sinks = "".join(
            f'[sinks.{name}]\ntype = "{kind}"\n{key} = "tls"\nhost = "127.0.0.1"\nport = {rs.ports["mtls"]}\n'
            f'[sinks.{name}.tls]\nca_file = "{certs.ca}"\nserver_name = "localhost"\n{extra}'
            for name, kind, key, extra in (("nocert", "syslog", "protocol", ""),
                                           ("gelfnocert", "gelf", "transport", ""),
                                           ("withcert", "syslog", "protocol", client)))
        cfg = _cfg(tmp_path, sinks)
        r = run("-c", cfg)
    finally:
        rs.stop()
    out = r.stdout.splitlines()
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"ok: sinks.withcert: tls 127.0.0.1:{rs.ports['mtls']}" in out, out
    for name in ("nocert", "gelfnocert"):
        assert any(line.startswith(f"error: sinks.{name}: tls 127.0.0.1:{rs.ports['mtls']}: ")
                   and line.endswith("right after the TLS handshake (client certificate refused?)")
                   for line in out), out


def test_http_auth_from_a_file_or_the_environment_builds(tmp_path):
    """Found by fault injection: every [sinks.X.auth] with password_file / token_env
    made `run` die at start (the secret handed over twice) while check said ok."""
    from shipper.assemble import build_sink
    from shipper.config import load_config

    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    for auth in (f'type = "basic"\nuser = "u"\npassword_file = "{pw}"',
                 f'type = "bearer"\ntoken_file = "{pw}"'):
        path = _cfg(tmp_path, '[sinks.h]\ntype = "http"\nurl = "http://127.0.0.1:9/"\n'
                              f'format = "ndjson"\n[sinks.h.auth]\n{auth}\n')
        build_sink(load_config(path).sinks["h"])
        r = run("-c", path, "--no-probe")
        assert r.returncode == 0, r.stdout


def test_state_dir_that_cannot_be_made_is_an_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    path = _cfg(tmp_path, '[sinks.o]\ntype = "stdout"\n')
    with open(path) as f:
        text = f.read().replace(str(tmp_path / "state"), str(tmp_path / "afile" / "state"))
    with open(path, "w") as f:
        f.write(text)
    r = run("-c", path, "--no-probe")
    assert r.returncode == 1 and "is not a directory" in r.stdout, r.stdout


def test_a_log_directory_this_user_cannot_read_is_named_by_check_and_run(tmp_path):
    """The common install mistake: the shipper's user cannot read qmail's log directory."""
    log = tmp_path / "log" / "qmail-send"
    log.mkdir(parents=True)
    (log / "current").write_bytes(b"@400000005a49ba341eefa7a4 new msg 1\n")
    path = _cfg(tmp_path, '[sinks.o]\ntype = "stdout"\n')
    # multilog makes a missing log directory 0700 (seen with daemontools 0.76's multilog),
    # where the README's "add the group owning them" is no help: owner and mode are named
    import os

    owner, me = ("nobody", "root") if os.geteuid() == 0 else (_user(os.geteuid()), _user(os.geteuid()))
    group = _group(65534 if os.geteuid() == 0 else os.getegid())
    mode = "0700" if os.geteuid() == 0 else "0000"
    _said_by_check_and_run_without_access(
        log, path, f"{log}: cannot read it: Permission denied (owner {owner}:{group} mode {mode}; "
        f"the shipper's user ({me}) needs r and x on it: chgrp it to a group {me} is in and chmod 750 it)")


def _user(uid: int) -> str:
    import pwd

    return pwd.getpwuid(uid).pw_name


def _group(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


@pytest.mark.parametrize("made", ["made", "missing"])
def test_a_state_dir_of_another_user_is_named_with_what_to_do(tmp_path, made):
    """Found installing as an admin: `shipper run` tried once as root leaves a root-owned
    state_dir, and the service user then got "cannot create directories in ...:
    Permission denied" from check and "cannot start: .../lock: Permission denied" from
    run, with no word of whose it is or what to do."""
    import os
    import shutil
    import signal

    state = tmp_path / "state"
    path = _cfg(tmp_path, '[sinks.o]\ntype = "stdout"\n')
    locked = state if made == "made" else tmp_path
    if made == "made":
        state.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # as in _said_by_check_and_run_without_access
        prefix = [shutil.which("setpriv") or "setpriv", "--bounding-set=-dac_override,-dac_read_search"]
        os.chown(locked, 65534, 65534)
        os.chmod(locked, 0o700 if made == "made" else 0o755)
        owner = "nobody"
    else:
        os.chmod(locked, 0o500)
        owner = _user(os.geteuid())
    me = _user(os.geteuid())
    if made == "made":
        hint = f"{state} belongs to {owner}, this runs as {me}: chown -R {me} {state}"
        said_check = f"error: {state}: cannot create directories in {state}: Permission denied " \
                     f"(state and buffers live there; {hint})"
        said_run = f"ERROR shipper: cannot start: {state}/lock: Permission denied ({hint})"
    else:
        hint = f"make it as root: install -d -m 700 -o {me} {state}"
        said_check = f"error: {state}: cannot create directories in {tmp_path}: Permission denied " \
                     f"(state and buffers live there; {hint})"
        said_run = f"ERROR shipper: cannot start: {state}: Permission denied ({hint})"
    if owner != me:  # another user's directory: run refuses it before trying (they could swap its files)
        what = state if made == "made" else f"{tmp_path}, a directory above {state},"
        said_run = f"ERROR shipper: cannot start: {what} belongs to {owner}, this runs as {me}: {owner} could "
        said_run += "put links or files in place of shipper's; " + (
            f"run shipper as {owner} (sudo -u {owner} shipper …), or, if it is to run as {me}, "
            f"chown -R {me} {state}" if made == "made" else
            f"use a directory that {owner} cannot change (install -d -m 700 -o {me})")
    try:
        r = subprocess.run([*prefix, sys.executable, "-m", "shipper", "check", "-c", path, "--no-probe"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and said_check in r.stdout.splitlines(), r.stdout
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "shipper", "run", "-c", path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=30)  # it ends at once
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)  # the process we started
                proc.wait(10)
        assert proc.returncode == 2 and said_run in err.splitlines(), err
    finally:
        os.chmod(locked, 0o755)


@pytest.mark.parametrize("configured", ["glob", "path"])
def test_a_log_directory_behind_one_this_user_cannot_read_is_not_called_missing(tmp_path, configured):
    """Found by an admin's review: with /var/log/qmail 0700 qmaill, a glob under it matched
    nothing and a path under it was "no such directory yet": a warning, exit 0, no source
    in the metrics, nothing shipped. It is an error naming the directory now."""
    log = tmp_path / "log" / "qmail-send"
    log.mkdir(parents=True)
    (log / "current").write_bytes(b"@400000005a49ba341eefa7a4 new msg 1\n")
    path = _cfg(tmp_path, '[sinks.o]\ntype = "stdout"\n')
    if configured == "glob":
        said = (f"{tmp_path}/log/*: cannot list {tmp_path}/log: Permission denied "
                "(the shipper's user needs to read it)")
    else:
        Path(path).write_text(Path(path).read_text().replace(f"{tmp_path}/log/*", str(log)))
        said = (f"{log}: cannot reach it: Permission denied (the shipper's user needs to "
                "search every directory above it)")
    _said_by_check_and_run_without_access(log.parent, path, said)


def _said_by_check_and_run_without_access(locked: Path, config: str, said: str) -> None:
    """``check`` and ``run`` as a user who cannot read ``locked`` say ``said`` as an error.
    As root, the directory goes to another owner and the commands run without the
    capabilities that let root read anything; as a user, the directory gets mode 000."""
    import os
    import shutil

    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's capabilities"
        os.chown(locked, 65534, 65534)
        os.chmod(locked, 0o700)
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    else:
        os.chmod(locked, 0)
    try:
        r = subprocess.run([*prefix, sys.executable, "-m", "shipper", "check", "-c", config, "--no-probe"],
                           capture_output=True, text=True, timeout=60)
        # an error, not a warning: run would ship nothing from it
        assert f"error: sources.q: {said}" in r.stdout.splitlines(), r.stdout
        assert r.returncode == 1
        err = _run_until(prefix, config, f"ERROR shipper.follower: {said}")
        assert f"ERROR shipper.follower: {said}" in err.splitlines(), err
    finally:
        os.chmod(locked, 0o700)


def _run_until(prefix: list[str], config: str, wanted: str, timeout: float = 30) -> str:
    """`shipper run` until its log has the line ``wanted`` (or ``timeout`` passes), then
    SIGINT: its log. Waiting for the line, not a fixed 2 s: a loaded machine took longer
    than that to start."""
    import signal
    import threading

    proc = subprocess.Popen([*prefix, sys.executable, "-m", "shipper", "run", "-c", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.rstrip("\n") == wanted:
                seen.set()
        seen.set()  # it ended

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen.wait(timeout)
    finally:
        proc.send_signal(signal.SIGINT)  # the process we started
        proc.wait(30)
        reader.join(30)
    return "".join(lines)


def test_a_glob_skips_the_files_beside_the_directories_and_names_a_parent_log(tmp_path):
    """"/var/log/qmail/*" in the Life-with-qmail layout: qmail-send logs in /var/log/qmail
    itself. The glob's plain files are not warned about; the parent log is named; a file
    sink whose directory run will make is no error."""
    log = tmp_path / "log"
    (log / "smtpd").mkdir(parents=True)
    (log / "smtpd" / "current").write_bytes(b"")
    for name in ("current", "lock", "state"):
        (log / name).write_bytes(b"")
    path = tmp_path / "c.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                    f'paths = ["{log}/*"]\n[sinks.o]\ntype = "file"\npath = "{tmp_path}/state/o.ndjson"\n')
    r = subprocess.run([sys.executable, "-m", "shipper", "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout
    assert "not a directory" not in r.stdout
    assert (f'warning: sources.q: {log} is itself a multilog directory (it holds a current) and '
            f'is not followed: add "{log}" to paths to ship it too') in r.stdout.splitlines()
    assert f"ok: sinks.o: file {tmp_path}/state/o.ndjson ({tmp_path}/state will be made)" in r.stdout


def test_check_names_a_log_without_tai64n_labels(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    (log / "current").write_bytes(b"tcpserver: status: 0/40\n")
    path = tmp_path / "c.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                    f'paths = ["{log}"]\n[sinks.o]\ntype = "stdout"\n')
    r = subprocess.run([sys.executable, "-m", "shipper", "check", "-c", str(path), "--no-probe"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert (f"warning: sources.q: {log}/current: its lines carry no TAI64N label: run multilog "
            "with 't'") in r.stdout
    (log / "current").write_bytes(b"@400000005a49ba341eefa7a4 tcpserver: status: 0/40\n")
    r = subprocess.run([sys.executable, "-m", "shipper", "check", "-c", str(path), "--no-probe"],
                       capture_output=True, text=True, timeout=60)
    assert "TAI64N" not in r.stdout and r.returncode == 0


def test_a_current_that_is_a_symbolic_link_is_named_by_check_and_run(tmp_path):
    """The ops probe: a log directory whose current is a symlink to the file multilog
    writes elsewhere. It is opened without following links, so nothing of it was ever
    shipped: check said ok, run said nothing for 5 s, then "cannot open current: Too
    many levels of symbolic links; waiting for it"."""
    log, real = tmp_path / "log", tmp_path / "real"
    log.mkdir()
    real.mkdir()
    (real / "current").write_bytes(b"@400000005a49ba341eefa7a4 tcpserver: status: 0/40\n")
    (log / "current").symlink_to(real / "current")
    path = tmp_path / "c.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                    f'paths = ["{log}"]\n[sinks.o]\ntype = "stdout"\n')
    said = (f"{log}: current is a symbolic link to {real}/current: links in a log directory are "
            "not followed; name the directory multilog writes in")
    r = run("-c", str(path), "--no-probe")
    assert r.returncode == 1, r.stdout
    assert f"error: sources.q: {said}" in r.stdout.splitlines(), r.stdout
    err = _run_until([], str(path), f"WARNING shipper.follower: {said}")
    assert f"WARNING shipper.follower: {said}" in err.splitlines(), err
    assert "Too many levels" not in err


def test_a_name_that_does_not_resolve_is_said_alike_for_every_transport(tmp_path):
    """Found installing the example files: the UDP probe said "[Errno -2] Name or service
    not known", the RELP one named the host twice ("relay.example.net:2514: relay.example.net:")."""
    host = "no-such-host.invalid"  # RFC 2606: never resolves
    r = run("-c", _cfg(tmp_path, f'[sinks.u]\ntype = "gelf"\ntransport = "udp"\nhost = "{host}"\n'
                                 f'[sinks.r]\ntype = "relp"\nhost = "{host}"\nport = 2514\n'
                                 f'[sinks.t]\ntype = "syslog"\nprotocol = "tcp"\nhost = "{host}"\nport = 514\n'))
    assert r.returncode == 1, r.stdout
    errors = [line for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, r.stdout
    for line in errors:
        _, _, why = line.partition(f"{host}:")
        why = why.split(": ", 1)[1]  # after the port
        assert why.startswith("cannot resolve the host name: ") and "Errno" not in why, line
        assert host not in why, line


def test_a_metrics_port_in_use_is_named_by_check_and_run(tmp_path):
    """Found installing as an admin: check said nothing, and run logged "[Errno 98] error
    while attempting to bind on address ('127.0.0.1', N): address already in use"."""

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    path = Path(_cfg(tmp_path, '[sinks.o]\ntype = "stdout"\n'))
    path.write_text(path.read_text() + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    said = (f"metrics.listen: cannot listen on 127.0.0.1:{port}: Address already in use: another "
            "program, or a shipper already running, listens there; set [metrics] listen")
    try:
        r = run("-c", str(path), "--no-probe")
        assert r.returncode == 0, r.stdout  # a warning: run goes on, and before a reload it is ours
        assert f"warning: {said} (run goes on without metrics)" in r.stdout.splitlines(), r.stdout
        said_run = f"ERROR shipper: {said} (going on without metrics; tried again at the next reload)"
        err = _run_until([], str(path), said_run)
        assert said_run in err.splitlines(), err
    finally:
        taken.close()


def test_a_secret_or_ca_file_this_user_cannot_read_is_named_with_its_owner(tmp_path):
    """Found installing as an admin: a token or CA file made by root with chmod 600 is
    unreadable to the shipper's user, and the error said only "permission denied"."""
    import os
    import shutil

    tok, ca = tmp_path / "token", tmp_path / "ca.pem"
    tok.write_text("s3cret\n")
    ca.write_bytes((Path(__file__).parent / "fixtures" / "tls" / "test-ca.pem").read_bytes())
    path = _cfg(tmp_path, '[sinks.h]\ntype = "http"\nurl = "https://127.0.0.1:9/"\nformat = "ndjson"\n'
                          f'[sinks.h.auth]\ntype = "bearer"\ntoken_file = "{tok}"\n'
                          f'[sinks.h.tls]\nca_file = "{ca}"\n')
    prefix: list[str] = []
    if os.geteuid() == 0:  # as in _said_by_check_and_run_without_access
        prefix = [shutil.which("setpriv") or "setpriv", "--bounding-set=-dac_override,-dac_read_search"]
        owner, mode = "nobody", "0600"
        for f in (tok, ca):
            os.chown(f, 65534, 65534)
            f.chmod(0o600)
    else:
        owner, mode = _user(os.geteuid()), "0000"
        for f in (tok, ca):
            f.chmod(0)
    me = _user(os.geteuid())
    r = subprocess.run([*prefix, sys.executable, "-m", "shipper", "check", "-c", path, "--no-probe"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stdout.splitlines() == [
        f"error: sinks.h.auth.token_file: cannot read {tok}: Permission denied (owner {owner}, "
        f"mode {mode}; shipper runs as {me}: chown {me} {tok})",
        f"error: sinks.h.tls.ca_file: cannot read {ca}: Permission denied (owner {owner}, "
        f"mode {mode}; shipper runs as {me}: chown {me} {ca})"], r.stdout


@pytest.mark.slow
def test_a_name_server_that_does_not_answer_holds_check_no_longer_than_connect_timeout(tmp_path):
    """The UDP and HTTP probes looked their names up unbounded: with a name server that
    takes queries and never answers (30 s a look-up here), check waited 30 s a sink,
    where run's sinks give up each try after connect_timeout. In a user, mount and
    network namespace of its own, with its own resolv.conf (as test_ops does)."""
    from test_ops import DNS_JAIL

    unshare = require_binary("unshare")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    cfg = _cfg(tmp_path, '[sinks.u]\ntype = "gelf"\ntransport = "udp"\nhost = "siemu.test"\n'
                         'connect_timeout = "1s"\n'
                         '[sinks.h]\ntype = "http"\nurl = "http://siemh.test:8123/"\nconnect_timeout = "1s"\n')
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    jail = subprocess.Popen(
        [unshare, "-r", "-m", "-n", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv),
         sys.executable, "-c", DNS_JAIL, str(pidfile), sys.executable, "-m", "shipper", "check", "-c", cfg],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        out, _ = jail.communicate(timeout=90)
    finally:
        if jail.poll() is None:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
            jail.wait(10)
    took = time.monotonic() - t0
    assert jail.returncode == 1, out
    errors = sorted(line for line in out.splitlines() if line.startswith("error:"))
    assert errors == [
        "error: sinks.h: http http://siemh.test:8123/: cannot resolve the host name: "
        "Temporary failure in name resolution",
        "error: sinks.u: udp siemu.test:12201: cannot resolve the host name: "
        "Temporary failure in name resolution"], out
    assert took < 15, f"{took:.1f} s (a 1 s bound a sink; 60 s before)"


def test_credentials_in_an_http_url_are_never_shown(tmp_path):
    """A fault hunt: check printed "ok: sinks.h: http http://alice:URLPASSWORD123@…?token=…",
    the password filled in from ${CH_PW} too, and the wrong-endpoint warning (logged by
    run, and so shipped) held them as well; a password in the URL skipped the warning
    about credentials over plain http://."""
    from test_sink_http import Peer

    peer = Peer()
    try:
        url = f"http://alice:${{CH_PW}}@127.0.0.1:{peer.port}/wrongpath?database=mail&password=${{CH_PW}}"
        cfg = _cfg(tmp_path, f'[sinks.h]\ntype = "http"\nurl = "{url}"\nformat = "elasticsearch"\n')
        r = subprocess.run([sys.executable, "-m", "shipper", "check", "-c", cfg], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "CH_PW": "URLPASSWORD123"})
    finally:
        peer.close()
    said = r.stdout + r.stderr
    assert "URLPASSWORD123" not in said and "alice" not in said, said
    assert f"http://127.0.0.1:{peer.port}/wrongpath?database=mail&password=***" in said, said
    assert "is no elasticsearch endpoint" in said, said
    from shipper.config import load_config_text
    far = load_config_text(Path(_cfg(tmp_path, '[sinks.h]\ntype = "http"\nurl = "http://u:p@192.0.2.10:8123/"\n'
                                              'format = "ndjson"\n')).read_text(), env={})
    assert any("credentials sent over plain http://" in w for w in far.warnings), far.warnings
    plain = load_config_text(Path(_cfg(tmp_path, '[sinks.h]\ntype = "http"\nurl = "http://SIEM.example.net:8123/"\n'
                                                'format = "ndjson"\n')).read_text(), env={})
    assert plain.warnings == []  # no credentials: no warning (a host name's case is no secret)


def test_check_names_a_state_dir_others_can_write(tmp_path):
    """run refuses a state_dir another user could change (links in place of its files:
    a security review); check says so first, in one line."""
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state").chmod(0o777)
    r = run("-c", _cfg(tmp_path, '[sinks.o]\ntype = "stdout"\n'), "--no-probe")
    assert r.returncode == 0, r.stdout  # its own: run takes the write off (tighten_own_dirs)
    tmp_path.chmod(0o777)  # the directory above it, which run cannot mend
    try:
        r = run("-c", _cfg(tmp_path, '[sinks.o]\ntype = "stdout"\n'), "--no-probe")
    finally:
        tmp_path.chmod(0o700)
    assert r.returncode == 1
    said = [ln for ln in r.stdout.splitlines() if "writable by all" in ln]
    assert said == [f"error: {tmp_path}, a directory above {tmp_path / 'state'}, is writable by all (mode "
                    f"777): another user could put links or files in place of shipper's; chmod go-w "
                    f"{tmp_path}"], r.stdout
