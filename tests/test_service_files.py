"""The daemontools run scripts and the systemd unit: valid, hardened, and saying what we mean.

`systemd-analyze verify` (Debian package `systemd`) checks the unit without
starting it; it also insists that ExecStart's program exists, so the test
verifies a copy whose ExecStart points at a stand-in script, after asserting
the shipped ExecStart line itself.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "shipper.service"
RUN = ROOT / "service" / "shipper" / "run"
LOG_RUN = ROOT / "service" / "shipper" / "log" / "run"
EXEC_START = "/usr/local/bin/shipper run -c /etc/shipper/shipper.toml"


def unit_directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    analyze = require_binary("systemd-analyze")
    return subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


def stand_in_unit(tmp_path: Path, text: str) -> Path:
    fake = tmp_path / "shipper"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    unit = tmp_path / "shipper.service"
    unit.write_text(text.replace(f"ExecStart={EXEC_START.split()[0]} ", f"ExecStart={fake} "))
    return unit


def test_unit_directives():
    d = unit_directives(UNIT.read_text())
    expected = {
        "Service.Type": ["notify"], "Service.NotifyAccess": ["main"],
        "Service.ExecStart": [EXEC_START], "Service.ExecReload": ["/bin/kill -HUP $MAINPID"],
        "Service.Restart": ["on-failure"], "Service.WatchdogSec": ["30"],
        # a configuration error (exit 2) is not restarted every 2 s for ever (a deployment hunt)
        "Service.RestartPreventExitStatus": ["2"],
        "Service.User": ["shipper"], "Service.StateDirectory": ["shipper"],
        "Service.ProtectSystem": ["strict"], "Service.ReadOnlyPaths": ["-/var/log/qmail"],
        "Service.ProtectHome": ["yes"], "Service.PrivateTmp": ["yes"],
        "Service.NoNewPrivileges": ["yes"], "Service.CapabilityBoundingSet": [""],
        "Service.AmbientCapabilities": [""],
        "Service.RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "Service.SystemCallFilter": ["@system-service"], "Install.WantedBy": ["multi-user.target"],
    }
    for key, value in expected.items():
        assert d.get(key) == value, key
    assert d["Service.SupplementaryGroups"]
    # SIGTERM drains for drain_timeout (10 s default): systemd must wait longer before SIGKILL
    assert int(d["Service.TimeoutStopSec"][0]) > 10


def test_systemd_analyze_verify_passes(tmp_path: Path):
    unit = stand_in_unit(tmp_path, UNIT.read_text())
    r = verify(unit, tmp_path)
    assert r.returncode == 0, r.stderr
    # Unknown or misspelt directives are only warnings for systemd: none may appear.
    complaints = [ln for ln in (r.stdout + r.stderr).splitlines() if "shipper.service" in ln]
    assert complaints == []


def test_systemd_analyze_verify_catches_a_bad_directive(tmp_path: Path):
    """The check above is meaningful: the same run flags a misspelt directive."""
    text = UNIT.read_text().replace("ProtectHome=yes", "ProtectHom=yes")
    unit = stand_in_unit(tmp_path, text)
    r = verify(unit, tmp_path)
    assert re.search(r"shipper\.service:\d+: Unknown key( name)? 'ProtectHom'", r.stdout + r.stderr), \
        r.stdout + r.stderr


def test_unit_exposure_is_low(tmp_path: Path):
    analyze = require_binary("systemd-analyze")
    unit = stand_in_unit(tmp_path, UNIT.read_text())
    r = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    m = re.search(r"Overall exposure level for shipper\.service: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0  # systemd rates <= 2.0 "OK"; the default unit is ~9.6


def test_run_scripts_are_valid_sh():
    sh = require_binary("sh")
    for script in (RUN, LOG_RUN):
        assert script.stat().st_mode & 0o111 == 0o111, f"{script} must be executable"
        r = subprocess.run([sh, "-n", str(script)], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        assert script.read_text().startswith("#!/bin/sh\n")


def test_run_scripts_commands():
    run_cmds = [ln for ln in RUN.read_text().splitlines() if ln and not ln.startswith("#")]
    drop = "setpriv --reuid=shipper --regid=shipper --init-groups"
    check = f"$envdir {drop} shipper check -c /etc/shipper/shipper.toml --no-probe"
    assert run_cmds == ["exec 2>&1", "umask 077", "envdir=", '[ -d ./env ] && envdir="envdir ./env"',
                        f"{check} >/dev/null 2>&1", "if [ $? -ge 2 ]; then", f"  {check}",
                        "  sleep 60", "  exit 2", "fi",
                        f"exec $envdir {drop} shipper run -c /etc/shipper/shipper.toml"]
    log_cmds = [ln for ln in LOG_RUN.read_text().splitlines() if ln and not ln.startswith("#")]
    assert log_cmds == ["exec setuidgid shiplog multilog t s1000000 n20 ./main"]
    # the programs named are the real daemontools (and util-linux) ones
    for prog in ("envdir", "setuidgid", "multilog", "setpriv"):
        require_binary(prog)


def test_run_script_gives_the_shipper_its_groups():
    """Found by an admin's review: daemontools' setuidgid keeps the primary group only,
    so the README's `useradd -G adm shipper` (or a qmail group for 0750 log directories)
    did nothing under supervise: the log directories were unreadable. The shipped
    command, run for a user of this machine in the shipper's place, gives all its groups."""
    import grp
    import pwd

    line = RUN.read_text().splitlines()[-1].replace("$envdir ", "")
    assert line.startswith("exec setpriv ") and line.endswith(" shipper run -c /etc/shipper/shipper.toml")
    if os.geteuid() != 0:
        return  # changing users needs root: the command's words are checked above
    members = [(m, g.gr_gid) for g in grp.getgrall() for m in g.gr_mem if m != "root"]
    user, extra = members[0] if members else ("nobody", None)
    pw = pwd.getpwnam(user)
    primary = grp.getgrgid(pw.pw_gid).gr_name
    cmd = line.removeprefix("exec ").replace("shipper run -c /etc/shipper/shipper.toml", "id -G")
    cmd = cmd.replace("--reuid=shipper", f"--reuid={user}").replace("--regid=shipper", f"--regid={primary}")
    r = subprocess.run(cmd.split(), capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    groups = {int(g) for g in r.stdout.split()}
    assert pw.pw_gid in groups
    if extra is not None:
        assert extra in groups, (user, r.stdout)
        old = subprocess.run([require_binary("setuidgid"), user, "id", "-G"], capture_output=True,
                             text=True, timeout=10)
        assert extra not in {int(g) for g in old.stdout.split()}  # why setuidgid went


def test_log_run_script_really_logs(tmp_path: Path):
    """The log script's multilog arguments work with the real multilog (as the current user)."""
    multilog = require_binary("multilog")
    script = LOG_RUN.read_text().replace("exec setuidgid shiplog multilog", f"exec {multilog}")
    (tmp_path / "run").write_text(script)
    r = subprocess.run(["sh", str(tmp_path / "run")], input=b"INFO shipper: started\n",
                       cwd=tmp_path, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    line = (tmp_path / "main" / "current").read_text()
    assert re.fullmatch(r"@[0-9a-f]{24} INFO shipper: started\n", line)


def test_the_readme_config_example_loads(tmp_path: Path):
    """Found by an admin's review: the README's "small configuration", copied as it
    stands, was refused (TLS options without protocol = "tls")."""
    from shipper.config import load_config_text

    readme = (ROOT / "README.md").read_text()
    start = readme.index("A small configuration")
    block = readme[readme.index("```toml\n", start) + 8:readme.index("```\n", readme.index("```toml\n", start) + 8)]
    ca = Path(__file__).parent / "fixtures" / "tls" / "test-ca.pem"
    text = block.replace("/etc/shipper/siem-ca.pem", str(ca)).replace("/var/lib/shipper", str(tmp_path / "state"))
    cfg = load_config_text(text, "README.md")
    sink = cfg.sinks["siem"]
    assert (sink.type, sink.protocol, sink.host, sink.port) == ("relp", "tls", "siem.example.net", 2514)
    assert cfg.sources["qmail"].paths == ["/var/log/qmail/*"]


def test_pip_installs_the_configs_service_and_unit():
    """From an admin's review: pip installed the program but none of conf/, service/ or
    systemd/, so a pip user had no config to start from. pyproject's data-files put them
    in <venv>/share/shipper (checked here: every entry names files that exist, all of
    them; the run scripts keep their mode in the wheel, as `pip wheel .` shows)."""
    import glob
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {os.path.relpath(f, ROOT) for pats in data.values() for pat in pats
               for f in glob.glob(str(ROOT / pat))}
    for pat in (p for pats in data.values() for p in pats):
        assert glob.glob(str(ROOT / pat)), f"{pat} names no file"
    wanted = {"conf/shipper.toml", "conf/clickhouse.sql", "service/shipper/run", "service/shipper/log/run",
              "systemd/shipper.service", *(os.path.relpath(f, ROOT) for f in glob.glob(str(ROOT / "conf/examples/*")))}
    assert shipped == wanted
    for target, pats in data.items():  # each file lands beside its fellows, as in the tree
        for pat in pats:
            assert target == "share/shipper/" + os.path.dirname(pat), (target, pat)


def test_the_readme_daemontools_install_lines_work_on_a_fresh_debian(tmp_path: Path):
    """Found following the README on Debian: nothing makes /var/service, so its
    `cp -r service/shipper /var/service/shipper` failed ("No such file or directory")
    and every line after it. The README's lines up to the log directory run here with
    /var rebased into a temp dir, sudo and the users left out."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Under daemontools")
    block = readme[readme.index("```sh\n", start) + 6:readme.index("```\n", readme.index("```sh\n", start) + 6)]
    root = tmp_path / "root"
    (root / "var").mkdir(parents=True)  # what Debian has; no /var/service
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    lines = [line for line in lines if "/var/service" in line and "ln -s" not in line]
    assert len(lines) == 3, block  # copy, env/, log/main
    for line in lines:
        cmd = re.sub(r"\bsudo ", "", line).replace("-o shiplog ", "").replace("/var/", f"{root}/var/")
        r = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{line}: {r.stderr}"
    svc = root / "var" / "service" / "shipper"
    assert os.access(svc / "run", os.X_OK) and os.access(svc / "log" / "run", os.X_OK)
    assert (svc / "env").is_dir() and (svc / "log" / "main").is_dir()


def test_run_script_waits_on_an_invalid_configuration(tmp_path: Path):
    """A deployment hunt: under supervise an invalid configuration was tried once a
    second, one error line each (14 MB a day, the log's older lines pushed out within
    a day and a half). The run script says the error once and waits before exiting 2."""
    import shutil
    import sys
    import time

    service = tmp_path / "shipper"
    shutil.copytree(ROOT / "service" / "shipper", service)
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                   f'paths = ["{tmp_path}/log"]\n[sinks.s]\ntype = "syslog"\nhost = "127.0.0.1"\n'
                   'protocol = "tpc"\n')
    run = RUN.read_text().replace("setpriv --reuid=shipper --regid=shipper --init-groups ", "").replace(
        "shipper check -c /etc/shipper/shipper.toml", f"{sys.executable} -m shipper check -c {cfg}").replace(
        "sleep 60", "sleep 1")
    (service / "run").write_text(run)
    t0 = time.monotonic()
    r = subprocess.run([require_binary("sh"), "./run"], cwd=service, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and time.monotonic() - t0 >= 1
    assert 'sinks.s.protocol: must be one of udp, tcp, tls, got "tpc"' in r.stdout, r.stdout + r.stderr
