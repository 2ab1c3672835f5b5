// The web ledger's only script. It never uses innerHTML: every value from the gateway goes into
// the page as text (textContent), so a payload holding markup is shown, never run.
//
// The API token lives in sessionStorage (this tab only) and goes to the JSON API as a Bearer
// header; it is never put in a URL (so never in a request log) nor in a cookie.
"use strict";

(function () {
  const TOKEN_KEY = "ductile.ui.token";
  const NOTE_KEY = "ductile.ui.login-note";
  const POLL_MS = 2000;          // the fallback when the event stream is not there
  const STREAM_RETRY_MS = 30000; // while polling, how often to try the stream again
  const TERMINAL = new Set(["succeeded", "failed", "timed_out", "dead", "skipped", "cancelled"]);

  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const $ = (sel) => document.querySelector(sel);

  // -- DOM helpers (text only) ---------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function statusBadge(status, jobId) {
    return el("span", {class: "status status-" + String(status || "unknown"),
                       data: jobId ? {jobId: jobId} : undefined}, status || "?");
  }

  function jobLink(id) {
    return el("a", {href: "/ui/job/" + encodeURIComponent(id)}, String(id).slice(0, 8));
  }

  function showError(message) {
    const box = $("#error");
    if (!box) return;
    box.textContent = message || "";
    box.hidden = !message;
  }

  function setLive(text, mode) {
    const badge = $("#live");
    if (!badge) return;
    badge.textContent = text;
    badge.dataset.mode = mode;
  }

  function debounce(fn, ms) {
    let timer = null;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  // -- the JSON API ----------------------------------------------------------------------------

  function authHeaders(extra) {
    return Object.assign({Authorization: "Bearer " + token()}, extra || {});
  }

  async function api(path) {
    const resp = await fetch(path, {headers: authHeaders(), cache: "no-store"});
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (resp.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.setItem(NOTE_KEY, "The gateway refused the token (" +
        ((body && body.error) || "401") + "); log in again.");
      location.replace("/ui/login");
      throw new Error("logged out");
    }
    if (!resp.ok) {
      throw new Error("GET " + path + " answered " + resp.status + ": " +
        ((body && body.error) || resp.statusText));
    }
    return body;
  }

  // -- live updates: GET /events read with fetch (so the token stays in a header) ----------------

  function parseFrame(frame) {
    const ev = {id: null, type: "message", data: []};
    for (const line of frame.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") ev.id = value;
      else if (field === "event") ev.type = value;
      else if (field === "data") ev.data.push(value);
    }
    if (!ev.data.length) return null;
    let data = null;
    try { data = JSON.parse(ev.data.join("\n")); } catch (e) { data = null; }
    return {id: ev.id, type: ev.type, data: data || {}};
  }

  async function readStream(query, lastId, onEvent) {
    const headers = authHeaders({Accept: "text/event-stream"});
    if (lastId.value) headers["Last-Event-ID"] = lastId.value;
    const resp = await fetch("/events" + (query ? "?" + query : ""),
                             {headers: headers, cache: "no-store"});
    const type = resp.headers.get("Content-Type") || "";
    if (!resp.ok || !type.startsWith("text/event-stream") || !resp.body) {
      throw new Error("no event stream (" + resp.status + ")");
    }
    setLive("live", "stream");
    onEvent(null); // catch up on what happened before the stream opened
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += value;
      // SSE ends a line at CRLF, CR or LF; keep a trailing CR until its LF may arrive.
      const keep = buffer.endsWith("\r") ? 1 : 0;
      buffer = buffer.slice(0, buffer.length - keep).replace(/\r\n?/g, "\n") +
               buffer.slice(buffer.length - keep);
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const ev = parseFrame(frame);
        if (ev === null) continue;
        if (ev.id) lastId.value = ev.id;
        onEvent(ev);
      }
    }
  }

  // Follow the gateway: the event stream when it answers, else a refresh every POLL_MS (and
  // another try at the stream every STREAM_RETRY_MS). A stream that was open and ended (the
  // gateway dropped a slow reader, or restarted) is opened again at once, resuming after the
  // last event seen. `onEvent(ev)` gets each event, or null when everything should be read
  // again.
  async function follow(query, onEvent) {
    const lastId = {value: null};
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    for (;;) {
      let opened = false;
      try {
        await readStream(query, lastId, (ev) => { opened = true; onEvent(ev); });
      } catch (e) {
        // a missing route, a refused token or a dropped connection: poll instead
      }
      if (opened) {
        await sleep(1000);
        continue;
      }
      setLive("polling every 2 s", "poll");
      const until = Date.now() + STREAM_RETRY_MS;
      while (Date.now() < until) {
        onEvent(null);
        await sleep(POLL_MS);
      }
    }
  }

  // -- pages ---------------------------------------------------------------------------------

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
    if (!rows.length) {
      const cols = tbody.closest("table").querySelectorAll("thead th").length;
      tbody.append(el("tr", {}, el("td", {colspan: cols, class: "muted"}, "nothing yet")));
    }
  }

  function jobsPage() {
    const form = $("#filters");
    const fields = {plugin: $("#f-plugin"), command: $("#f-command"), status: $("#f-status")};
    const initial = new URLSearchParams(location.search);
    for (const [name, input] of Object.entries(fields)) input.value = initial.get(name) || "";

    function query() {
      const q = new URLSearchParams();
      for (const [name, input] of Object.entries(fields)) {
        if (input.value.trim()) q.set(name, input.value.trim());
      }
      return q;
    }

    async function load() {
      const q = query();
      q.set("limit", "100");
      try {
        const body = await api("/jobs?" + q.toString());
        fill($("#jobs tbody"), body.jobs.map((j) => el("tr", {data: {jobId: j.job_id}},
          el("td", {}, jobLink(j.job_id)), el("td", {}, j.plugin), el("td", {}, j.command),
          el("td", {}, statusBadge(j.status, j.job_id)), el("td", {}, j.attempt),
          el("td", {}, j.created_at || ""), el("td", {}, j.completed_at || ""))));
        $("#jobs-count").textContent = body.total + " job(s)" +
          (body.total > body.jobs.length ? ", newest " + body.jobs.length + " shown" : "");
        showError("");
      } catch (e) { if (e.message !== "logged out") showError(e.message); }
    }

    const refresh = debounce(load, 200);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const q = query().toString();
      history.replaceState(null, "", "/ui/jobs" + (q ? "?" + q : ""));
      load();
    });
    load();
    follow("type=job.*", (ev) => {
      if (ev && ev.data.job_id && ev.data.status) {
        for (const badge of document.querySelectorAll("#jobs .status")) {
          if (badge.dataset.jobId === ev.data.job_id) {
            badge.textContent = ev.data.status;
            badge.className = "status status-" + ev.data.status;
          }
        }
      }
      refresh();
    });
  }

  // The pipeline tree as nested boxes: each job holds the jobs routed from it.
  function drawTree(rows, current) {
    const children = new Map();
    const ids = new Set(rows.map((r) => r.job_id));
    const roots = [];
    for (const row of rows) {
      if (row.parent_job_id && ids.has(row.parent_job_id)) {
        if (!children.has(row.parent_job_id)) children.set(row.parent_job_id, []);
        children.get(row.parent_job_id).push(row);
      } else {
        roots.push(row);
      }
    }
    function box(row) {
      const kids = children.get(row.job_id) || [];
      return el("div", {class: "node" + (row.job_id === current ? " current" : ""),
                        data: {jobId: row.job_id}},
        el("div", {class: "node-head"},
          el("a", {href: "/ui/job/" + encodeURIComponent(row.job_id)},
             row.step_id ? row.step_id : row.plugin + "." + row.command),
          " ", statusBadge(row.status, row.job_id)),
        el("div", {class: "node-meta muted"},
          row.plugin + "." + row.command +
          (row.pipeline ? " · " + row.pipeline : "") +
          (row.duration_ms !== null && row.duration_ms !== undefined ?
            " · " + row.duration_ms + " ms" : "")),
        row.last_error ? el("div", {class: "node-error"}, row.last_error) : null,
        kids.length ? el("div", {class: "children"}, ...kids.map(box)) : null);
    }
    return roots.map(box);
  }

  function jobPage() {
    const id = document.body.dataset.jobId;
    let settled = false;

    async function load() {
      try {
        const [job, tree, ledger] = await Promise.all([
          api("/job/" + encodeURIComponent(id)),
          api("/job/" + encodeURIComponent(id) + "/tree"),
          api("/ui/api/job/" + encodeURIComponent(id) + "/ledger"),
        ]);
        const summary = $("#job-summary");
        const item = (label, value) => value === undefined || value === null || value === "" ?
          [] : [el("dt", {}, label), el("dd", {}, value)];
        summary.replaceChildren(
          ...item("status", el("span", {id: "job-status", class: "status status-" + job.status},
                               job.status)),
          ...item("plugin", job.plugin), ...item("command", job.command),
          ...item("attempt", job.attempt + " of " + job.max_attempts),
          ...item("submitted by", job.submitted_by), ...item("created", job.created_at),
          ...item("started", job.started_at), ...item("completed", job.completed_at),
          ...item("last error", job.last_error),
          ...item("config snapshot (enqueued)", ledger.enqueued_config_snapshot_id),
          ...item("config snapshot (started)", ledger.started_config_snapshot_id),
          ...item("retry of", job.retry_of ? jobLink(job.retry_of) : null),
          ...item("retried as", job.retried_as ? jobLink(job.retried_as) : null),
          ...item("rerun of", job.rerun_of ? jobLink(job.rerun_of) : null));
        $("#job-result").textContent = job.result === undefined ? "(no result yet)" :
          (typeof job.result === "string" ? job.result : JSON.stringify(job.result, null, 2));
        $("#tree").replaceChildren(...drawTree(tree, id));
        fill($("#attempts tbody"), ledger.attempts.map((a) => el("tr", {},
          el("td", {}, a.attempt), el("td", {}, a.started_at || ""),
          el("td", {}, a.finished_at || ""), el("td", {}, a.duration_ms ?? ""),
          el("td", {}, a.outcome || ""), el("td", {}, a.exit_code ?? ""),
          el("td", {}, a.error || ""))));
        fill($("#transitions tbody"), ledger.transitions.map((t) => el("tr", {},
          el("td", {}, t.created_at), el("td", {}, t.from_status || "new"),
          el("td", {}, statusBadge(t.to_status)), el("td", {}, t.reason || ""))));
        settled = tree.every((row) => TERMINAL.has(row.status)) && TERMINAL.has(job.status);
        showError("");
      } catch (e) { if (e.message !== "logged out") showError(e.message); }
    }

    const refresh = debounce(load, 200);
    load();
    follow("type=job.*", (ev) => {
      if (ev === null && settled) return; // nothing left to change: no need to poll
      if (ev && ev.data.job_id === id && ev.data.status) {
        const badge = $("#job-status");
        if (badge) {
          badge.textContent = ev.data.status;
          badge.className = "status status-" + ev.data.status;
        }
      }
      refresh();
    });
  }

  function schedulesPage() {
    async function load() {
      try {
        const body = await api("/scheduler/jobs");
        fill($("#schedules tbody"), body.jobs.map((s) => el("tr", {},
          el("td", {}, s.plugin), el("td", {}, s.schedule_id), el("td", {}, s.command),
          el("td", {}, s.mode), el("td", {}, s.status + (s.reason ? " (" + s.reason + ")" : "")),
          el("td", {}, (s.next_run_at || "") + (s.timezone ? " " + s.timezone : "")),
          el("td", {}, s.paused ? "paused" : ""),
          el("td", {}, statusBadge(s.breaker ? s.breaker.state : "closed")))));
        showError("");
      } catch (e) { if (e.message !== "logged out") showError(e.message); }
    }
    const refresh = debounce(load, 200);
    load();
    follow("type=scheduler.*", () => refresh());
  }

  function breakersPage() {
    async function load() {
      try {
        const body = await api("/ui/api/breakers");
        $("#breakers-open").textContent = body.open + " open";
        fill($("#breakers tbody"), body.breakers.map((b) => el("tr", {},
          el("td", {}, b.plugin), el("td", {}, b.command), el("td", {}, statusBadge(b.state)),
          el("td", {}, b.failure_count), el("td", {}, b.opened_at || ""),
          el("td", {}, b.last_failure_at || ""),
          el("td", {}, b.last_job_id ? jobLink(b.last_job_id) : ""),
          el("td", {}, b.updated_at || ""))));
        showError("");
      } catch (e) { if (e.message !== "logged out") showError(e.message); }
    }
    const refresh = debounce(load, 200);
    load();
    follow("type=scheduler.circuit_state_changed", () => refresh());
  }

  function bootPage() {
    async function load() {
      try {
        const h = await api("/healthz");
        const item = (label, value) => [el("dt", {}, label), el("dd", {}, value ?? "")];
        $("#health").replaceChildren(
          ...item("posture", h.posture), ...item("generation", h.generation),
          ...item("config snapshot", h.snapshot_id), ...item("version", h.version),
          ...item("uptime (s)", h.uptime_seconds), ...item("queue depth", h.queue_depth));
        showError("");
      } catch (e) { if (e.message !== "logged out") showError(e.message); }
    }
    const refresh = debounce(load, 200);
    load();
    follow("type=reload.*&type=posture.changed", (ev) => { if (ev) refresh(); });
  }

  function loginPage() {
    const note = sessionStorage.getItem(NOTE_KEY);
    if (note) {
      sessionStorage.removeItem(NOTE_KEY);
      showError(note);
    }
    $("#login-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const value = $("#token").value.trim();
      if (!value) return showError("Paste an API token first.");
      let resp;
      try {
        resp = await fetch("/healthz", {headers: {Authorization: "Bearer " + value},
                                        cache: "no-store"});
      } catch (err) {
        return showError("Cannot reach the gateway: " + err.message);
      }
      let body = null;
      try { body = await resp.json(); } catch (err) { body = null; }
      if (resp.status === 200 && body && "uptime_seconds" in body) {
        sessionStorage.setItem(TOKEN_KEY, value);
        location.assign("/ui/jobs");
        return;
      }
      showError("Login failed: the gateway answered " + resp.status + " (" +
        ((body && body.error) || "not an API token") + "). Use a token from api.auth.tokens " +
        "(after make run: the file .ductile-demo/api-token).");
    });
  }

  const PAGES = {jobs: jobsPage, job: jobPage, schedules: schedulesPage,
                 breakers: breakersPage, boot: bootPage};

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "login") return loginPage();
    if (!token()) {
      location.replace("/ui/login");
      return;
    }
    $("#logout").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.assign("/ui/login");
    });
    const run = PAGES[page];
    if (run) run();
  });
})();
