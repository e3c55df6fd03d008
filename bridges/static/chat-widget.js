// The web chat widget: one WebSocket to /chat/ws (bridges/webchat.py), the visitor's token kept in
// localStorage. A message shows as pending until the server acknowledges it (stored); unacknowledged
// ones are sent again, with the same id, after a reconnect. Replies are acknowledged as delivered once shown.
"use strict";
(function () {
  const KEY = "hilo-webchat-token";
  const thread = document.getElementById("thread");
  const choicesBox = document.getElementById("choices");
  const statusBox = document.getElementById("status");
  const form = document.getElementById("composer");
  const input = document.getElementById("text");
  const site = new URLSearchParams(location.search).get("site") || "web";
  const unacked = new Map(); // client id -> {frame, li}
  const shown = new Set(); // reply ids already on screen
  let ws = null;
  let retry = 500;

  function add(text, who, extra) {
    const li = document.createElement("li");
    li.className = who + (extra ? " " + extra : "");
    li.textContent = text;
    thread.appendChild(li);
    thread.scrollTop = thread.scrollHeight;
    return li;
  }

  function showChoices(choices) {
    choicesBox.replaceChildren();
    for (const c of choices || []) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = c.title;
      b.addEventListener("click", () => send(c.title, c.id));
      choicesBox.appendChild(b);
    }
  }

  function send(text, choiceId) {
    const id = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/[^A-Za-z0-9_-]/g, "");
    const frame = { type: "message", id: id.slice(0, 64), text: text, choice_id: choiceId || null };
    unacked.set(frame.id, { frame: frame, li: add(text, "me", "pending") });
    showChoices([]);
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(scheme + "//" + location.host + "/chat/ws?site=" + encodeURIComponent(site));
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "hello", token: localStorage.getItem(KEY) }));
    });
    ws.addEventListener("message", (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "welcome") {
        localStorage.setItem(KEY, msg.token);
        statusBox.textContent = "online";
        retry = 500;
        for (const { frame } of unacked.values()) ws.send(JSON.stringify(frame));
      } else if (msg.type === "ack") {
        const item = unacked.get(msg.id);
        if (item) { item.li.classList.remove("pending"); unacked.delete(msg.id); }
      } else if (msg.type === "message") {
        if (!shown.has(msg.id)) {
          shown.add(msg.id);
          add(msg.text, "them");
          showChoices(msg.choices);
        }
        ws.send(JSON.stringify({ type: "delivered", ids: [msg.id] }));
      } else if (msg.type === "error") {
        const item = msg.id && unacked.get(msg.id);
        if (item && msg.field === "store") {
          // not stored while the store is away: stays pending, sent again with the same id when the server says
          setTimeout(() => { if (unacked.has(msg.id) && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(item.frame)); }, msg.retry_after * 1000);
        } else if (item) { item.li.classList.remove("pending"); item.li.textContent += " (not sent: " + msg.reason + ")"; unacked.delete(msg.id); }
        // a refused connection (rate limit): wait as long as the server says before reconnecting
        if (!msg.id && msg.retry_after) { statusBox.textContent = msg.reason; retry = msg.retry_after * 1000; }
      }
    });
    ws.addEventListener("close", () => {
      statusBox.textContent = "reconnecting…";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    });
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (text) send(text, null);
    input.value = "";
  });
  connect();
})();
