// The console's live layer: one WebSocket to /ws (the session cookie authenticates it), its
// events turned into htmx refetches of the inbox list or the open chat, at most one refetch
// per target every 300 ms however many events arrive, and the reply an agent is streaming
// shown as it forms. Also: the unread count in the title, opt-in browser notifications for
// chats that need a human, presence with names, and (in keys.js) the keyboard shortcuts and
// the canned-responses picker.
//
// Written against the `data-testid` hooks and ids, not the page's structure: the open chat is
// `body[data-chat-id]`, set by the page or by a `chat-opened` event (an htmx `HX-Trigger`
// whose detail is the chat id), and everything is looked up again when it is needed.
import { installKeys } from "./keys.js";

const body = document.body;
const page = body.dataset.page;
const COALESCE_MS = 300;
const LABELS = { open: "Live", connecting: "Connecting…", closed: "Offline" };

export function openChatId() {
  return body.dataset.chatId || null;
}

function setState(state) {
  const el = document.getElementById("connection-state");
  if (!el) return;
  el.dataset.state = state;
  el.textContent = LABELS[state];
}

// One call per key per COALESCE_MS, however many times it is asked for.
const pending = new Map();
function coalesce(key, run) {
  if (pending.has(key)) return;
  pending.set(key, setTimeout(() => { pending.delete(key); run(); }, COALESCE_MS));
}
function refresh(eventName) {
  coalesce(eventName, () => { if (window.htmx) window.htmx.trigger(body, eventName); });
}

// Once per burst of contact messages, however many arrive; the open row's badge goes at once
// (its own `chat_read` event then needs no refetch of the list).
function markRead() {
  coalesce("read", () => {
    const chatId = openChatId();
    if (!chatId || document.visibilityState === "hidden") return;
    fetch(`/chats/${encodeURIComponent(chatId)}/read`, {
      method: "POST", credentials: "same-origin",
    }).then((answer) => {
      if (!answer.ok) return;
      const row = document.querySelector(`[data-testid="chat-row"][data-chat-id="${chatId}"]`);
      const badge = row && row.querySelector('[data-testid="chat-unread"]');
      if (badge) badge.remove();
      if (row) row.classList.remove("unread");
    }).catch(() => {});
  });
}

async function getJSON(url) {
  const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!answer.ok) throw new Error(`${url}: ${answer.status}`);
  return answer.json();
}

// --- the unread count in the title ------------------------------------------------------------

let unread = 0;
const PREFIX = /^\(\d+\) /;
function applyTitle() {
  const base = document.title.replace(PREFIX, "");
  const title = unread > 0 ? `(${unread}) ${base}` : base;
  if (document.title !== title) document.title = title;
}
// The tabs' counts (for the list's channel filter, if any) and the title's unread count.
function showCounts(counts) {
  for (const [view, count] of Object.entries(counts)) {
    const el = document.getElementById(`inbox-count-${view}`);
    if (el && el.textContent !== String(count)) el.textContent = String(count);
  }
}
function refetchCounts() {
  coalesce("counts", () => {
    const filter = document.getElementById("inbox-channel");
    const channel = filter && filter.value;
    getJSON("/inbox/counts").then((counts) => {
      unread = Number(counts.unread) || 0;
      applyTitle();
      if (!channel) showCounts(counts);
    }).catch(() => {});
    if (channel) {
      getJSON(`/inbox/counts?channel_id=${encodeURIComponent(channel)}`)
        .then(showCounts).catch(() => {});
    }
  });
}

// --- notifications ----------------------------------------------------------------------------

const NOTIFY_KEY = "agenthub.notify";
const waiting = new Map(); // chat id -> needs_human_since already known (not to notify again)
let waitingSeeded = false;

function notifyOn() {
  return "Notification" in window && Notification.permission === "granted"
    && localStorage.getItem(NOTIFY_KEY) === "on";
}

function showNotifyState() {
  const button = document.getElementById("notify-toggle");
  if (!button) return;
  if (!("Notification" in window)) { button.hidden = true; return; }
  const on = notifyOn();
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "Notifications on" : "Notify me";
  button.title = on ? "Stop notifying me of chats that need a human"
    : "Notify me when a chat needs a human";
}

async function seedWaiting() {
  if (waitingSeeded || !notifyOn()) return;
  waitingSeeded = true;
  try {
    const answer = await getJSON("/inbox?view=needs_human&limit=200");
    for (const chat of answer.chats || []) waiting.set(chat.id, chat.needs_human_since);
  } catch { waitingSeeded = false; }
}

function onChatUpdated(event) {
  const chat = event.chat;
  if (!chat) return;
  const id = event.chat_id;
  if (!chat.needs_human) { waiting.delete(id); return; }
  const before = waiting.get(id);
  waiting.set(id, chat.needs_human_since);
  if (before === chat.needs_human_since || !notifyOn()) return;
  const name = chat.name || chat.external_id || "A contact";
  try {
    const note = new Notification(`${name} needs a human`, {
      tag: `needs-human-${id}`, body: chat.last_message || "",
    });
    note.addEventListener("click", () => {
      window.focus();
      location.assign(`/console/chats/${encodeURIComponent(id)}`);
    });
  } catch { /* a browser that only allows notifications from a service worker */ }
}

document.addEventListener("click", (click) => {
  const button = click.target.closest && click.target.closest("#notify-toggle");
  if (!button || !("Notification" in window)) return;
  if (notifyOn()) {
    localStorage.setItem(NOTIFY_KEY, "off");
    showNotifyState();
    return;
  }
  const enable = (permission) => {
    if (permission === "granted") localStorage.setItem(NOTIFY_KEY, "on");
    showNotifyState();
    seedWaiting();
  };
  if (Notification.permission === "granted") enable("granted");
  else Promise.resolve(Notification.requestPermission()).then(enable, () => {});
});

// --- presence with names ----------------------------------------------------------------------

let me = null; // the current user's id
let admin = null; // whether they may read other users (GET /auth/users/{id}); null: not known yet
const names = new Map(); // user id -> username, or null while asked, or "" for unknown
let lastPresence = null;

function nameOf(id) {
  if (admin === false) return names.get(id) || "";  // members: "Someone", and no 403s asked for
  if (admin === null) return "";
  if (!names.has(id)) {
    names.set(id, null);
    getJSON(`/auth/users/${encodeURIComponent(id)}`) // admins only: members get "Someone"
      .then((user) => names.set(id, user.username || ""), () => names.set(id, ""))
      .then(() => renderPresence());
  }
  return names.get(id) || "";
}

function phrase(ids, verb) {
  if (!ids.length) return "";
  const known = [];
  let others = 0;
  for (const id of ids) {
    const name = nameOf(id);
    if (name) known.push(name); else others += 1;
  }
  if (others) known.push(others === 1 ? (known.length ? "someone" : "Someone") : `${others} others`);
  const who = known.length > 1 ? `${known.slice(0, -1).join(", ")} and ${known.at(-1)}` : known[0];
  return `${who} ${ids.length > 1 ? "are" : "is"} ${verb}`;
}

function renderPresence() {
  const el = document.getElementById("presence");
  if (!el) return;
  const event = lastPresence;
  if (!event || event.chat_id !== openChatId()) { el.textContent = ""; return; }
  const typing = (event.typing || []).filter((id) => id !== me);
  const viewing = (event.viewing || []).filter((id) => id !== me && !typing.includes(id));
  el.textContent = [phrase(viewing, "viewing"), phrase(typing, "typing…")]
    .filter(Boolean).join(" · ");
}

// --- the reply an agent is streaming ----------------------------------------------------------

// One "forming" item per delivery at the end of the open chat's timeline, its text replaced at
// each `message_partial` (the whole reply so far): the events carry it, nothing is fetched. A
// timeline refetch wipes the items, and those still forming are put back. The agent's message
// ends its item (the refetch it causes shows the message instead), as does `agent_done`.
const partials = new Map(); // delivery id -> { agentId, text }

function agentLabel(agentId) {
  const name = document.querySelector(
    `[data-testid="panel-agent-${CSS.escape(agentId)}"] .agent-name`);
  return name ? `Agent ${name.textContent.trim()}` : "Agent";
}

function line(className, text) {
  const p = document.createElement("p");
  p.className = className;
  p.textContent = text;
  return p;
}

function showPartials() {
  for (const el of document.querySelectorAll('[data-testid="partial-reply"]')) {
    if (!partials.has(el.dataset.deliveryId)) el.remove();
  }
  const items = document.getElementById("timeline-items");
  const timeline = document.getElementById("timeline");
  if (!items || !timeline || !partials.size) return;
  const atBottom = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 40;
  for (const [id, { agentId, text }] of partials) {
    let el = items.querySelector(`.partial[data-delivery-id="${CSS.escape(id)}"]`);
    if (!el) {
      el = document.createElement("li");
      el.className = "item message from-agent partial";
      el.dataset.testid = "partial-reply";
      el.dataset.deliveryId = id;
      el.setAttribute("aria-busy", "true");
      const bubble = document.createElement("div");
      bubble.className = "bubble";
      bubble.append(line("sender", agentLabel(agentId)), line("content", ""),
        line("foot", "writing… · not sent yet"));
      el.append(bubble);
    }
    el.querySelector(".content").textContent = text;  // the agent's text: never markup
    if (el !== items.lastElementChild) items.append(el);
  }
  if (atBottom) scrollTimeline();
}

function onPartialEvent(event) {
  if (event.type === "message_partial" && typeof event.text === "string") {
    partials.set(event.delivery_id, { agentId: event.agent_id, text: event.text });
    showPartials();
  } else if (event.type === "new_message" && event.sender_type === "AGENT") {
    // Left in the page until the timeline refetch puts the message in its place.
    const sender = event.message && event.message.sender_id;
    for (const [id, partial] of partials) if (partial.agentId === sender) partials.delete(id);
  } else if (event.type === "agent_done" && partials.delete(event.delivery_id)) {
    showPartials();  // no message came (a handoff, a failure, a retry to come): gone at once
  }
}

// --- events -----------------------------------------------------------------------------------

const CHAT_EVENTS = new Set(["new_message", "message_status", "note_created", "chat_updated"]);
const COUNT_EVENTS = new Set(["new_message", "chat_read", "chat_updated"]);
let working = 0;

function showWorking() {
  const el = document.getElementById("agent-working");
  if (el) el.hidden = working === 0;
}

function onEvent(event) {
  if (COUNT_EVENTS.has(event.type)) refetchCounts();
  if (event.type === "chat_updated") onChatUpdated(event);
  const ownRead = event.type === "chat_read" && event.chat_id === openChatId();
  if (COUNT_EVENTS.has(event.type) && !ownRead && document.getElementById("inbox-list")) {
    refresh("inbox-refresh");
  }
  const chatId = openChatId();
  if (!chatId || event.chat_id !== chatId) return;
  if (CHAT_EVENTS.has(event.type)) refresh("timeline-refresh");
  if (event.type === "chat_updated") {
    refresh("header-refresh");
    refresh("composer-refresh");
  }
  if (event.type === "new_message" && event.sender_type === "CONTACT") markRead();
  onPartialEvent(event);
  if (event.type === "agent_working" || event.type === "agent_done") {
    working = Math.max(0, working + (event.type === "agent_working" ? 1 : -1));
    showWorking();
  }
  if (event.type === "presence") {
    lastPresence = event;
    renderPresence();
  }
}

let socket = null;
// The page's own starting point: events after it are replayed on the first connection too.
let lastEventId = /^\d+$/.test(document.body.dataset.lastEventId || "")
  ? Number(document.body.dataset.lastEventId) : null;
let delay = 500;
let everOpen = false;

// After a reconnect: whatever was missed (the hub may have restarted, and its event history
// with it) is fetched again rather than replayed.
function catchUp() {
  partials.clear();  // a stream still going shows again with its next event
  for (const name of ["inbox-refresh", "timeline-refresh", "header-refresh", "composer-refresh",
    "panel-refresh"]) refresh(name);
}
let viewingTimer = null;

function startViewing() {
  clearInterval(viewingTimer);
  const chatId = openChatId();
  if (!chatId) return;
  const viewing = () => send({ type: "viewing", chat_id: openChatId() });
  viewing();
  viewingTimer = setInterval(viewing, 15000);
}

function connect() {
  setState("connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = lastEventId === null ? "" : `?last_event_id=${lastEventId}`;
  socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  socket.addEventListener("open", () => {
    delay = 500;
    setState("open");
    startViewing();
    refetchCounts();
    if (everOpen) catchUp();
    everOpen = true;
  });
  socket.addEventListener("message", (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    if (typeof event.event_id === "number") lastEventId = event.event_id;
    onEvent(event);
  });
  socket.addEventListener("close", (close) => {
    clearInterval(viewingTimer);
    setState("closed");
    if (close.code === 1008) { location.assign("/console/login"); return; }
    setTimeout(connect, delay + Math.random() * delay / 2);
    delay = Math.min(delay * 2, 15000);
  });
}

export function send(command) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(command));
}

// A chat opened in place (htmx): `HX-Trigger: {"chat-opened": "cht_…"}`.
function chatIdOf(detail) {
  if (typeof detail === "string") return detail;
  if (detail && typeof detail === "object") {
    for (const key of ["value", "chat_id", "chatId", "id"]) {
      if (typeof detail[key] === "string") return detail[key];
    }
  }
  return null;
}
function opened(chatId) {
  if (!chatId || chatId === openChatId()) return;
  body.dataset.chatId = chatId;
  // As the page showed it when the chat opened (a delivery in flight then), kept by events.
  const shown = document.getElementById("agent-working");
  working = shown && !shown.hidden ? 1 : 0;
  lastPresence = null;
  partials.clear();
  showPartials();
  showWorking();
  renderPresence();
  startViewing();
  markRead();
}
body.addEventListener("chat-opened", (event) => opened(chatIdOf(event.detail)));
// Without the event: the chat now in the page (`#chat[data-chat-id]`) is the open one.
function syncOpenChat() {
  const chat = document.querySelector("#chat[data-chat-id]");
  if (chat) { opened(chat.dataset.chatId); return; }
  if (openChatId() && document.getElementById("chat-pane")) {  // the pane was emptied
    delete body.dataset.chatId;
    clearInterval(viewingTimer);
    lastPresence = null;
    partials.clear();
  }
}
export function closeChat() {
  const close = document.querySelector('[data-testid="chat-close"], [data-testid="back-to-list"]');
  if (close) { close.click(); return; }
  location.assign("/console");
}

// --- the composer (looked up at each event: htmx may swap it in with a chat) -----------------

let lastTyping = 0;
document.addEventListener("input", (input) => {
  if (input.target.id !== "composer-input") return;
  const form = input.target.form;
  const now = Date.now();
  if (now - lastTyping > 2000 && !(form && form.elements.note && form.elements.note.checked)) {
    lastTyping = now;
    send({ type: "typing", chat_id: openChatId() });
  }
});
body.addEventListener("htmx:afterRequest", (done) => {
  const form = done.detail.elt;
  if (!form || form.id !== "composer" || !done.detail.successful) return;
  const error = document.getElementById("composer-error");
  if (error) error.replaceChildren();
  form.reset();
  const input = document.getElementById("composer-input");
  if (input) input.focus();
  scrollTimeline();
});

function scrollTimeline() {
  const timeline = document.getElementById("timeline");
  if (timeline) timeline.scrollTop = timeline.scrollHeight;
}
// A live refresh keeps the reader where they were, unless they were at the newest item; older
// items put on top (scrolling back) keep the items in view where they were.
let kept = null;
// A send the hub refused with an explanation for the operator (the chat's 24-hour window is
// closed): the answer names where it goes (HX-Retarget: the composer's error line) and is
// shown there; the request still counts as failed, so what was written stays in the input.
body.addEventListener("htmx:beforeSwap", (swap) => {
  const xhr = swap.detail.xhr;
  if (!xhr || xhr.status !== 409 || !xhr.getResponseHeader("HX-Retarget")) return;
  if (swap.detail.requestConfig && swap.detail.requestConfig.elt
      && swap.detail.requestConfig.elt.id === "composer") swap.detail.shouldSwap = true;
});
body.addEventListener("htmx:beforeSwap", (swap) => {
  const timeline = document.getElementById("timeline");
  const target = swap.detail.target;
  if (!timeline || !target || !(target === timeline || target.id === "timeline-older")) return;
  kept = {
    older: target.id === "timeline-older",
    atBottom: timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 40,
    top: timeline.scrollTop,
    height: timeline.scrollHeight,
  };
});
body.addEventListener("htmx:afterSettle", (settle) => {
  const timeline = document.getElementById("timeline");
  if (settle.detail.target && settle.detail.target.id === "chat-pane") scrollTimeline();
  if (!kept || !timeline) return;
  const { older, atBottom, top, height } = kept;
  kept = null;
  if (older) timeline.scrollTop = top + (timeline.scrollHeight - height);
  else if (atBottom) scrollTimeline();
  else timeline.scrollTop = top;
});
// The composer says so when an agent handles the chat: what is written there is a note.
function composerMode() {
  const input = document.getElementById("composer-input");
  if (!input) return;
  const agent = document.querySelector('[data-testid="composer-agent-notice"]');
  input.placeholder = agent ? "Private note (an agent is handling this chat)"
    : "Reply to the contact (Enter sends, Shift+Enter: new line)";
}
body.addEventListener("htmx:afterSettle", (settle) => {
  syncOpenChat(); applyTitle(); renderPresence(); composerMode();
  const target = settle.detail.target;
  if (target && ["timeline", "timeline-items", "chat-pane"].includes(target.id)) showPartials();
});
// The tabs count the chats of the channel chosen in the filter.
document.addEventListener("change", (change) => {
  if (change.target && change.target.id === "inbox-channel") refetchCounts();
});

if (page !== "login") {  // the login page has no session to open a socket with
  const shown = document.getElementById("agent-working");
  working = shown && !shown.hidden ? 1 : 0;
  setState("connecting");
  showNotifyState();
  scrollTimeline();
  composerMode();
  markRead();
  refetchCounts();
  getJSON("/auth/me").then((user) => {
    me = user.id;
    admin = user.role === "ADMIN";
    names.set(user.id, user.username);
    renderPresence();
  }).catch(() => {});
  seedWaiting();
  installKeys({ openChatId, closeChat, send });
  connect();
}
