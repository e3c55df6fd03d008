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
      body.append(row);
    }
  }

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
    drawAgents();
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
