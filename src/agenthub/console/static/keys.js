// Keyboard shortcuts, the help overlay and the canned-responses picker.
//
// j / k      move the selection through the inbox rows ([data-testid=chat-row])
// Enter      open the selected chat (its link, or the row itself, is clicked: htmx or not)
// Esc        close the picker or the help; in a field, leave it; else close the open chat
// /          the canned-responses picker in the composer
// n          note mode on/off;  t  take over;  ?  this help
//
// Outside Esc, nothing fires while the focus is in a field. Rows are found again at every key
// and after every htmx swap: the selection is kept by chat id, not by element.

const ROW = '[data-testid="chat-row"]';
let selectedId = null;
let ctx = null;

function rows() {
  return [...document.querySelectorAll(ROW)];
}

// The page may mark a row itself (the open chat, `aria-selected="true"`): that row is the
// selection until a key moves it.
function showSelection(scroll) {
  if (selectedId === null) {
    const marked = document.querySelector(`${ROW}[aria-selected="true"]`);
    if (marked) selectedId = marked.dataset.chatId || null;
  }
  if (selectedId === null) return null;
  let found = null;
  for (const row of rows()) {
    const on = row.dataset.chatId === selectedId;
    if (on) found = row;
    if (on || row.getAttribute("aria-selected") === "true") {
      row.setAttribute("aria-selected", String(on));
    }
  }
  if (found && scroll) found.scrollIntoView({ block: "nearest" });
  return found;
}

function move(step) {
  const list = rows();
  if (!list.length) return;
  showSelection(false);
  let index = list.findIndex((row) => row.dataset.chatId === selectedId);
  if (index === -1) index = step > 0 ? 0 : list.length - 1;
  else index = Math.min(list.length - 1, Math.max(0, index + step));
  selectedId = list[index].dataset.chatId || null;
  showSelection(true);
}

function openSelected() {
  const row = showSelection(false);
  if (!row) return false;
  const target = row.querySelector("a[href], [hx-get], button") || row;
  target.click();
  return true;
}

// --- help -------------------------------------------------------------------------------------

function help() {
  return document.querySelector('[data-testid="help-overlay"]');
}
let focusBeforeHelp = null;
function showHelp(on) {
  const el = help();
  if (!el) return false;
  if (on) {
    focusBeforeHelp = document.activeElement;
    el.hidden = false;
    const close = el.querySelector("[data-help-close]");
    if (close) close.focus();
  } else {
    el.hidden = true;
    if (focusBeforeHelp && focusBeforeHelp.isConnected && focusBeforeHelp !== document.body) {
      focusBeforeHelp.focus();
    } else if (el.contains(document.activeElement)) {
      document.activeElement.blur();
    }
    focusBeforeHelp = null;
  }
  return true;
}

// --- the canned-responses picker ------------------------------------------------------------

const picker = { el: null, input: null, start: 0, options: [], active: 0, seq: 0, timer: null };

function pickerOpen() {
  return picker.el !== null && picker.el.isConnected;
}

function closePicker() {
  clearTimeout(picker.timer);
  if (picker.el) picker.el.remove();
  if (picker.input) {
    picker.input.setAttribute("aria-expanded", "false");
    picker.input.removeAttribute("aria-activedescendant");
  }
  picker.el = null;
  picker.options = [];
}

function openPicker(input, start) {
  closePicker();
  const list = document.createElement("ul");
  list.id = "canned-picker";
  list.className = "canned-picker";
  list.dataset.testid = "canned-picker";
  list.setAttribute("role", "listbox");
  list.setAttribute("aria-label", "Canned responses");
  list.addEventListener("mousedown", (down) => {
    const option = down.target.closest('[data-testid="canned-option"]');
    if (!option) return;
    down.preventDefault(); // keep the focus in the composer
    picker.active = Number(option.dataset.index);
    insertActive();
  });
  input.insertAdjacentElement("beforebegin", list);
  input.setAttribute("aria-controls", list.id);
  input.setAttribute("aria-expanded", "true");
  Object.assign(picker, { el: list, input, start, options: [], active: 0 });
  query();
}

function currentQuery() {
  const { input, start } = picker;
  const caret = input.selectionEnd;
  if (input.value[start] !== "/" || caret <= start) return null;
  const text = input.value.slice(start + 1, caret);
  return /\s/.test(text) ? null : text;
}

function query() {
  const q = currentQuery();
  if (q === null) { closePicker(); return; }
  clearTimeout(picker.timer);
  const seq = ++picker.seq;
  picker.timer = setTimeout(() => {
    fetch(`/canned-responses?limit=20&q=${encodeURIComponent(q)}`, {
      credentials: "same-origin", headers: { Accept: "application/json" },
    })
      .then((answer) => (answer.ok ? answer.json() : []))
      .then((found) => { if (seq === picker.seq && pickerOpen()) render(found); })
      .catch(() => {});
  }, q ? 120 : 0);
}

function render(found) {
  picker.options = Array.isArray(found) ? found : [];
  picker.active = 0;
  picker.el.replaceChildren();
  if (!picker.options.length) {
    const empty = document.createElement("li");
    empty.className = "canned-empty";
    empty.textContent = "No canned response matches";
    picker.el.append(empty);
  }
  picker.options.forEach((canned, index) => {
    const option = document.createElement("li");
    option.id = `canned-option-${index}`;
    option.dataset.testid = "canned-option";
    option.dataset.index = String(index);
    option.dataset.shortcut = canned.shortcut;
    option.setAttribute("role", "option");
    const shortcut = document.createElement("strong");
    shortcut.textContent = `/${canned.shortcut}`;
    const content = document.createElement("span");
    content.textContent = canned.content;
    option.append(shortcut, " ", content);
    picker.el.append(option);
  });
  highlight();
}

function highlight() {
  picker.el.querySelectorAll('[data-testid="canned-option"]').forEach((option, index) => {
    option.setAttribute("aria-selected", String(index === picker.active));
    if (index === picker.active) {
      option.scrollIntoView({ block: "nearest" });
      picker.input.setAttribute("aria-activedescendant", option.id);
    }
  });
}

function insertActive() {
  const canned = picker.options[picker.active];
  const { input, start } = picker;
  closePicker();
  if (!canned) return;
  const end = input.selectionEnd;
  input.setRangeText(canned.content, start, end, "end");
  input.dispatchEvent(new Event("input", { bubbles: true }));
  input.focus();
}

function pickerKey(key) {
  if (key.key === "ArrowDown" || key.key === "ArrowUp") {
    const count = picker.options.length;
    if (count) picker.active = (picker.active + (key.key === "ArrowDown" ? 1 : count - 1)) % count;
    highlight();
    return true;
  }
  if ((key.key === "Enter" || key.key === "Tab") && !key.shiftKey) {
    if (!picker.options.length) return key.key === "Enter";
    insertActive();
    return true;
  }
  if (key.key === "Escape") { closePicker(); return true; }
  return false;
}

function composerInput() {
  return document.getElementById("composer-input");
}

// `/` outside a field: into the composer, the slash at its end (after a space if needed).
function slashIntoComposer() {
  const input = composerInput();
  if (!input) return false;
  input.focus();
  const value = input.value;
  const lead = value && !/\s$/.test(value) ? " " : "";
  input.setRangeText(`${lead}/`, value.length, value.length, "end");
  openPicker(input, input.value.length - 1);
  return true;
}

// --- keys -------------------------------------------------------------------------------------

function inField(target) {
  return target instanceof Element
    && (target.closest("input, textarea, select, [contenteditable=''], [contenteditable=true]") !== null);
}

function onComposerKey(key) {
  const input = key.target;
  if (pickerOpen() && picker.input === input && pickerKey(key)) {
    key.preventDefault();
    return;
  }
  if (key.key === "Enter" && !key.shiftKey && !key.isComposing) {
    key.preventDefault();
    if (input.value.trim() && input.form) input.form.requestSubmit();
  }
}

function onKey(key) {
  if (key.defaultPrevented || key.ctrlKey || key.metaKey || key.altKey) return;
  if (key.target.id === "composer-input") { onComposerKey(key); if (key.defaultPrevented) return; }
  if (key.key === "Escape") {
    if (pickerOpen()) closePicker();
    else if (help() && !help().hidden) showHelp(false);
    else if (inField(key.target)) key.target.blur();
    else if (ctx.openChatId()) ctx.closeChat();
    else return;
    key.preventDefault();
    return;
  }
  if (inField(key.target) || key.isComposing) return;
  const helpOpen = help() && !help().hidden;
  if (helpOpen && key.key !== "?") return;
  let done = true;
  switch (key.key) {
    case "j": move(1); break;
    case "k": move(-1); break;
    case "Enter":  // a focused link or button keeps its own Enter
      done = !key.target.closest("a[href], button, summary") && openSelected();
      break;
    case "?": done = showHelp(!helpOpen); break;
    case "/": done = slashIntoComposer(); break;
    case "n": {
      const toggle = document.querySelector('[data-testid="composer-note-toggle"]');
      if (toggle) toggle.click(); else done = false;
      break;
    }
    case "t": {
      const takeover = document.querySelector('[data-testid="action-takeover"]');
      if (takeover && !takeover.disabled) takeover.click(); else done = false;
      break;
    }
    default: done = false;
  }
  if (done) key.preventDefault();
}

// `/` typed at the start of an empty composer opens the picker; typing on filters it.
function onInput(input) {
  const el = input.target;
  if (el.id !== "composer-input") return;
  if (pickerOpen() && picker.input === el) { query(); return; }
  if (el.value === "/" && el.selectionEnd === 1 && input.inputType !== "insertFromPaste") {
    openPicker(el, 0);
  }
}

export function installKeys(context) {
  ctx = context;
  document.addEventListener("keydown", onKey);
  document.addEventListener("input", onInput);
  document.addEventListener("click", (click) => {
    const el = help();
    if (!el || el.hidden) return;
    if (click.target === el || click.target.closest("[data-help-close]")) showHelp(false);
  });
  document.addEventListener("focusout", (out) => {
    if (pickerOpen() && out.target === picker.input) setTimeout(() => {
      if (document.activeElement !== picker.input) closePicker();
    }, 0);
  });
  document.body.addEventListener("htmx:afterSwap", () => {
    showSelection(false);
    if (picker.el && !picker.el.isConnected) closePicker();
  });
  // A row clicked with the mouse becomes the selection too.
  document.addEventListener("click", (click) => {
    const row = click.target.closest && click.target.closest(ROW);
    if (row && row.dataset.chatId) { selectedId = row.dataset.chatId; showSelection(false); }
  });
}
