// The supervisor wallboard: the server pushes a picture of queues, agents, channels and open alerts over a
// WebSocket whenever it changes; this page counts waiting and in-state times itself from the instants it
// was given (corrected by the server's clock). Everything shown goes through textContent, never HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_BACKOFF_MS = 30000;
  const KIND_TEXT = { waiting: "waiting", longest_wait: "longest wait", service_level: "service level" };

  let socket = null;
  let attempts = 0;
  let lastHeard = 0;
  let heartbeatMs = 15000;
  let clockSkewMs = 0; // server time - our time
  let picture = null;
  let supervision = null; // {id, interaction_id, mode} of this page's supervisor, while connected
  const MODES = ["listen", "whisper", "barge"];

  const now = () => Date.now() + clockSkewMs;
  const pct = (ratio) => (ratio === null || ratio === undefined ? "–" : Math.round(ratio * 1000) / 10 + "%");
  const secs = (s) => (s === null || s === undefined ? "–" : duration(s));

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = String(s % 60).padStart(2, "0");
    return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
  }

  function since(iso) {
    return iso ? (now() - Date.parse(iso)) / 1000 : null;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.append(td);
    return td;
  }

  async function start() {
    const response = await fetch("/console/api/me", { credentials: "same-origin" });
    const me = response.ok ? await response.json() : null;
    if (!me || !["supervisor", "admin"].includes(me.role)) {
      $("need-signin").hidden = false;
      return;
    }
    $("who").hidden = false;
    $("who-name").textContent = `${me.username} (${me.role})`;
    $("board").hidden = false;
    connect();
  }

  // -- drawing ----------------------------------------------------------------------------------
  function over(value, limit, below = false) {
    if (value === null || value === undefined || limit === null || limit === undefined) return false;
    return below ? value < limit : value > limit;
  }

  function drawQueues() {
    const body = $("queues").tBodies[0];
    body.replaceChildren();
    for (const q of picture.queues) {
      const row = document.createElement("tr");
      row.dataset.queue = q.queue;
      if (q.alerts.length) row.className = "alerting";
      const t = q.thresholds;
      const longest = q.oldest_queued_at ? since(q.oldest_queued_at) : 0;
      cell(row, q.name);
      cell(row, String(q.waiting), "waiting" + (over(q.waiting, t.waiting_above) ? " over" : ""));
      const waitCell = cell(row, q.waiting ? duration(longest) : "–", "longest");
      waitCell.dataset.since = q.oldest_queued_at || "";
      waitCell.dataset.limit = t.longest_wait_above_s ?? "";
      if (over(longest, t.longest_wait_above_s)) waitCell.classList.add("over");
      const sl = q.service_level === null ? null : q.service_level * 100;
      cell(row, pct(q.service_level), "sl" + (over(sl, t.service_level_below_pct, true) ? " over" : ""));
      cell(row, secs(q.asa_s), "asa");
      cell(row, String(q.abandoned), "abandoned");
      cell(row, String(q.agents.available || 0), "available");
      cell(row, String((q.agents.busy || 0) + (q.agents.ringing || 0)), "busy");
      cell(row, String(q.agents.wrapup || 0), "wrapup");
      cell(row, String(q.agents.away || 0), "away");
      body.append(row);
    }
  }

  function drawAgents() {
    const body = $("agents").tBodies[0];
    body.replaceChildren();
    for (const a of picture.agents) {
      const row = document.createElement("tr");
      row.dataset.agent = a.id;
      cell(row, a.name);
      cell(row, a.queues.join(", "));
      const state = document.createElement("span");
      state.className = "state " + a.state;
      state.textContent = a.state + (a.reason ? ` (${a.reason})` : "");
      cell(row, "", "state-cell").append(state);
      const inState = cell(row, a.since ? duration(since(a.since)) : "–", "in-state");
      inState.dataset.since = a.since || "";
      cell(row, String(a.handled_today), "handled");
      const call = cell(row, "", "call");
      if (a.interaction_id) {
        for (const mode of MODES) {
          const here = supervision && supervision.interaction_id === a.interaction_id && supervision.mode === mode;
          const button = document.createElement("button");
          button.type = "button";
          button.className = "supervise " + mode + (here ? " active" : "");
          button.textContent = mode[0].toUpperCase() + mode.slice(1);
          button.addEventListener("click", () => supervise(a.interaction_id, mode));
          call.append(button);
        }
      }
      const set = cell(row, "", "set-state");
      const choice = document.createElement("select");
      for (const state of ["available", "away", "offline"]) choice.append(new Option(state, state));
      const apply = document.createElement("button");
      apply.type = "button";
      apply.textContent = "Set";
      apply.addEventListener("click", () => act(`/api/agents/${encodeURIComponent(a.id)}/state`, "POST",
        { state: choice.value }, `${a.name}: ${choice.value}`));
      set.append(choice, apply);
      body.append(row);
    }
  }

  function drawWaiting() {
    const body = $("waiting").tBodies[0];
    body.replaceChildren();
    for (const w of picture.waiting || []) {
      const row = document.createElement("tr");
      row.dataset.interaction = w.interaction_id;
      cell(row, w.interaction_id.slice(0, 8));
      cell(row, w.channel);
      cell(row, w.queue);
      cell(row, duration(since(w.since)), "in-state").dataset.since = w.since;
      const to = document.createElement("select");
      for (const q of picture.queues) if (q.queue !== w.queue) to.append(new Option(`queue ${q.name}`, "queue:" + q.queue));
      for (const a of picture.agents) if (a.state === "available") to.append(new Option(`agent ${a.name}`, "agent:" + a.id));
      const move = document.createElement("button");
      move.type = "button";
      move.textContent = "Move";
      move.addEventListener("click", () => {
        const [kind, target] = to.value.split(/:(.*)/s);
        if (!target) return;
        act(`/api/routing/interactions/${w.interaction_id}/move`, "POST", { [kind]: target }, `moved to ${kind} ${target}`);
      });
      cell(row, "", "move").append(to, move);
      body.append(row);
    }
  }

  // -- supervisor actions (each audited on the server) -------------------------------------------
  function status(text, bad = false) {
    $("action-status").textContent = text;
    $("action-status").className = bad ? "bad" : "";
  }

  async function act(url, method, body, done) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      status(`${answer.reason || response.statusText}`, true);
      return null;
    }
    status(done);
    return answer;
  }

  function showSupervision() {
    $("supervision").textContent = supervision
      ? `${supervision.mode} on ${supervision.interaction_id.slice(0, 8)}`
      : "not on a call";
    $("stop-supervision").hidden = !supervision;
    if (picture) drawAgents();
  }

  async function supervise(interactionId, mode) {
    let answer;
    if (supervision && supervision.interaction_id === interactionId) {
      answer = await act(`/api/supervisions/${supervision.id}`, "PATCH", { mode }, `now: ${mode}`);
    } else {
      const phone = $("my-phone").value.trim();
      if (!phone) {
        status("give your phone first (e.g. PJSIP/supervisor-demo)", true);
        return;
      }
      localStorage.setItem("hilo-supervisor-phone", phone);
      if (supervision) await act(`/api/supervisions/${supervision.id}`, "DELETE", null, "ended");
      status("ringing your phone…");
      answer = await act(`/api/calls/${interactionId}/supervision`, "POST", { mode, phone }, `${mode}: connected`);
    }
    if (answer) supervision = answer;
    showSupervision();
  }

  $("stop-supervision").addEventListener("click", async () => {
    if (supervision) await act(`/api/supervisions/${supervision.id}`, "DELETE", null, "ended");
    supervision = null;
    showSupervision();
  });
  $("supervising").addEventListener("submit", (event) => event.preventDefault());
  $("my-phone").value = localStorage.getItem("hilo-supervisor-phone") || "";

  function drawChannels() {
    const body = $("channels").tBodies[0];
    body.replaceChildren();
    for (const c of picture.channels) {
      const row = document.createElement("tr");
      row.dataset.channel = c.channel;
      cell(row, c.channel);
      cell(row, String(c.active), "active");
      cell(row, String(c.waiting), "waiting");
      cell(row, String(c.started_today), "started");
      cell(row, String(c.handled_today), "handled");
      cell(row, pct(c.service_level), "sl");
      cell(row, secs(c.asa_s), "asa");
      cell(row, String(c.abandoned), "abandoned");
      body.append(row);
    }
  }

  function drawAlerts() {
    const list = $("alerts");
    list.replaceChildren();
    const names = Object.fromEntries(picture.queues.map((q) => [q.queue, q.name]));
    for (const a of picture.alerts) {
      const li = document.createElement("li");
      li.dataset.queue = a.queue;
      li.dataset.kind = a.kind;
      const value = a.kind === "service_level" ? a.value + "%" : a.kind === "longest_wait" ? duration(a.value) : a.value;
      const limit =
        a.kind === "service_level" ? a.threshold + "%" : a.kind === "longest_wait" ? duration(a.threshold) : a.threshold;
      li.textContent = `${names[a.queue] || a.queue}: ${KIND_TEXT[a.kind] || a.kind} ${value} ` +
        `(threshold ${limit}) since ${new Date(a.raised_at).toLocaleTimeString()}`;
      list.append(li);
    }
  }

  function draw() {
    $("window").textContent = `(service level, ASA and abandoned: last ${picture.window_minutes} minutes)`;
    $("zone").textContent = picture.timezone;
    $("updated").textContent = new Date(picture.at).toLocaleTimeString();
    drawAlerts();
    drawQueues();
    if (supervision && !picture.agents.some((a) => a.interaction_id === supervision.interaction_id)) {
      supervision = null; // the call is over, and the supervision with it
      showSupervision();
    }
    drawAgents();
    drawWaiting();
    drawChannels();
  }

  // The clocks tick between pictures.
  setInterval(() => {
    if (!picture) return;
    for (const td of document.querySelectorAll("td.longest, td.in-state")) {
      if (!td.dataset.since) continue;
      const elapsed = since(td.dataset.since);
      td.textContent = duration(elapsed);
      if (td.classList.contains("longest") && td.dataset.limit !== "") {
        td.classList.toggle("over", elapsed > Number(td.dataset.limit));
      }
    }
  }, 1000);

  // -- the live feed ----------------------------------------------------------------------------
  function setLink(up) {
    $("link").textContent = up ? "live" : "reconnecting";
    $("link").className = "link " + (up ? "up" : "down");
  }

  function connect() {
    if (socket && socket.readyState <= WebSocket.OPEN) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/console/wallboard/ws`);
    socket.addEventListener("open", () => {
      attempts = 0;
      lastHeard = Date.now();
      setLink(true);
    });
    socket.addEventListener("message", (event) => {
      lastHeard = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      if (message.type === "hello") heartbeatMs = (message.heartbeat_s || 15) * 1000;
      if (message.type === "wallboard") {
        clockSkewMs = Date.parse(message.at) - Date.now();
        picture = message;
        draw();
      }
    });
    socket.addEventListener("close", (event) => {
      setLink(false);
      socket = null;
      if (event.code === 4001) {
        $("board").hidden = true;
        $("need-signin").hidden = false;
        return;
      }
      attempts += 1;
      const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(attempts, 6));
      setTimeout(connect, backoff / 2 + Math.random() * (backoff / 2));
    });
  }

  setInterval(() => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - lastHeard > 3 * heartbeatMs) socket.close();
    else socket.send("ping");
  }, 5000);

  start();
})();
