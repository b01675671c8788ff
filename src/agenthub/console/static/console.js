// The console's live layer: one WebSocket to /ws (the session cookie authenticates it), its
// events turned into htmx refetches of the inbox list or the open chat, at most one refetch
// per target every 300 ms however many events arrive.
const body = document.body;
const chatId = body.dataset.chatId || null;
const page = body.dataset.page;
const stateEl = document.getElementById("connection-state");
const COALESCE_MS = 300;
const LABELS = { open: "Live", connecting: "Connecting…", closed: "Offline" };

function setState(state) {
  if (!stateEl) return;
  stateEl.dataset.state = state;
  stateEl.textContent = LABELS[state];
}

const pending = new Map();
function refresh(eventName) {
  if (pending.has(eventName)) return;
  pending.set(eventName, setTimeout(() => {
    pending.delete(eventName);
    if (window.htmx) window.htmx.trigger(body, eventName);
  }, COALESCE_MS));
}

function markRead() {
  if (!chatId || document.visibilityState === "hidden") return;
  fetch(`/chats/${encodeURIComponent(chatId)}/read`, {
    method: "POST", credentials: "same-origin",
  }).catch(() => {});
}

const CHAT_EVENTS = new Set(["new_message", "message_status", "note_created", "chat_updated"]);
let working = 0;
function onEvent(event) {
  if (page === "inbox") {
    if (["new_message", "chat_updated", "chat_read"].includes(event.type)) refresh("inbox-refresh");
    return;
  }
  if (!chatId || event.chat_id !== chatId) return;
  if (CHAT_EVENTS.has(event.type)) refresh("timeline-refresh");
  if (event.type === "chat_updated") refresh("header-refresh");
  if (event.type === "new_message" && event.sender_type === "CONTACT") markRead();
  if (event.type === "agent_working" || event.type === "agent_done") {
    working = Math.max(0, working + (event.type === "agent_working" ? 1 : -1));
    const el = document.getElementById("agent-working");
    if (el) el.hidden = working === 0;
  }
  if (event.type === "presence") {
    const el = document.getElementById("presence");
    if (el) {
      const typing = event.typing.length ? `, ${event.typing.length} typing` : "";
      el.textContent = `${event.viewing.length} viewing${typing}`;
    }
  }
}

let socket = null;
let lastEventId = null;
let delay = 500;
let viewingTimer = null;
function connect() {
  setState("connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = lastEventId === null ? "" : `?last_event_id=${lastEventId}`;
  socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  socket.addEventListener("open", () => {
    delay = 500;
    setState("open");
    if (chatId) {
      const viewing = () => send({ type: "viewing", chat_id: chatId });
      viewing();
      clearInterval(viewingTimer);
      viewingTimer = setInterval(viewing, 15000);
    }
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

function send(command) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(command));
}

const composer = document.getElementById("composer");
const input = document.getElementById("composer-input");
if (composer && input) {
  let lastTyping = 0;
  input.addEventListener("keydown", (key) => {
    if (key.key === "Enter" && !key.shiftKey && !key.isComposing) {
      key.preventDefault();
      if (input.value.trim()) composer.requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    const now = Date.now();
    if (now - lastTyping > 2000 && !composer.elements.note.checked) {
      lastTyping = now;
      send({ type: "typing", chat_id: chatId });
    }
  });
  composer.addEventListener("htmx:afterRequest", (done) => {
    if (done.detail.successful) { composer.reset(); input.focus(); scrollTimeline(); }
  });
}

function scrollTimeline() {
  const timeline = document.getElementById("timeline");
  if (timeline) timeline.scrollTop = timeline.scrollHeight;
}
body.addEventListener("htmx:afterSwap", (swap) => {
  if (swap.detail.target && swap.detail.target.id === "timeline") scrollTimeline();
});

if (page !== "login") {  // the login page has no session to open a socket with
  setState("connecting");
  scrollTimeline();
  markRead();
  connect();
}
