// The agent console page: sign-in, the agent's own state, the live screen-pop over the feed (api.js),
// and the wrap-up form. Everything shown goes through textContent, never HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const { api, reasonOf, item, when, actorShown } = window.hilo;

  let me = null; // what /console/api/me said
  let current = null; // the interaction the pop shows

  function fill(list, entries, empty) {
    list.replaceChildren();
    if (entries.length === 0) list.append(item("li", empty, "muted"));
    for (const entry of entries) list.append(entry);
  }

  function pairs(dl, object) {
    dl.replaceChildren();
    for (const [key, value] of Object.entries(object)) {
      if (value === null || value === undefined || value === "") continue;
      dl.append(item("dt", key));
      dl.append(item("dd", typeof value === "object" ? JSON.stringify(value) : String(value)));
    }
  }

  // -- signing in and out -----------------------------------------------------------------------
  function showSignin(message) {
    feed.close();
    me = null;
    $("desk").hidden = true;
    $("who").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
  }

  async function start() {
    const result = await api("/console/api/me");
    if (result.ok) signedIn(result.data);
    else showSignin();
  }

  function options(select, choices) {
    select.replaceChildren();
    for (const choice of choices) {
      const option = item("option", choice.label);
      option.value = choice.id;
      select.append(option);
    }
  }

  function signedIn(data) {
    me = data;
    $("signin").hidden = true;
    $("desk").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = `${me.username} (${me.role}${me.agent_id ? ", agent " + me.agent_id : ""})`;
    options($("away-reason"), me.away_reasons);
    options($("disposition"), me.dispositions);
    $("note").maxLength = me.note_max_length;
    $("state-form").hidden = !me.agent_id;
    showState(me.state, me.away_reason);
    feed.open();
  }

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await api("/console/api/login", "POST", {
      username: $("username").value,
      password: $("password").value,
    });
    $("password").value = "";
    if (result.ok) await start();
    else $("signin-error").textContent = reasonOf(result);
  });

  $("signout").addEventListener("click", async () => {
    await api("/console/api/logout", "POST");
    showSignin("Signed out.");
  });

  // -- my state ---------------------------------------------------------------------------------
  function showState(state, reason) {
    if (state && ["available", "away", "offline"].includes(state)) $("state").value = state;
    $("away-reason-label").hidden = $("state").value !== "away";
    $("state-now").textContent = state ? "now: " + state + (reason ? " (" + reason + ")" : "") : "";
  }

  $("state").addEventListener("change", () => {
    $("away-reason-label").hidden = $("state").value !== "away";
  });

  $("state-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const state = $("state").value;
    const body = state === "away" ? { state, reason: $("away-reason").value } : { state };
    const result = await api("/console/api/me/state", "POST", body);
    $("state-error").textContent = result.ok ? "" : reasonOf(result);
    if (result.ok) showState(result.data.state, result.data.away_reason);
  });

  // -- the live feed ----------------------------------------------------------------------------
  const feed = window.hilo.liveFeed("/console/ws", {
    onMessage(message) {
      if (message.type === "screenpop") showPop(message);
      // The chat and transfer panes (chat.js, transfer.js) follow the same feed.
      document.dispatchEvent(new CustomEvent("hilo:feed", { detail: message }));
    },
    onSignedOut: () => showSignin("Your session ended. Please sign in again."),
  });

  // -- the pop ----------------------------------------------------------------------------------
  function showPop(pop) {
    if (me && me.role === "agent" && pop.agent_id !== me.agent_id) return;
    // The same call's pop again (e.g. the caller was identified after it began): what the agent typed stays.
    const again = current === pop.interaction_id;
    current = pop.interaction_id;
    const customer = pop.customer;
    $("pop-empty").hidden = true;
    $("pop-card").hidden = false;
    $("pop-card").dataset.interaction = pop.interaction_id;
    $("pop-customer-name").textContent = customer.name || (customer.identifying ? "Identifying the caller…" : "Unknown caller");
    $("pop-verified").textContent = customer.verified
      ? "verified" + (customer.verified_by ? " (" + customer.verified_by + ")" : "")
      : "not verified" + (customer.identified_by ? ": identified by " + customer.identified_by.replace("_", " ") : "");
    $("pop-verified").className = "badge " + (customer.verified ? "verified" : "unverified");
    $("pop-new").hidden = !customer.new;
    pairs($("pop-call"), {
      "Caller number": pop.call.caller_number,
      Dialled: pop.call.dialed,
      Queue: pop.call.queue,
      Channel: pop.call.channel,
      Offered: when(pop.offered_at),
      Agent: me && me.role !== "agent" ? pop.agent_id : null,
    });
    fill(
      $("pop-identities"),
      customer.identities.map((i) => item("li", `${i.kind}: ${i.value}`)),
      "none",
    );
    fill(
      $("pop-ivr-path"),
      pop.ivr.path.map((step) => item("li", (step.node ? step.node + ": " : "") + step.summary)),
      "no IVR steps",
    );
    pairs($("pop-variables"), pop.ivr.variables);
    if (Object.keys(pop.ivr.variables).length === 0) $("pop-variables").append(item("dd", "nothing", "muted"));
    fill(
      $("pop-history"),
      pop.history.map((h) =>
        item("li", `${when(h.started_at)} · ${h.channel} ${h.direction} · ${h.outcome || "open"}` +
          (h.disposition ? ` · ${h.disposition}` : "") + (h.agent_id ? ` · ${h.agent_id}` : "")),
      ),
      "no earlier interactions",
    );
    fill(
      $("pop-messages"),
      (pop.messages || []).map((m) =>
        item("li", `${when(m.at)} · ${m.channel} · ${m.direction === "in" ? "customer" : actorShown(m.by)}: ${m.text || ""}`,
          m.direction === "in" ? "in" : "out"),
      ),
      "no messages",
    );
    fill(
      $("pop-cases"),
      pop.open_cases.map((c) => item("li", `${c.subject} (${c.status})`)),
      "no open cases",
    );
    if (again) return;
    $("hold-form").hidden = false;
    $("hold-status").textContent = "";
    $("wrapup").hidden = false;
    $("wrapup-result").textContent = "";
    $("note").value = "";
    $("wrapup-submit").disabled = false;
  }

  $("wrapup").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!current) return;
    $("wrapup-submit").disabled = true;
    const result = await api(`/console/api/interactions/${encodeURIComponent(current)}/wrapup`, "POST", {
      disposition: $("disposition").value,
      note: $("note").value,
    });
    $("wrapup-result").textContent = result.ok ? "Wrap-up saved." : reasonOf(result);
    $("wrapup-submit").disabled = result.ok;
  });

  // Hold: the caller hears music and leaves the conversation until taken back (call.held / call.unheld).
  for (const [button, action, done] of [["hold", "hold", "The caller is on hold."], ["unhold", "unhold", "The caller is back."]]) {
    $(button).addEventListener("click", async () => {
      if (!current) return;
      const result = await api(`/api/calls/${encodeURIComponent(current)}/${action}`, "POST");
      $("hold-status").textContent = result.ok ? done : reasonOf(result);
    });
  }

  start();
})();
