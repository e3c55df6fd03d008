// The transfer buttons of the agent console: hand the call shown in the pop to another agent or queue,
// blind or after consulting the agent (then complete or cancel), through /api/calls/{id}/transfer
// (console/transfers.py). It follows the console's live feed (agent.js re-dispatches every message as a
// "hilo:feed" event) and shows the transfers the call already went through, with their notes.
// Everything shown goes through textContent, never HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const { api, reasonOf } = window.hilo;
  let shown = null; // interaction id of the call in the pop

  function say(text, isError) {
    $("transfer-status").textContent = text;
    $("transfer-status").className = isError ? "error" : "muted";
  }

  function consulting(on) {
    $("transfer-complete").hidden = !on;
    $("transfer-cancel").hidden = !on;
    $("transfer-go").disabled = on;
  }

  function showPop(pop) {
    shown = pop.interaction_id;
    $("transfer").hidden = false;
    consulting(false);
    say("", false);
    const list = $("transfer-history");
    list.replaceChildren();
    for (const t of pop.transfers || []) {
      const li = document.createElement("li");
      li.textContent = `${t.kind} from ${t.from_agent} to ${t.to_agent || t.to_queue}` + (t.note ? `: ${t.note}` : "");
      list.appendChild(li);
    }
  }

  document.addEventListener("hilo:feed", (event) => {
    if (event.detail && event.detail.type === "screenpop") showPop(event.detail);
  });

  $("transfer-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!shown) return;
    const target = $("transfer-target").value.trim();
    const body = { kind: $("transfer-kind").value, note: $("transfer-note").value.trim() || null };
    body[$("transfer-to").value === "queue" ? "to_queue" : "to_agent"] = target;
    say(body.kind === "attended" ? "ringing " + target + "…" : "transferring…", false);
    const result = await api(`/api/calls/${shown}/transfer`, "POST", body);
    if (!result.ok) {
      say(reasonOf(result), true);
      return;
    }
    if ((result.data || {}).state === "consulting") {
      consulting(true);
      say("talking with " + target + " (the caller is on hold)", false);
    } else {
      say("transferred", false);
    }
  });

  async function finish(action) {
    const result = await api(`/api/calls/${shown}/transfer/${action}`, "POST");
    consulting(!result.ok);
    say(result.ok ? (action === "complete" ? "transferred" : "the caller is back with you") : reasonOf(result), !result.ok);
  }

  $("transfer-complete").addEventListener("click", () => finish("complete"));
  $("transfer-cancel").addEventListener("click", () => finish("cancel"));
})();
