// The supervisor wallboard: the server pushes a picture of queues, agents, channels and open alerts over a
// WebSocket whenever it changes; this page counts waiting and in-state times itself from the instants it
// was given (corrected by the server's clock). Everything shown goes through textContent, never HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KIND_TEXT = { waiting: "waiting", longest_wait: "longest wait", service_level: "service level" };

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
    const me = await window.hilo.signedInAs(["supervisor", "admin"]);
    if (!me) {
      $("need-signin").hidden = false;
      return;
    }
    $("who").hidden = false;
    $("who-name").textContent = `${me.username} (${me.role})`;
    $("board").hidden = false;
    showFilter();
    subscribe();
  }

  // -- drawing ----------------------------------------------------------------------------------
  function over(value, limit, below = false) {
    if (value === null || value === undefined || limit === null || limit === undefined) return false;
    return below ? value < limit : value > limit;
  }

  // Queue rows, or (grouped by team or channel) a subtotal row per group followed by its queues.
  function drawQueues() {
    const body = $("queues").tBodies[0];
    body.replaceChildren();
    if (!picture.queue_groups) {
      for (const q of picture.queues) body.append(queueRow(q));
      return;
    }
    for (const g of picture.queue_groups) {
      body.append(groupRow(g));
      for (const q of g.queues) {
        const row = queueRow(q);
        row.dataset.group = g.group;
        row.classList.add("in-group");
        body.append(row);
      }
    }
  }

  function groupRow(g) {
    const t = g.totals;
    const row = document.createElement("tr");
    row.className = "group";
    row.dataset.group = g.group;
    cell(row, g.label, "name");
    cell(row, String(t.waiting), "waiting");
    const waitCell = cell(row, t.waiting ? duration(since(t.oldest_queued_at)) : "–", "longest");
    waitCell.dataset.since = t.oldest_queued_at || "";
    waitCell.dataset.limit = ""; // thresholds are per queue
    cell(row, pct(t.service_level), "sl");
    cell(row, secs(t.asa_s), "asa");
    cell(row, String(t.abandoned), "abandoned");
    cell(row, String(t.agents.available || 0), "available");
    cell(row, String((t.agents.busy || 0) + (t.agents.ringing || 0)), "busy");
    cell(row, String(t.agents.wrapup || 0), "wrapup");
    cell(row, String(t.agents.away || 0), "away");
    return row;
  }

  function queueRow(q) {
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
    return row;
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
    const result = await window.hilo.api(url, method, body ?? undefined);
    if (!result.ok) {
      status(window.hilo.reasonOf(result), true);
      return null;
    }
    status(done);
    return result.data || {};
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
    const slot = picture.slot === "window" ? `the last ${picture.window_minutes} minutes` : filterNames.slot[picture.slot];
    $("window").textContent = `(service level, ASA and abandoned: ${slot})`;
    showChoices(picture.choices);
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

  // -- filters: kept in the page's URL, so a filtered board can be bookmarked or shared ---------------
  const FILTER_KEYS = ["channel", "queue", "team", "slot", "group"];
  const FILTER_DEFAULTS = { slot: "window", group: "none" };
  const filterNames = { slot: { "15m": "the last 15 minutes", "1h": "the last hour", today: "today" } };
  let shownChoices = "";

  function urlValues(key) {
    return (new URLSearchParams(location.search).get(key) || "").split(",").filter(Boolean);
  }

  function filterQuery() {
    const kept = new URLSearchParams();
    for (const key of FILTER_KEYS) if (urlValues(key).length) kept.set(key, urlValues(key).join(","));
    const text = kept.toString();
    return text ? "?" + text : "";
  }

  // The form as the URL says: on load, and again when the queue and team choices arrive.
  function showFilter() {
    for (const key of FILTER_KEYS) {
      const select = $("f-" + key);
      const wanted = urlValues(key);
      for (const value of wanted) {
        if (![...select.options].some((o) => o.value === value)) select.append(new Option(value, value));
      }
      for (const option of select.options) option.selected = wanted.includes(option.value);
      if (!select.multiple && !wanted.length) select.selectedIndex = 0;
    }
  }

  // The queues and teams this supervisor may pick, from the server (their teams' only, if they have some).
  function showChoices(choices) {
    const text = JSON.stringify(choices);
    if (text === shownChoices) return;
    shownChoices = text;
    $("f-queue").replaceChildren(...choices.queues.map((q) => new Option(q.name, q.id)));
    $("f-team").replaceChildren(new Option("all", ""), ...choices.teams.map((t) => new Option(t, t)));
    showFilter();
  }

  function setFilter(params) {
    const text = params.toString();
    history.replaceState(null, "", location.pathname + (text ? "?" + text : ""));
    showFilter();
    subscribe();
  }

  $("filters").addEventListener("change", () => {
    const params = new URLSearchParams(location.search);
    for (const key of FILTER_KEYS) {
      const values = [...$("f-" + key).selectedOptions].map((o) => o.value).filter(Boolean);
      if (values.length && values.join(",") !== FILTER_DEFAULTS[key]) params.set(key, values.join(","));
      else params.delete(key);
    }
    setFilter(params);
  });
  $("f-clear").addEventListener("click", () => setFilter(new URLSearchParams()));
  $("filters").addEventListener("submit", (event) => event.preventDefault());

  // -- the live feed ----------------------------------------------------------------------------
  // The filter travels in the socket's query string (the server filters), so reconnects keep it; a new
  // filter is a new feed.
  let feed = null;
  let feedNumber = 0;
  function subscribe() {
    if (feed) feed.close();
    const mine = ++feedNumber;
    feed = window.hilo.liveFeed("/console/wallboard/ws" + filterQuery(), {
      onMessage(message) {
        if (message.type !== "wallboard" || mine !== feedNumber) return;
        clockSkewMs = Date.parse(message.at) - Date.now();
        picture = message;
        draw();
      },
      onSignedOut() {
        $("board").hidden = true;
        $("need-signin").hidden = false;
      },
    });
    feed.open();
  }

  start();
})();
