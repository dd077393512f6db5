"""A real rspamd (``/usr/bin/rspamd``, Debian's package) on loopback for tests and benchmarks.

The stock configuration in ``/etc/rspamd`` is used as it is: ``rspamd.conf`` here includes its
``common.conf`` (modules, scores, actions), and ``--var LOCAL_CONFDIR=<workdir>`` makes the stock
files read this launcher's ``local.d`` overrides. What they change:

- one worker, the "normal" one (``/checkv2``), on ``127.0.0.1:<free port>``: no controller,
  proxy or fuzzy worker;
- the modules that need Redis, or servers on the internet (DNS lists, fuzzy hashes, maps
  fetched over HTTPS), are off. Without ``nameserver`` the modules that look anything up in
  DNS during a scan (SPF, DKIM, DMARC, ARC, hfilter, and once_received, which looks up the PTR
  of a client whose ``Hostname`` was not passed: every scan would wait out the DNS timeout) are
  off as well, and rspamd's resolver points at a loopback port where nothing answers, so nothing
  leaves the machine (the background fetch of maps.rspamd.com's lists times out there); with
  ``nameserver`` (e.g. :class:`mailstack.dnsserver.AuthoritativeDns`) they run against it;
- test rules make each action deterministic: a Subject containing one of :data:`MARKERS`' values
  gets that action (reject and add header by score, the others forced).

rspamd compiles its regular expressions and the public-suffix list with hyperscan at start
(about 25 s on this machine); the compiled databases are kept in :data:`HS_CACHE`, shared by
every run, so later starts take about a second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mailstack.ports import free_port, http_ok, wait_until
from mailstack.processes import stop_process
from mailstack.running import Running

HOST = "127.0.0.1"
HS_CACHE = Path(tempfile.gettempdir()) / "mailstack-rspamd-hs-cache"
#: rspamd's action -> the Subject marker that produces it.
MARKERS = {
    "reject": "MAILDROP-TEST-REJECT",
    "soft reject": "MAILDROP-TEST-SOFT",
    "rewrite subject": "MAILDROP-TEST-REWRITE",
    "add header": "MAILDROP-TEST-TAG",
    "greylist": "MAILDROP-TEST-GREY",
    "discard": "MAILDROP-TEST-DISCARD",
}
#: Action thresholds written out (rspamd's defaults today), so that the scores below stay apart.
THRESHOLDS = {"reject": 15, "add_header": 6, "greylist": 4}
_SCORED = {"reject": 100.0, "add header": 8.0}
_FORCED = ("soft reject", "rewrite subject", "greylist", "discard")
#: Modules that need Redis or servers on the internet.
_OFF_ALWAYS = (
    *("asn", "bimi", "dcc", "emails", "fuzzy_check", "greylist", "history_redis", "mx_check"),
    *("neural", "p0f", "phishing", "ratelimit", "rbl", "replies", "reputation", "rspamd_update"),
    "url_redirector",
)
#: Modules that need DNS: on only with a nameserver of the test's own.
_NEED_DNS = ("arc", "dkim", "dmarc", "hfilter", "once_received", "spf")
START_TIMEOUT = 120.0  # the first start compiles the hyperscan databases


def _symbol(action: str) -> str:
    return MARKERS[action].replace("-", "_")


def _regexp_rules() -> str:
    """One ``regexp`` rule per marker: the symbol, with a score that reaches the action."""
    return "".join(
        f'{_symbol(action)} {{ re = "Subject=/{marker}/H"; score = {_SCORED.get(action, 0.0)}; }}\n'
        for action, marker in MARKERS.items()
    )


def _forced_actions() -> str:
    rules = "".join(
        f'  {_symbol(action)} {{ action = "{action}"; expression = "{_symbol(action)}"; }}\n'
        for action in _FORCED
    )
    return "rules {\n" + rules + "}\n"


class Rspamd(Running):
    """rspamd's normal worker on ``127.0.0.1:<free port>``; scan at :attr:`url` ``/checkv2``."""

    def __init__(self, workdir: Path, nameserver: str | None = None) -> None:
        self.workdir = workdir
        self.nameserver = nameserver
        self.port = free_port(HOST)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL, as ``RSPAMD_URL``."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """rspamd's main process, while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def log_file(self) -> Path:
        return self.workdir / "rspamd.log"

    def start(self) -> None:
        self._write_config()
        rspamd = shutil.which("rspamd") or "/usr/bin/rspamd"
        user = ["-u", "root", "-g", "root"] if os.geteuid() == 0 else []
        variables = {
            "LOCAL_CONFDIR": self.workdir,
            "DBDIR": self.workdir / "db",
            "RUNDIR": self.workdir,
            "LOGDIR": self.workdir,
        }
        args = [arg for name, path in variables.items() for arg in ("--var", f"{name}={path}")]
        with (self.workdir / "rspamd.out").open("ab") as out:  # the child keeps its own copy
            self._process = subprocess.Popen(
                [rspamd, "-f", *user, "-c", str(self.workdir / "rspamd.conf"), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._ready, START_TIMEOUT, "rspamd")
        except TimeoutError:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"rspamd exited ({self._process.returncode}): see {self.log_file}")
        return http_ok(self.url + "/ping")

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def logs(self, name: str = "rspamd") -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _write_config(self) -> None:
        local = self.workdir / "local.d"
        local.mkdir(parents=True, exist_ok=True)
        (self.workdir / "db").mkdir(exist_ok=True)
        HS_CACHE.mkdir(exist_ok=True)
        off = _OFF_ALWAYS + (() if self.nameserver else _NEED_DNS)
        for module in off:
            (local / f"{module}.conf").write_text("enabled = false;\n")
        (local / "regexp.conf").write_text(_regexp_rules())
        (local / "force_actions.conf").write_text(_forced_actions())
        (local / "actions.conf").write_text(
            "".join(f"{name} = {score};\n" for name, score in THRESHOLDS.items())
            + 'discard { flags = ["no_threshold"]; }\n'  # forced only (rspamd knows no score)
        )
        # Nothing listens on the port of our own: without a nameserver a lookup fails at once.
        nameserver = self.nameserver or f"{HOST}:{free_port(HOST)}"
        override = self.workdir / "override.d"
        override.mkdir(exist_ok=True)
        (override / "options.inc").write_text(
            f'hs_cache_dir = "{HS_CACHE}";\n'
            f'dns {{ nameserver = ["{nameserver}"]; timeout = 1s; retransmits = 1; }}\n'
        )
        (self.workdir / "rspamd.conf").write_text(
            '.include "$CONFDIR/common.conf"\n'
            "options {\n"
            f'    pidfile = "{self.workdir}/rspamd.pid";\n'
            '    .include "$CONFDIR/options.inc"\n'
            '    .include(priority=10) "$LOCAL_CONFDIR/override.d/options.inc"\n'
            "}\n"
            f'logging {{ type = "file"; filename = "{self.log_file}"; level = "info"; }}\n'
            f'worker "normal" {{ bind_socket = "{HOST}:{self.port}"; count = 1; }}\n'
        )
