// The chat pane of the agent console: the agent's SMS, WhatsApp and web chat conversations beside calls.
// It follows the console's live feed (agent.js re-dispatches every message as a "hilo:feed" event) and
// talks to /console/api/chats (console/chat.py). Everything shown goes through textContent, never HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const { api, reasonOf, item, when, actorShown } = window.hilo;
  let selected = null; // interaction id of the conversation shown

  function windowText(window) {
    if (!window) return "";
    if (window.open) return "WhatsApp window open until " + when(window.closes_at);
    return window.closes_at ? "WhatsApp window closed at " + when(window.closes_at) + ": templates only" : "WhatsApp window never opened";
  }

  async function refreshList() {
    const result = await api("/console/api/chats");
    if (!result.ok) return;
    const list = $("chat-list");
    list.replaceChildren();
    if (result.data.chats.length === 0) list.append(item("li", "No conversation offered.", "muted"));
    for (const chat of result.data.chats) {
      const li = document.createElement("li");
      const button = item("button", `${chat.customer_name || "Unknown customer"} · ${chat.channel} · ${chat.state}`);
      button.type = "button";
      button.addEventListener("click", () => show(chat.interaction_id));
      li.append(button);
      list.append(li);
    }
    if (selected === null && result.data.chats.length > 0) show(result.data.chats[0].interaction_id);
  }

  function line(event) {
    const data = event.data || {};
    const incoming = event.type === "message.received";
    const who = incoming ? "customer" : actorShown(data.by) || "bot";
    let text = `${when(event.at)} · ${who}: ${data.text || (data.choice_id ? "[" + data.choice_id + "]" : "")}`;
    if (event.type === "message.failed") text = `${when(event.at)} · not sent: ${data.reason}`;
    const delivery = event.delivery;
    if (delivery) text += delivery.state === "failed" ? ` (failed: ${delivery.reason || delivery.error_code})` : ` (${delivery.state})`;
    const failed = event.type === "message.failed" || (delivery && delivery.state === "failed");
    return item("li", text, failed ? "failed" : incoming ? "in" : "out");
  }

  async function show(interactionId) {
    selected = interactionId;
    const result = await api(`/console/api/chats/${encodeURIComponent(interactionId)}`);
    if (!result.ok) {
      $("chat-error").textContent = reasonOf(result);
      return;
    }
    const chat = result.data;
    $("chat-card").hidden = false;
    $("chat-title").textContent = `${chat.customer_name || "Unknown customer"} (${chat.channel})`;
    $("chat-state").textContent = chat.state;
    $("chat-window").textContent = windowText(chat.window);
    $("chat-window").hidden = !chat.window;
    $("chat-thread").replaceChildren(...chat.thread.map(line));
    $("chat-thread").scrollTop = $("chat-thread").scrollHeight;
    $("chat-accept").hidden = chat.state !== "offered";
    const mine = chat.state === "agent";
    $("chat-handback").hidden = !mine;
    $("chat-close").hidden = !mine;
    $("chat-reply").hidden = !mine;
    $("chat-error").textContent = "";
  }

  async function act(action, body) {
    if (!selected) return;
    const result = await api(`/console/api/chats/${encodeURIComponent(selected)}/${action}`, "POST", body);
    if (!result.ok) {
      $("chat-error").textContent = reasonOf(result);
      return false;
    }
    await show(selected);
    await refreshList();
    return true;
  }

  $("chat-accept").addEventListener("click", () => act("accept"));
  $("chat-handback").addEventListener("click", () => act("handback"));
  $("chat-close").addEventListener("click", () => act("close"));
  $("chat-reply").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("chat-text").value.trim();
    if (!text) return;
    if (await act("reply", { text })) $("chat-text").value = "";
  });

  document.addEventListener("hilo:feed", (event) => {
    const message = event.detail;
    if (message.type === "hello") refreshList();
    if (message.type === "chat.state" || (message.type === "screenpop" && message.call.channel !== "voice")) refreshList();
    if ((message.type === "chat.message" || message.type === "chat.state") && message.interaction_id === selected) show(selected);
  });
})();
