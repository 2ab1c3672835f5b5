"""Bundled sys_exec plugin (protocol v2): run one operator-configured command, without a shell.

The command comes only from `config.command` (a list of arguments, or a string split with shell
quoting rules but never run by a shell). Data from the job reaches the command only through the
environment: every top-level key of the payload becomes `DUCTILE_PAYLOAD_<KEY>`, plus
`DUCTILE_JOB_ID`, `DUCTILE_COMMAND` and `DUCTILE_EVENT_TYPE`. Payload values are never placed in
the argument list, so a value such as `; rm -rf x` is an inert string in one variable.

`$VAR` / `${VAR}` in the configured arguments are expanded (for configs written for the original
plugin), but only from the plugin's own environment, `config.env`, `DUCTILE_JOB_ID` and
`DUCTILE_COMMAND`; payload-derived variables are deliberately not expanded.

The command runs in its own process group, so a timeout (config.timeout_seconds) or the gateway
stopping this plugin (SIGTERM) can kill everything the command started; when the command exits,
whatever it left behind in its group is killed too.

Exit-code mapping: success is exit 0 (or a code in `success_exit_codes`); any other exit is a
`status: error` response whose `retry` is true only for codes in `retry_on_exit_codes`; exit 78
(EX_CONFIG) is always permanent. Configuration problems are `retry: false` errors that name the
key. Stdlib only; `shlex` is imported only when the command is a string, to keep startup cheap.
"""

import json
import os
import re
import select
import signal
import sys
import time
from datetime import datetime, timezone

EVENT_TYPE = "sys_exec.completed"
ENV_PREFIX = "DUCTILE_PAYLOAD_"
DEFAULT_TIMEOUT = 60.0
DEFAULT_OUTPUT_MAX = 16384
MIN_OUTPUT_MAX = 64
PERMANENT_EXIT = 78
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL when our own timeout fires
_CHUNK = 65536
_NOT_KEY_CHAR = re.compile(r"[^A-Z0-9_]+")
_VAR_REF = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# Python sets SIGPIPE and SIGXFSZ to "ignore"; an ignored disposition survives exec, so the
# command would not die on a closed pipe the way it does from a shell. Reset them.
_RESET_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGTERM", "SIGINT", "SIGHUP")
    if hasattr(signal, name)
)


class ConfigProblem(Exception):
    """A config key is missing or malformed: a permanent error, reported with the key's name."""


# --- entry point ---------------------------------------------------------------------------------


def main():
    raw = sys.stdin.buffer.read()
    try:
        req = json.loads(raw or b"{}")
    except ValueError as exc:
        respond(error("sys_exec: request is not JSON: " + str(exc)))
    if not isinstance(req, dict):
        respond(error("sys_exec: request must be a JSON object"))
    command = str(req.get("command") or "").strip()
    config = req.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        respond(error("sys_exec: request.config must be an object"))
    try:
        if command in ("poll", "handle"):
            respond(execute(req, parse_config(config)))
        if command == "health":
            respond(health(parse_config(config)))
    except ConfigProblem as exc:
        respond(error("sys_exec: " + str(exc)))
    respond(error(f"sys_exec: unsupported command {command!r} (supported: poll, handle, health)"))


def respond(response):
    sys.stdout.write(json.dumps(response))
    sys.stdout.flush()
    os._exit(0)


def error(message, retry=False, logs=None, events=None):
    out = {"status": "error", "error": message, "retry": retry,
           "logs": logs or [{"level": "error", "message": message}]}
    if events:
        out["events"] = events
    return out


# --- config --------------------------------------------------------------------------------------


def parse_config(config):
    """Validate every key up front so a typo fails the job at once with the key's name."""
    return {
        "argv": parse_command(config.get("command")),
        "event_type": parse_text(config, "event_type", EVENT_TYPE),
        "working_dir": parse_working_dir(config.get("working_dir")),
        "timeout": parse_number(config, "timeout_seconds", DEFAULT_TIMEOUT, 0.001),
        "env": parse_env(config.get("env")),
        "retry_codes": parse_codes(config, "retry_on_exit_codes") or set(),
        "success_codes": parse_codes(config, "success_exit_codes"),
        "emit_codes": parse_codes(config, "emit_event_on_exit_codes"),
        "emit_event": parse_bool(config, "emit_event", True),
        "include_output": parse_bool(config, "include_output_in_event", True),
        "stdout_max": int(parse_number(config, "stdout_max_bytes", DEFAULT_OUTPUT_MAX,
                                       MIN_OUTPUT_MAX, integer=True)),
        "stderr_max": int(parse_number(config, "stderr_max_bytes", DEFAULT_OUTPUT_MAX,
                                       MIN_OUTPUT_MAX, integer=True)),
    }


def parse_command(value):
    if value is None or value == "" or value == []:
        raise ConfigProblem("config.command is required (a list of arguments or a string)")
    if isinstance(value, list):
        argv = []
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)) or item is None or isinstance(item, bool):
                raise ConfigProblem(f"config.command[{i}] must be a string or a number")
            argv.append(str(item))
    elif isinstance(value, str):
        import shlex  # deferred: costs ~2 ms and list commands never need it

        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ConfigProblem(f"config.command cannot be split into arguments: {exc}") from None
    else:
        raise ConfigProblem("config.command must be a list of arguments or a string")
    if not argv or not argv[0]:
        raise ConfigProblem("config.command must name an executable")
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise ConfigProblem(f"config.command[{i}] contains a NUL byte")
    return argv


def parse_text(config, key, default):
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigProblem(f"config.{key} must be a string")
    return value.strip() or default


def parse_working_dir(value):
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise ConfigProblem("config.working_dir must be a string")
    return os.path.realpath(os.path.expanduser(value.strip()))


def parse_number(config, key, default, minimum, integer=False):
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigProblem(f"config.{key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigProblem(f"config.{key} must be a number")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigProblem(f"config.{key} must be a finite number")
    if integer and value != int(value):
        raise ConfigProblem(f"config.{key} must be a whole number")
    if value < minimum:
        raise ConfigProblem(f"config.{key} must be at least {minimum}")
    return value


def parse_bool(config, key, default):
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigProblem(f"config.{key} must be true or false")


def parse_codes(config, key):
    """A list of exit codes, or None when the key is absent (each caller picks the default)."""
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ConfigProblem(f"config.{key} must be a list of exit codes")
    codes = set()
    for item in value:
        try:
            code = int(item) if not isinstance(item, bool) else None
        except (TypeError, ValueError):
            code = None
        if code is None or (isinstance(item, float) and item != code):
            raise ConfigProblem(f"config.{key} must hold whole numbers, got {item!r}")
        codes.add(code)
    return codes


def parse_env(value):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigProblem("config.env must be a mapping of NAME: value")
    env = {}
    for key, item in value.items():
        name = str(key).strip()
        if not name or "=" in name or "\0" in name:
            raise ConfigProblem(f"config.env has an invalid variable name {str(key)!r}")
        text = env_text(item)
        if "\0" in text:
            raise ConfigProblem(f"config.env.{name} contains a NUL byte")
        env[name] = text
    return env


# --- environment ---------------------------------------------------------------------------------


def env_text(value):
    """Strings verbatim, null as empty, everything else as compact JSON (true, 1.5, {...})."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def payload_env_name(key):
    """`DUCTILE_PAYLOAD_` + the key upper-cased, with each run of other characters as one `_`,
    no `_` at either end, `VALUE` when nothing is left, and `_` before a leading digit."""
    name = _NOT_KEY_CHAR.sub("_", str(key).strip().upper()).strip("_")
    name = re.sub("_+", "_", name)
    if not name:
        name = "VALUE"
    if name[0].isdigit():
        name = "_" + name
    return ENV_PREFIX + name


def payload_env(payload):
    """One variable per top-level payload key; a clash gets `_2`, `_3`, ... in payload order."""
    out = {}
    for key, value in payload.items():
        base = payload_env_name(key)
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}_{n}"
        text = env_text(value)
        if "\0" in text:
            raise ConfigProblem(f"payload key {key!r} holds a NUL byte and cannot be passed in "
                                "the environment")
        out[name] = text
    return out


def child_environment(req, cfg, payload, event_type):
    """The command's environment, and the smaller mapping `$VAR` expansion may draw from."""
    trusted = dict(os.environ)
    trusted.update(cfg["env"])
    trusted["DUCTILE_JOB_ID"] = str(req.get("job_id") or "")
    trusted["DUCTILE_COMMAND"] = str(req.get("command") or "")
    env = dict(trusted)
    env.update(payload_env(payload))
    env["DUCTILE_EVENT_TYPE"] = event_type
    return env, trusted


def expand(argv, variables):
    """Expand `$NAME` and `${NAME}` from `variables`; unknown references stay as written."""
    def one(match):
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))
    return [_VAR_REF.sub(one, arg) for arg in argv]


def which(program, path, base):
    """The executable `program` resolves to under `path` (the command's PATH), or None.

    Relative names resolve against `base`, the directory the command will run in, the way
    they would after a `cd` there.
    """
    if "/" in program:
        candidates = [os.path.join(base, program)]
    else:
        candidates = [os.path.join(base, d, program) for d in (path or os.defpath).split(":")]
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def incoming(req):
    """The payload that feeds the environment and the upstream event type.

    `handle` gets the routed event's payload; other commands get the request payload (for
    example the body of an API call or a schedule's payload).
    """
    event = req.get("event")
    if isinstance(event, dict):
        payload = event.get("payload")
        return (payload if isinstance(payload, dict) else {}), str(event.get("type") or "")
    payload = req.get("payload")
    return (payload if isinstance(payload, dict) else {}), ""


def upstream_label(req):
    """Where the work came from, for the log line: pipeline:plugin when known."""
    ctx = req.get("context")
    if not isinstance(ctx, dict):
        return "unknown"
    for pipe_key, plug_key in (("ductile_upstream_pipeline", "ductile_upstream_plugin"),
                               ("ductile_pipeline", "ductile_plugin")):
        parts = [str(ctx.get(k) or "").strip() for k in (pipe_key, plug_key)]
        label = ":".join(p for p in parts if p)
        if label:
            return label
    return "unknown"


# --- commands ------------------------------------------------------------------------------------


def health(cfg):
    executable = cfg["argv"][0]
    if cfg["working_dir"] and not os.path.isdir(cfg["working_dir"]):
        return error(f"sys_exec: config.working_dir is not a directory: {cfg['working_dir']}")
    path = cfg["env"].get("PATH", os.environ.get("PATH"))
    if which(executable, path, cfg["working_dir"] or os.getcwd()) is None:
        return error(f"sys_exec: executable not found: {executable} (config.command); "
                     "use an absolute path or add its directory to PATH")
    return {"status": "ok", "result": "sys_exec health check passed",
            "logs": [{"level": "info", "message": "configured command: " + " ".join(cfg["argv"])}]}


def execute(req, cfg):
    payload, upstream_type = incoming(req)
    env, trusted = child_environment(req, cfg, payload, upstream_type)
    argv = expand(cfg["argv"], trusted)
    shown = " ".join(argv)
    working_dir = cfg["working_dir"]
    if working_dir and not os.path.isdir(working_dir):
        return error(f"sys_exec: config.working_dir is not a directory: {working_dir}")
    program = which(argv[0], env.get("PATH"), working_dir or os.getcwd())
    if program is None:
        return error(f"sys_exec: executable not found: {argv[0]} (config.command); "
                     "use an absolute path or add its directory to PATH")
    started = time.monotonic()
    try:
        run = run_command(program, argv, env, working_dir, cfg)
    except OSError as exc:
        return error(f"sys_exec: cannot start {argv[0]}: {exc.strerror or exc}")
    duration_ms = int((time.monotonic() - started) * 1000)
    stdout, stdout_cut = clip(run["stdout"], run["stdout_total"], cfg["stdout_max"])
    stderr, stderr_cut = clip(run["stderr"], run["stderr_total"], cfg["stderr_max"])
    if run["timed_out"]:
        return timed_out(cfg, shown, duration_ms, stderr, stderr_cut)
    return completed(req, cfg, shown, run["exit_code"], duration_ms,
                     (stdout, stdout_cut), (stderr, stderr_cut))


def completed(req, cfg, shown, code, duration_ms, out, err):
    """Map the exit status to a response; the event goes out on success and on failure."""
    stdout, stdout_cut = out
    stderr, stderr_cut = err
    success = code == 0 if cfg["success_codes"] is None else code in cfg["success_codes"]
    summary = f"command exited with code {code} in {duration_ms}ms"
    logs = [
        {"level": "info" if success else "error",
         "message": f"{summary} (upstream {upstream_label(req)})"},
        {"level": "debug", "message": "command: " + shown},
    ]
    if stdout:
        logs.append({"level": "info", "message": "stdout: " + stdout})
    if stderr:
        logs.append({"level": "warn", "message": "stderr: " + stderr})
    for name, cut in (("stdout", stdout_cut), ("stderr", stderr_cut)):
        if cut:
            logs.append({"level": "warn", "message": name + " truncated"})
    payload = {
        "command": shown,
        "exit_code": code,
        "duration_ms": duration_ms,
        "stdout_truncated": stdout_cut,
        "stderr_truncated": stderr_cut,
        "working_dir": cfg["working_dir"],
        "executed_at": now_iso(),
    }
    if cfg["include_output"]:
        payload["stdout"] = stdout
        payload["stderr"] = stderr
    emit = cfg["emit_event"] and (cfg["emit_codes"] is None or code in cfg["emit_codes"])
    events = [{"type": cfg["event_type"], "payload": payload}] if emit else []
    if success:
        response = {"status": "ok", "result": summary, "logs": logs}
        if events:
            response["events"] = events
        return response
    retry = code in cfg["retry_codes"] and code != PERMANENT_EXIT
    message = stderr.strip() or f"command failed with exit code {code}"
    return error(message, retry=retry, logs=logs, events=events)


def timed_out(cfg, shown, duration_ms, stderr, stderr_cut):
    message = f"command timed out after {cfg['timeout']:.3f}s"
    logs = [{"level": "error", "message": message},
            {"level": "debug", "message": "command: " + shown}]
    if stderr:
        logs.append({"level": "error", "message": "stderr: " + stderr})
    events = None
    if cfg["emit_event"]:
        payload = {"command": shown, "exit_code": -1, "duration_ms": duration_ms,
                   "timed_out": True, "stderr_truncated": stderr_cut, "executed_at": now_iso()}
        if cfg["include_output"] and stderr:
            payload["stderr"] = stderr
        events = [{"type": cfg["event_type"], "payload": payload}]
    return error(message, retry=False, logs=logs, events=events)


def clip(data, total, cap):
    """Decode at most `cap` bytes (a split UTF-8 sequence at the cut is dropped)."""
    if total <= cap:
        return data.decode("utf-8", errors="replace"), False
    return data[:cap].decode("utf-8", errors="ignore"), True


def now_iso():
    return datetime.now(timezone.utc).isoformat()


# --- running the command -------------------------------------------------------------------------


def run_command(program, argv, env, working_dir, cfg):
    """Start the command in its own process group and collect its output until it exits or the
    timeout fires. Raises OSError when it cannot be started."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    previous_dir = None
    # Block SIGTERM across the spawn so the forwarding handler is in place before anyone could
    # signal us about a child we would otherwise not know about.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        if working_dir:
            previous_dir = os.getcwd()
            os.chdir(working_dir)
        pid = os.posix_spawn(
            program, argv, env,
            file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                          (os.POSIX_SPAWN_DUP2, err_w, 2)],
            setpgroup=0, setsigdef=_RESET_SIGNALS, setsigmask=(),
        )
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        for fd in (out_r, out_w, err_r, err_w, null):
            os.close(fd)
        raise
    finally:
        if previous_dir is not None:
            os.chdir(previous_dir)
    for fd in (out_w, err_w, null):
        os.close(fd)
    signal.signal(signal.SIGTERM, lambda signum, frame: abandon(pid))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    return Collector(pid, out_r, err_r, cfg["stdout_max"], cfg["stderr_max"]).run(cfg["timeout"])


def abandon(pid):
    """We are being stopped (the gateway's own timeout): take the command's group with us."""
    kill_group(pid, signal.SIGKILL)
    os._exit(128 + signal.SIGTERM)


def kill_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except OSError:  # already gone, or a member changed credentials: the leader at least
        try:
            os.kill(pid, sig)
        except OSError:
            pass


class Collector:
    """Reads both output pipes (keeping `cap` bytes of each and counting the rest) while waiting
    for the command to exit, using a pidfd when the kernel has them."""

    def __init__(self, pid, out_fd, err_fd, out_cap, err_cap):
        self.pid = pid
        self.buffers = {out_fd: bytearray(), err_fd: bytearray()}
        self.totals = {out_fd: 0, err_fd: 0}
        self.caps = {out_fd: out_cap, err_fd: err_cap}
        self.out_fd, self.err_fd = out_fd, err_fd
        self.poller = select.poll()
        for fd in (out_fd, err_fd):
            os.set_blocking(fd, False)
            self.poller.register(fd, select.POLLIN)
        self.open = {out_fd, err_fd}
        self.pidfd = None
        try:
            self.pidfd = os.pidfd_open(pid)
            self.poller.register(self.pidfd, select.POLLIN)
        except (AttributeError, OSError):
            self.pidfd = None

    def run(self, timeout):
        timed_out = not self.pump(time.monotonic() + timeout)
        if timed_out:
            kill_group(self.pid, signal.SIGTERM)
            if not self.pump(time.monotonic() + KILL_GRACE):
                kill_group(self.pid, signal.SIGKILL)
                self.pump(None)
        # The leader is a zombie, so its group id cannot be reused yet: kill what it left behind.
        kill_group(self.pid, signal.SIGKILL)
        self.drain()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing left to take down after reaping
        _, status = os.waitpid(self.pid, 0)
        for fd in list(self.open) + ([self.pidfd] if self.pidfd is not None else []):
            os.close(fd)
        return {
            "exit_code": os.waitstatus_to_exitcode(status),
            "timed_out": timed_out,
            "stdout": bytes(self.buffers[self.out_fd]),
            "stdout_total": self.totals[self.out_fd],
            "stderr": bytes(self.buffers[self.err_fd]),
            "stderr_total": self.totals[self.err_fd],
        }

    def exited(self):
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def pump(self, deadline):
        """Collect output until the command exits (True) or `deadline` passes (False)."""
        while not self.exited():
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait == 0.0:
                return False
            if self.pidfd is None:  # no exit notification: look again soon
                wait = 0.02 if wait is None else min(wait, 0.02)
            for fd, _ in self.poller.poll(None if wait is None else wait * 1000):
                if fd in self.open:
                    self.read(fd)
        return True

    def drain(self):
        """Take what is already in the pipes without waiting for a writer that escaped."""
        for fd in list(self.open):
            while fd in self.open and self.read(fd):
                pass

    def read(self, fd):
        """One read; False at end of file or when nothing is there right now."""
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.poller.unregister(fd)
            self.open.discard(fd)
            os.close(fd)
            return False
        self.totals[fd] += len(chunk)
        room = self.caps[fd] - len(self.buffers[fd])
        if room > 0:
            self.buffers[fd] += chunk[:room]
        return True


if __name__ == "__main__":
    main()
