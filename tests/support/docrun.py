"""Run the examples of README.md and docs/*.md, so a page that stops matching the program fails.

A page's fenced blocks are found by `find_fences` and governed by an HTML comment on the line
right before the fence (invisible when the page is rendered):

    <!-- doc: run scenario=tutorial -->          console block: run it in the named scenario
    <!-- doc: run scenario=tutorial after=boot --> ... run it right after the block id=boot
    <!-- doc: config -->                          yaml block: a config file, checked (the default)
    <!-- doc: config root plugins=shop,mailer --> merged into the root file; stub plugins exist
    <!-- doc: manifest -->                        yaml block: a plugin manifest
    <!-- doc: plugin -->                          shell block: a plugin's entrypoint, run
    <!-- doc: skip (why this block cannot run) -->

Console blocks (`console`, or `sh`/`shell`/`bash`/untagged blocks whose lines start with a
command) run in one bash session per scenario (`ShellSession`): `$ ` lines are commands, the
lines after one are its expected output, compared by `OutputPattern` with `...` as a
wildcard (a line of its own: any lines) and the variable parts of real output (ids, times,
pids) recognised by `VOLATILES`. A block without `$ ` prompts is a script: each line is a
command, checked for its exit status. Every command must exit 0, unless the page says
otherwise: `$ cmd   # exits 1`, a block's `status=N`, or a next command `echo $?` that shows
it. A bare `ductile system start --config DIR` ("in another terminal") is started in the
background and waited for until it serves.

The test module (tests/test_docs_examples.py) declares each scenario: its setup, and the
substitutions that rewrite what must differ in a test (ports, paths), in one place.
"""

from __future__ import annotations

import os
import re
import secrets
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path


# --------------------------------------------------------------------------- errors


class DocFormatError(ValueError):
    """A page's marker comment or block cannot be understood (a mistake in the docs' markup)."""


class ExampleFailed(AssertionError):
    """An example did not behave as its page says."""


# --------------------------------------------------------------------------- fences

_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*doc:(?P<body>.*?)-->\s*$")


@dataclass(frozen=True)
class Fence:
    """One fenced code block: `line` is the 1-based line of its opening fence."""

    line: int
    info: str
    body: str
    closed: bool
    marker: str | None = None  # the text of a `<!-- doc: ... -->` on the line before
    marker_line: int | None = None

    @property
    def lang(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""

    @property
    def body_line(self) -> int:
        """The line number of the block's first body line."""
        return self.line + 1


def find_fences(text: str) -> list[Fence]:
    """Every fenced block of a markdown text, in order, as CommonMark reads top-level fences:
    an opening fence of 3+ backticks or tildes indented at most 3 spaces, closed by a fence of
    the same character at least as long (or the end of the text). A backtick fence's info
    string holds no backtick. Never raises."""
    lines = text.split("\n")
    fences: list[Fence] = []
    i = 0
    while i < len(lines):
        opened = _OPEN.match(lines[i])
        if opened is None or (opened["fence"][0] == "`" and "`" in opened["info"]):
            i += 1
            continue
        indent, fence = len(opened["indent"]), opened["fence"]
        closer = re.compile(r"^ {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closer.match(lines[j]):
            body.append(_dedent(lines[j], indent))
            j += 1
        marker, marker_line = None, None
        if i > 0 and (found := _MARKER.match(lines[i - 1])) is not None:
            marker, marker_line = found["body"].strip(), i
        fences.append(Fence(line=i + 1, info=opened["info"].strip(), body="\n".join(body),
                            closed=j < len(lines), marker=marker, marker_line=marker_line))
        i = j + 1
    return fences


def find_markers(text: str) -> list[int]:
    """The 1-based lines of every `<!-- doc: ... -->` marker, to find ones that govern no
    block (a marker must sit on the line right before its fence)."""
    return [n for n, line in enumerate(text.split("\n"), 1) if _MARKER.match(line)]


def _dedent(line: str, indent: int) -> str:
    strip = len(line) - len(line.lstrip(" "))
    return line[min(strip, indent):]


# --------------------------------------------------------------------------- markers


@dataclass(frozen=True)
class Directive:
    """A parsed marker: `kind` is run, config, manifest, plugin or skip."""

    kind: str
    words: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""


_KINDS = {
    "run": {"scenario", "id", "after", "status"},
    "config": {"plugins", "root", "check", "wrap", "scenario", "file", "id"},
    "manifest": set(),
    "plugin": set(),
    "skip": set(),
}
_CONFIG_WORDS = {"root", "files"}


def parse_directive(text: str) -> Directive:
    """`run scenario=NAME [id=ID] [after=ID] [status=N]`, `config [root|files] [plugins=a,b]
    [root=PATH] [check=load] [wrap=NAME] [scenario=NAME file=PATH [id=ID]]`, `manifest`,
    `plugin`, or `skip (reason)`."""
    kind, _, rest = text.strip().partition(" ")
    if kind not in _KINDS:
        raise DocFormatError(f"unknown doc marker {kind!r}: use one of {', '.join(_KINDS)}")
    if kind == "skip":
        reason = rest.strip()
        if not (reason.startswith("(") and reason.endswith(")") and reason[1:-1].strip()):
            raise DocFormatError("a skip marker needs a reason: <!-- doc: skip (why) -->")
        return Directive("skip", reason=reason[1:-1].strip())
    words: list[str] = []
    options: dict[str, str] = {}
    reason = ""
    if "(" in rest:
        rest, _, why = rest.partition("(")
        reason = why.rstrip().removesuffix(")").strip()
    for item in rest.split():
        key, eq, value = item.partition("=")
        if not eq:
            if kind != "config" or key not in _CONFIG_WORDS:
                raise DocFormatError(f"doc marker {kind!r}: unknown word {key!r}")
            words.append(key)
        elif key not in _KINDS[kind] or not value:
            raise DocFormatError(f"doc marker {kind!r}: unknown option {item!r} "
                                 f"(known: {', '.join(sorted(_KINDS[kind])) or 'none'})")
        else:
            options[key] = value
    if kind == "run" and "scenario" not in options:
        raise DocFormatError("a run marker names its scenario: <!-- doc: run scenario=NAME -->")
    return Directive(kind, tuple(words), options, reason)


# --------------------------------------------------------------------------- doc blocks

#: Words that make an untagged or shell block a console block that must be run or skipped.
COMMAND_WORDS = frozenset({"ductile", "curl", "make", "systemctl", "journalctl", "sudo",
                           "printf", "export", "python3", "sed", "kill", "tail", "cat"})
SHELL_LANGS = frozenset({"sh", "shell", "bash", "console"})
YAML_LANGS = frozenset({"yaml", "yml"})


@dataclass(frozen=True)
class DocBlock:
    """A fenced block of one page, with what its marker says to do with it."""

    page: str
    fence: Fence
    directive: Directive | None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.fence.line}"

    @property
    def kind(self) -> str:
        """`console`, `yaml`, `json` or `other` (not checked)."""
        lang = self.fence.lang
        if lang in YAML_LANGS:
            return "yaml"
        if lang == "json":
            return "json"
        if lang in SHELL_LANGS or (lang == "" and _looks_like_commands(self.fence.body)):
            return "console"
        return "other"


def _looks_like_commands(body: str) -> bool:
    for line in body.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        return stripped.startswith("$ ") or stripped.split()[0] in COMMAND_WORDS
    return False


def read_blocks(page: Path, display: str) -> list[DocBlock]:
    """Every fenced block of `page`; raises DocFormatError for a marker that cannot be parsed
    or governs no block."""
    text = page.read_text(encoding="utf-8")
    fences = find_fences(text)
    governed = {f.marker_line for f in fences if f.marker_line is not None}
    inside = {n for f in fences for n in range(f.line, f.line + f.body.count("\n") + 3)}
    for line in find_markers(text):
        if line not in governed and line not in inside:  # a page may show a marker as code
            raise DocFormatError(f"{display}:{line}: a doc marker must be on the line right "
                                 "before the fence it governs")
    blocks = []
    for fence in fences:
        try:
            directive = parse_directive(fence.marker) if fence.marker is not None else None
        except DocFormatError as exc:
            raise DocFormatError(f"{display}:{fence.marker_line}: {exc}") from None
        blocks.append(DocBlock(display, fence, directive))
    return blocks


# --------------------------------------------------------------------------- console text


@dataclass(frozen=True)
class Command:
    """One command of a console block: `expected` is None when the page shows no output."""

    text: str
    line: int
    expected: tuple[str, ...] | None


def parse_console(body: str, first_line: int) -> list[Command]:
    """Split a console block into commands. With `$ ` prompts, the lines after a command are
    its output; without, every line (joined across trailing backslashes) is a command, and
    blank and comment lines are dropped."""
    lines = body.split("\n")
    prompted = any(line.startswith("$ ") or line == "$" for line in lines)
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line, number = lines[i], first_line + i
        if prompted and not (line.startswith("$ ") or line == "$"):
            i += 1  # output of no command: only possible before the first prompt
            continue
        text = line[2:] if prompted else line
        i += 1
        while text.endswith("\\") and i < len(lines):
            text = text + "\n" + (lines[i][2:] if prompted and lines[i].startswith("$ ")
                                  else lines[i])
            i += 1
        if not prompted:
            if text.strip() and not text.lstrip().startswith("#"):
                commands.append(Command(text, number, None))
            continue
        output: list[str] = []
        while i < len(lines) and not (lines[i].startswith("$ ") or lines[i] == "$"):
            output.append(lines[i])
            i += 1
        while output and not output[-1].strip():
            output.pop()
        commands.append(Command(text, number, tuple(output) if output else None))
    return commands


# --------------------------------------------------------------------------- output patterns


@dataclass(frozen=True)
class Volatile:
    """A part of real output that differs on every run. `pattern` finds it in the page's text,
    with the variable part as group `v`; `value` matches it in real output. A `bind`ing
    volatile remembers which real value stood for the page's value, and later commands and
    outputs that use the page's value get the real one (a job id shown, then inspected)."""

    name: str
    pattern: re.Pattern[str]
    value: str
    bind: bool


def _volatile(name: str, pattern: str, value: str, *, bind: bool) -> Volatile:
    return Volatile(name, re.compile(pattern), value, bind)


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?"

#: The variable parts of real output, declared once. Order matters only for overlaps: the
#: earliest match in a line wins, then the first listed.
VOLATILES: tuple[Volatile, ...] = (
    _volatile("uuid", rf"(?P<v>{_UUID})", _UUID, bind=True),
    _volatile("snapshot", r"(?P<v>cfg_[0-9a-f]{32})", r"cfg_[0-9a-f]{32}", bind=True),
    _volatile("pid", r'(?:\b(?:PID|pid) |"pid":|kill -TERM |kill )(?P<v>\d+)\b', r"\d+",
              bind=True),
    _volatile("lock-code", r"--all (?P<v>[0-9a-f]{5})\b", r"[0-9a-f]{5}", bind=True),
    _volatile("time", rf"(?P<v>{_TIME})", _TIME, bind=False),
    _volatile("hash", r"blake2b:(?P<v>[0-9a-f]{64})", r"[0-9a-f]{64}", bind=False),
    _volatile("ms", r"\b(?P<v>\d+) ms\b", r"\d+", bind=False),
    _volatile("uptime", r'(?:"uptime_seconds": |uptime )(?P<v>\d+)', r"\d+", bind=False),
    _volatile("free", r"\b(?P<v>\d+(?:\.\d+)?) MiB free\b", r"\d+(?:\.\d+)?", bind=False),
    _volatile("key", r"(?P<v>[A-Za-z0-9+/]{43}=)", r"[A-Za-z0-9+/]{43}=", bind=False),
)


@dataclass
class Bindings:
    """Page value -> real value, for the binding volatiles of one scenario."""

    values: dict[str, str] = field(default_factory=dict)

    def apply(self, text: str) -> str:
        """`text` with every bound page value replaced by its real value."""
        for volatile in VOLATILES:
            if volatile.bind:
                text = _replace_group(volatile.pattern, text,
                                      lambda v: self.values.get(v, v))
        return text


def _replace_group(pattern: re.Pattern[str], text: str, fn: Callable[[str], str]) -> str:
    """`text` with group `v` of every match of `pattern` replaced by `fn(v)`."""
    def repl(m: re.Match[str]) -> str:
        start, end = m.span("v")
        whole = m.group(0)
        return whole[:start - m.start()] + fn(m.group("v")) + whole[end - m.start():]
    return pattern.sub(repl, text)


def _tokens(line: str) -> Iterator[tuple[str, str, Volatile | None]]:
    """Split an expected line into ('text', s, None), ('wild', '...', None) and
    ('vol', page_value, volatile) pieces."""
    pos = 0
    while pos < len(line):
        best: tuple[int, int, Volatile] | None = None
        for volatile in VOLATILES:
            m = volatile.pattern.search(line, pos)
            if m is not None and (best is None or m.start("v") < best[0]):
                best = (m.start("v"), m.end("v"), volatile)
        wild = line.find("...", pos)
        if wild != -1 and (best is None or wild < best[0]):
            if wild > pos:
                yield "text", line[pos:wild], None
            yield "wild", "...", None
            pos = wild + 3
            continue
        if best is None:
            yield "text", line[pos:], None
            return
        if best[0] > pos:
            yield "text", line[pos:best[0]], None
        yield "vol", line[best[0]:best[1]], best[2]
        pos = best[1]


class OutputPattern:
    """The regex for one command's expected output. A line that is only `...` stands for any
    number of lines; `...` inside a line for any text; trailing spaces are ignored."""

    def __init__(self, expected: Iterable[str], bindings: Bindings) -> None:
        self._groups: dict[str, str] = {}  # group name -> page value
        seen: dict[str, str] = {}  # page value -> group name
        parts: list[str] = []
        lines = normalise_output("\n".join(expected)).split("\n")[:-1]
        for line in lines:
            if line.strip() == "...":
                parts.append(r"(?:[^\n]*\n)*?")
                continue
            piece = []
            for kind, text, volatile in _tokens(line):
                if kind == "text":
                    piece.append(re.escape(text))
                elif kind == "wild":
                    piece.append(r"[^\n]*?")
                elif volatile is not None and volatile.bind and text in bindings.values:
                    piece.append(re.escape(bindings.values[text]))
                elif volatile is not None and volatile.bind and text in seen:
                    piece.append(f"(?P={seen[text]})")
                elif volatile is not None and volatile.bind:
                    name = f"b{len(self._groups)}"
                    self._groups[name], seen[text] = text, name
                    piece.append(f"(?P<{name}>{volatile.value})")
                else:
                    assert volatile is not None
                    piece.append(volatile.value)
            parts.append("".join(piece) + r"\n")
        self.regex = re.compile("".join(parts))

    def match(self, actual: str) -> dict[str, str] | None:
        """The new bindings (page value -> real value) when `actual` matches, else None."""
        found = self.regex.fullmatch(normalise_output(actual))
        if found is None:
            return None
        return {self._groups[name]: value for name, value in found.groupdict().items()}


def normalise_output(text: str) -> str:
    """Trailing spaces dropped from every line, trailing blank lines dropped, one final
    newline (so an output without a newline compares like one with)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(line + "\n" for line in lines)


def last_uuid(text: str) -> str | None:
    found = re.findall(_UUID, text)
    return found[-1] if found else None


# --------------------------------------------------------------------------- the shell


class ShellSession:
    """One bash, like one terminal: commands run one after another, sharing the working
    directory and variables. stdout and stderr are one stream, as on a terminal; every
    command reads /dev/null as stdin, so none can swallow the next. Ended with its whole
    process group (gateways started in the background included) by `close`."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=dict(env),
            start_new_session=True,
        )
        self._buffer = b""

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        """Run one command; its exit status and output. ExampleFailed if it does not finish
        within `timeout` or ends the shell."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        token = secrets.token_hex(8)
        # The status is printed, then restored, so a page's next `echo $?` still sees it.
        script = (f"{{ {command}\n}} </dev/null\n"
                  "__docrun_rc=$?\n"
                  f"printf '\\n__docrun_{token}_%s__\\n' \"$__docrun_rc\"\n"
                  "__docrun_status() { return \"$1\"; }; __docrun_status \"$__docrun_rc\"\n")
        try:
            self.proc.stdin.write(script.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise ExampleFailed("the shell has exited") from None
        done = re.compile(rb"\n__docrun_" + token.encode() + rb"_(\d+)__\n")
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (found := done.search(self._buffer)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ExampleFailed(f"no answer within {timeout:.0f}s; output so far:\n"
                                        + self._buffer.decode(errors="replace"))
                if not sel.select(left):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise ExampleFailed("the shell exited; output:\n"
                                        + self._buffer.decode(errors="replace"))
                self._buffer += chunk
        output = self._buffer[:found.start()].decode(errors="replace")
        self._buffer = self._buffer[found.end():]
        return int(found.group(1)), output

    def close(self) -> None:
        """End the shell and everything it started (its process group), politely first:
        a gateway stopped by SIGTERM closes its database cleanly."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        for signum, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(self.proc):
                time.sleep(0.05)
            if not _group_alive(self.proc):
                break
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _group_alive(leader: subprocess.Popen[bytes]) -> bool:
    """Whether any process of the leader's group still runs (zombies do not count: the
    shell is reaped here, orphans by whoever adopted them)."""
    leader.poll()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(leader.pid) and fields[0] != "Z":
            return True
    return False


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """How the test runs the blocks of one `scenario=NAME`.

    `substitutions` rewrite the page's text (commands and expected output alike) where a test
    must differ: a literal string -> a template using `{scratch}` (the scenario's directory),
    `{repo}` (the checkout), `{bin}` (the directory of the `ductile` under test), `{port0}`,
    `{port1}`, ... (free ports) and `{last_uuid}` (the last id any command printed).

    `setup` runs first, unseen, as if the reader had done what the page describes in prose:
    bash commands (formatted with the same values, never substituted) or functions of the
    ScenarioRun. `after` maps a block `id=` or the start of a command to more of the same, run
    right after it (the page says "edit this file" between two commands)."""

    name: str
    substitutions: Mapping[str, str] = field(default_factory=dict)
    setup: tuple[str | Callable[[ScenarioRun], None], ...] = ()
    after: Mapping[str, tuple[str | Callable[[ScenarioRun], None], ...]] = \
        field(default_factory=dict)
    cwd: str = "{scratch}"


#: Commands that only read and may be re-run until their output matches (see Scenario).
SETTLE = re.compile(r"^(?:tail|cat|grep|curl -s \S*/healthz|ductile job (?:list|inspect)|"
                    r"ductile system (?:status|scheduler|breaker))\b")
#: A foreground `ductile system start` (a page says to run it "in a terminal"): the runner
#: starts it in the background and waits until it serves.
FOREGROUND_START = re.compile(r"^(?P<cmd>ductile system start --config \S+)\s*(?:#.*)?$")
#: `$ cmd   # exits 1`: the page says which status the command ends with (else 0, or the
#: block's `status=N`).
_EXITS = re.compile(r"#\s*exits? (\d+)\b[^\n]*$")
#: `$ cmd` followed by `$ echo $?`: the page shows the status, so it need not be 0.
_ECHO_STATUS = re.compile(r"^echo (?:\"?\$\?\"?)\s*$")

COMMAND_TIMEOUT = 60.0
SETTLE_TIME = 15.0


@dataclass
class ScenarioRun:
    """Runs a scenario's blocks in order in one ShellSession; see Scenario."""

    scenario: Scenario
    scratch: Path
    repo: Path
    bin_dir: Path
    ports: list[int]
    bindings: Bindings = field(default_factory=Bindings)
    last_uuid: str = ""
    _session: ShellSession | None = None
    _starts: int = 0

    def values(self) -> dict[str, str]:
        out = {"scratch": str(self.scratch), "repo": str(self.repo), "bin": str(self.bin_dir),
               "last_uuid": self.last_uuid}
        out.update({f"port{i}": str(p) for i, p in enumerate(self.ports)})
        return out

    def substitute(self, text: str) -> str:
        """The page's text with the scenario's substitutions applied in one pass, the longest
        literal first where two overlap (`/etc/ductile/vault.key` before `/etc/ductile`)."""
        subs = self.scenario.substitutions
        if not subs:
            return text
        values = self.values()
        pattern = re.compile("|".join(re.escape(k) for k in sorted(subs, key=len, reverse=True)))
        return pattern.sub(lambda m: subs[m.group(0)].format(**values), text)

    def __enter__(self) -> ScenarioRun:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DUCTILE_", "NOTIFY_SOCKET", "LISTEN_", "PYTEST",
                                    "CREDENTIALS_DIRECTORY"))}
        home = self.scratch / "home"
        home.mkdir(parents=True, exist_ok=True)
        env.update(PATH=f"{self.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}", HOME=str(home),
                   PYTHONUNBUFFERED="1", LC_ALL="C.UTF-8", COLUMNS="200")
        self._session = ShellSession(self.cwd, env)
        self._hidden(self.scenario.setup, "setup")
        return self

    @property
    def cwd(self) -> Path:
        return Path(self.scenario.cwd.format(**self.values()))

    def exec_hidden(self, command: str) -> str:
        """Run a setup command in the scenario's shell (a foreground start goes to the
        background, as for the page's commands); ExampleFailed unless it exits 0."""
        return self._exec(command, "setup")

    def _hidden(self, steps: Iterable[str | Callable[[ScenarioRun], None]], where: str) -> None:
        for step in steps:
            if callable(step):
                step(self)
            else:
                self._exec(step.format(**self.values()), where)

    def _after(self, key: str, where: str) -> None:
        for start, steps in self.scenario.after.items():
            if key == start or (" " in start and key.startswith(start)):
                self._hidden(steps, f"{where} (hidden step after {start!r})")

    def __exit__(self, *exc: object) -> None:
        if self._session is not None:
            self._session.close()

    def _exec(self, command: str, where: str) -> str:
        assert self._session is not None
        if (start := FOREGROUND_START.match(command)) is not None:
            return self._start_gateway(start["cmd"], where)
        status, output = self._session.run(command, COMMAND_TIMEOUT)
        if status != 0:
            raise ExampleFailed(f"{where}: `{command}` exited {status}:\n{output}")
        return output

    def _start_gateway(self, command: str, where: str) -> str:
        """Start `command` in the background, its log in the scratch directory, and wait until
        it serves (or fail with its log when it refuses)."""
        assert self._session is not None
        self._starts += 1
        log = self.scratch / f"gateway-{self._starts}.log"
        self._session.run(f"{command} >{shlex.quote(str(log))} 2>&1 &", COMMAND_TIMEOUT)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            if '"msg":"ductile running' in text:
                return ""
            if '"msg":"boot refused"' in text or '"msg":"ductile stopped"' in text:
                break
            time.sleep(0.05)
        raise ExampleFailed(f"{where}: `{command}` did not start serving:\n"
                            + (log.read_text(errors="replace") if log.exists() else ""))

    def run_block(self, block: DocBlock) -> None:
        """Run every command of `block`; ExampleFailed names the page line of the first one
        that exits non-zero (unless the page shows its status) or prints other output."""
        assert self._session is not None
        if block.kind == "yaml":
            assert block.directive is not None
            target = self.cwd / self.substitute(block.directive.options["file"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.substitute(block.fence.body) + "\n")
            self._after(block.directive.options.get("id", ""), block.where)
            return
        commands = parse_console(block.fence.body, block.fence.body_line)
        status_option = block.directive.options.get("status") if block.directive else None
        for index, cmd in enumerate(commands):
            where = f"{block.page}:{cmd.line}"
            text = self.bindings.apply(self.substitute(cmd.text))
            shown = index + 1 < len(commands) and _ECHO_STATUS.match(commands[index + 1].text)
            if FOREGROUND_START.match(text) is not None and cmd.expected is None and not shown:
                self._exec(text, where)  # "in a terminal": it serves until stopped
                self._after(cmd.text, where)
                continue
            said = _EXITS.search(cmd.text)
            want = int(said[1]) if said else int(status_option) if status_option else 0
            pattern = None
            if cmd.expected is not None:
                expected = [self.substitute(line) for line in cmd.expected]
                pattern = OutputPattern(expected, self.bindings)
            deadline = time.monotonic() + SETTLE_TIME
            while True:
                status, output = self._session.run(text, COMMAND_TIMEOUT)
                status_ok = shown or status == want
                found = pattern.match(output) if pattern is not None else {}
                if (status_ok and found is not None) or not SETTLE.match(text) \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if not status_ok:
                raise ExampleFailed(f"{where}: `{text}` exited {status} (expected {want}):\n"
                                    f"{output}")
            if found is None:
                raise ExampleFailed(
                    f"{where}: the output of `{text}` differs from the page.\n"
                    f"--- page (after substitutions) ---\n"
                    + "\n".join(self.substitute(line) for line in cmd.expected or ())
                    + f"\n--- real ---\n{output}")
            self._bind(found, where)
            self.last_uuid = last_uuid(output) or self.last_uuid
            self._after(cmd.text, where)
        if block.directive is not None and "id" in block.directive.options:
            self._after(block.directive.options["id"], block.where)

    def _bind(self, found: Mapping[str, str], where: str) -> None:
        taken = {real: page for page, real in self.bindings.values.items()}
        for page, real in found.items():
            if taken.get(real, page) != page:
                raise ExampleFailed(f"{where}: the page shows {page} where an earlier block "
                                    f"showed {taken[real]} for the same value")
            self.bindings.values[page] = real
            taken[real] = page


def order_blocks(blocks: list[DocBlock]) -> list[DocBlock]:
    """A scenario's blocks in page order, except that a block marked `after=ID` runs right
    after the block marked `id=ID` (for a page that shows a result before the step that makes
    it possible, such as a second start refused by the lock of a gateway started later)."""
    movable = [b for b in blocks if b.directive and "after" in b.directive.options]
    ordered = [b for b in blocks if b not in movable]
    for block in movable:
        assert block.directive is not None
        target = block.directive.options["after"]
        spot = next((i for i, b in enumerate(ordered)
                     if b.directive and b.directive.options.get("id") == target), None)
        if spot is None:
            raise DocFormatError(f"{block.where}: after={target} names no block id")
        ordered.insert(spot + 1, block)
    return ordered
