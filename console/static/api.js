// What every console page shares to talk to the server: JSON requests with the session cookie, the error
// text of a refused request, and a live feed over a WebSocket that reconnects by itself. Loaded before
// the page's own scripts, it defines `window.hilo`. Everything shown goes through textContent, never HTML.
"use strict";

(() => {
  const MAX_BACKOFF_MS = 30000;

  // A JSON request as the signed-in user: {status, ok, data}, data null when the answer was not JSON.
  async function api(path, method = "GET", body = undefined) {
    const response = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return { status: response.status, ok: response.ok, data };
  }

  // Why a request was refused: the field named by the server, if any, and its reason.
  function reasonOf(result) {
    const data = result.data || {};
    return (data.field ? data.field + ": " : "") + (data.reason || "error " + result.status);
  }

  // The signed-in user when their role is one of `roles`, else null.
  async function signedInAs(roles) {
    const result = await api("/console/api/me");
    return result.ok && result.data && roles.includes(result.data.role) ? result.data : null;
  }

  function item(tag, text, className) {
    const node = document.createElement(tag);
    node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "";
  }

  // The live feed at `path`: every message parsed and passed to `onMessage`; the page's #link shows whether
  // it is up. A closed socket reconnects with a growing, jittered back-off (not every console at once),
  // except when the server ended the session (4001: `onSignedOut`) or the page called `close()`.
  function liveFeed(path, { onMessage, onSignedOut }) {
    let socket = null;
    let attempts = 0; // failed connections in a row, for the back-off
    let lastHeard = 0; // when the server last said anything
    let heartbeatMs = 15000;
    let stayClosed = false;

    function setLink(up) {
      const link = document.getElementById("link");
      link.textContent = up ? "live" : "reconnecting";
      link.className = "link " + (up ? "up" : "down");
    }

    function connect() {
      if (socket && socket.readyState <= WebSocket.OPEN) return;
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(`${scheme}//${location.host}${path}`);
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
        onMessage(message);
      });
      socket.addEventListener("close", (event) => {
        setLink(false);
        socket = null;
        if (event.code === 4001) return onSignedOut();
        if (stayClosed) return;
        attempts += 1;
        const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(attempts, 6));
        setTimeout(connect, backoff / 2 + Math.random() * (backoff / 2));
      });
    }

    // A server that went silent (no heartbeat for three periods) is taken as gone: drop and reconnect.
    function checkAlive() {
      if (!socket || socket.readyState !== WebSocket.OPEN) return;
      if (Date.now() - lastHeard > 3 * heartbeatMs) socket.close();
      else socket.send("ping");
    }

    let alive = null; // the heartbeat check's timer, while the feed is wanted
    return {
      open() {
        stayClosed = false;
        if (alive === null) alive = setInterval(checkAlive, 5000);
        connect();
      },
      close() {
        stayClosed = true;
        if (alive !== null) clearInterval(alive);
        alive = null;
        if (socket) socket.close();
      },
    };
  }

  // Who did it, for people to read: an actor (kind:name@door, hilo/audit.py) shown by its name, the API
  // token as "API (role)"; anything else (the bot) as it is.
  function actorShown(actor) {
    const found = /^(user|token|login|system|unknown):([^@:]+)@[a-z]+$/.exec(actor || "");
    if (!found) return actor || "";
    let name = found[2];
    try {
      name = decodeURIComponent(name);
    } catch (_) {
      // shown encoded
    }
    return found[1] === "token" ? `API (${name})` : name;
  }

  window.hilo = { api, reasonOf, signedInAs, item, when, liveFeed, actorShown };
})();
