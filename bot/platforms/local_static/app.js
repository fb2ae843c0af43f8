// workbot's local group: the single-page chat room (plain JS, no build step).
// Every piece of user data is rendered with textContent / createElement, never as HTML.
"use strict";

const LABELS = {
  "zh-CN": {
    title: "workbot 本地工作群",
    who: "我是",
    whoPlaceholder: "选择你的身份…",
    composer: "输入消息（Enter 发送，Shift+Enter 换行）",
    composerLocked: "请先在上方选择你的身份",
    send: "发送",
    reply: "回复",
    replyingTo: "回复 {name}：{snippet}",
    cancelReply: "取消回复",
    edited: "已编辑",
    editedAt: "编辑于 {time}",
    botTag: "机器人",
    dms: "私信",
    dmsEmpty: "暂无私信",
    closeDms: "关闭私信",
    unread: "{count} 条未读",
    noMessages: "还没有消息，来说第一句吧。",
    pickFirst: "请先选择你的身份。",
    quoteMissing: "消息 #{id}",
    connected: "已连接",
    connecting: "连接中…",
    reconnecting: "已断开，正在重连…",
    loadFailed: "加载失败：{message}",
    networkError: "网络错误，请稍后重试",
    badLink: "链接无效",
    footer: "本地演示群：无身份验证，仅供本机试用",
  },
  en: {
    title: "workbot local work group",
    who: "I am",
    whoPlaceholder: "Pick who you are…",
    composer: "Message (Enter to send, Shift+Enter for a new line)",
    composerLocked: "Pick who you are above first",
    send: "Send",
    reply: "Reply",
    replyingTo: "Replying to {name}: {snippet}",
    cancelReply: "Cancel reply",
    edited: "edited",
    editedAt: "edited at {time}",
    botTag: "bot",
    dms: "Direct messages",
    dmsEmpty: "No direct messages yet",
    closeDms: "Close direct messages",
    unread: "{count} unread",
    noMessages: "No messages yet. Say something!",
    pickFirst: "Pick who you are first.",
    quoteMissing: "message #{id}",
    connected: "connected",
    connecting: "connecting…",
    reconnecting: "disconnected, reconnecting…",
    loadFailed: "Could not load: {message}",
    networkError: "Network error, please try again",
    badLink: "invalid link",
    footer: "Local demo group: no authentication, for local trials only",
  },
};

const API = "/local/v1";
const PAGE_SIZE = 500;
const ERROR_MS = 5000;
const ME_KEY = "workbot.local.me";
const DM_SEEN_KEY = "workbot.local.dmSeen.";
const SNIPPET_CHARS = 60;
const BOTTOM_SLACK_PX = 40;

const state = {
  lang: "zh-CN",
  botName: "workbot",
  people: new Map(), // id -> {id, name, department, roles}
  peopleKey: "",
  me: "",
  store: new Map(), // id -> message (every message received, visible or not)
  replyTo: null,
  dmsOpen: false,
  sending: false,
  stream: null,
  streamFor: "", // whom the open stream reads for (the identity it was opened with)
  retryMs: 1000,
  syncing: null,
  syncAgain: false,
  errorTimer: 0,
};

const $ = (id) => document.getElementById(id);
const ui = {
  title: $("title"),
  whoLabel: $("who-label"),
  who: $("who"),
  conn: $("conn"),
  dmToggle: $("dm-toggle"),
  dmToggleLabel: $("dm-toggle-label"),
  dmUnread: $("dm-unread"),
  timeline: $("timeline"),
  timelineEmpty: $("timeline-empty"),
  error: $("error"),
  replyBar: $("reply-bar"),
  replyText: $("reply-text"),
  replyCancel: $("reply-cancel"),
  composer: $("composer"),
  text: $("text"),
  send: $("send"),
  dms: $("dms"),
  dmsTitle: $("dms-title"),
  dmsClose: $("dms-close"),
  dmList: $("dm-list"),
  dmEmpty: $("dm-empty"),
  footer: $("footer-note"),
};
const narrow = window.matchMedia("(max-width: 699px)");

// --- small helpers ----------------------------------------------------------------------

function t(key, params) {
  const table = LABELS[state.lang] || LABELS["zh-CN"];
  const text = key in table ? table[key] : LABELS["zh-CN"][key];
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function storageGet(key) {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null;
  }
}

function storageSet(key, value) {
  try {
    window.localStorage.setItem(key, value);
  } catch {
    // Private mode or storage disabled: the choice just is not remembered.
  }
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

function parseTime(ts) {
  const d = ts ? new Date(ts) : null;
  return d && !Number.isNaN(d.getTime()) ? d : null;
}

function clock(ts) {
  const d = parseTime(ts);
  return d ? `${pad2(d.getHours())}:${pad2(d.getMinutes())}` : "";
}

function fullTime(ts) {
  const d = parseTime(ts);
  if (!d) return "";
  const date = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  return `${date} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function hasCard(msg) {
  return msg.card !== null && typeof msg.card === "object";
}

function snippet(msg) {
  let text = typeof msg.text === "string" ? msg.text.trim() : "";
  if (hasCard(msg) && typeof msg.card.title === "string" && msg.card.title) text = msg.card.title;
  text = text.replace(/\s+/g, " ");
  return text.length > SNIPPET_CHARS ? `${text.slice(0, SNIPPET_CHARS)}…` : text;
}

function senderName(msg) {
  if (typeof msg.sender_name === "string" && msg.sender_name) return msg.sender_name;
  if (msg.sender === "bot") return state.botName;
  const person = state.people.get(msg.sender);
  return person ? person.name : String(msg.sender);
}

function safeUrl(raw) {
  if (typeof raw !== "string" || !raw) return null;
  try {
    const url = new URL(raw, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
  window.clearTimeout(state.errorTimer);
  state.errorTimer = window.setTimeout(() => {
    ui.error.hidden = true;
  }, ERROR_MS);
}

async function api(method, path, body) {
  const init = { method, cache: "no-store", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new Error(t("networkError"));
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error;
    let message = error && typeof error.message === "string" ? error.message : "";
    const fields = error && Array.isArray(error.fields) ? error.fields : [];
    const details = fields.map((f) => (f && typeof f.message === "string" ? f.message : "")).filter(Boolean);
    if (details.length) message = `${message}: ${details.join("; ")}`;
    throw new Error(message || `HTTP ${response.status}`);
  }
  return data;
}

// --- labels and the directory -----------------------------------------------------------

function applyLabels() {
  document.documentElement.lang = state.lang;
  document.title = t("title");
  ui.title.textContent = t("title");
  ui.whoLabel.textContent = t("who");
  ui.send.textContent = t("send");
  ui.replyCancel.title = t("cancelReply");
  ui.replyCancel.setAttribute("aria-label", t("cancelReply"));
  ui.dmsTitle.textContent = t("dms");
  ui.dmToggleLabel.textContent = t("dms");
  ui.dmsClose.title = t("closeDms");
  ui.dmsClose.setAttribute("aria-label", t("closeDms"));
  ui.dmEmpty.textContent = t("dmsEmpty");
  ui.timelineEmpty.textContent = t("noMessages");
  ui.footer.textContent = t("footer");
  updateComposer();
  updateConn();
}

function personLabel(person) {
  return person.department ? `${person.name} · ${person.department}` : person.name;
}

function fillWho() {
  const select = ui.who;
  const placeholder = el("option", "", t("whoPlaceholder"));
  placeholder.value = "";
  const options = [placeholder];
  for (const person of state.people.values()) {
    const option = el("option", "", personLabel(person));
    option.value = person.id;
    options.push(option);
  }
  select.replaceChildren(...options);
  select.value = state.people.has(state.me) ? state.me : "";
}

async function loadDirectory() {
  const data = await api("GET", `${API}/directory`);
  const lang = data && data.language === "en" ? "en" : "zh-CN";
  const people = Array.isArray(data && data.people) ? data.people : [];
  const botName = data && data.bot && typeof data.bot.name === "string" ? data.bot.name : "";
  const key = JSON.stringify([lang, botName, people]);
  if (key === state.peopleKey) return false;
  state.peopleKey = key;
  state.lang = lang;
  state.botName = botName || "workbot";
  state.people = new Map(
    people
      .filter((p) => p && typeof p.id === "string")
      .map((p) => [p.id, { ...p, name: typeof p.name === "string" ? p.name : p.id }]),
  );
  if (!state.me) state.me = storageGet(ME_KEY) || "";
  if (state.me && !state.people.has(state.me)) state.me = "";
  applyLabels();
  fillWho();
  return true;
}

// --- rendering --------------------------------------------------------------------------

function isVisible(msg) {
  return msg.to === null || msg.to === undefined || (state.me !== "" && msg.to === state.me);
}

function isDm(msg) {
  return msg.to !== null && msg.to !== undefined;
}

function quoteNode(replyTo) {
  const quote = el("button", "quote");
  quote.type = "button";
  quote.dataset.quoteOf = String(replyTo);
  fillQuote(quote, replyTo);
  quote.addEventListener("click", () => {
    const target = document.getElementById(`m-${replyTo}`);
    if (!target) return;
    target.scrollIntoView({ block: "center", behavior: "smooth" });
    target.classList.remove("flash");
    void target.offsetWidth; // restart the highlight animation
    target.classList.add("flash");
  });
  return quote;
}

function fillQuote(quote, replyTo) {
  const original = state.store.get(replyTo);
  if (original && isVisible(original)) {
    quote.replaceChildren(el("span", "quote-name", senderName(original)), el("span", "quote-text", snippet(original)));
  } else {
    quote.replaceChildren(el("span", "quote-text", t("quoteMissing", { id: replyTo })));
  }
}

function cardNode(msg) {
  const card = msg.card;
  const box = el("div", "card");
  if (typeof card.title === "string" && card.title) box.append(el("div", "card-title", card.title));
  if (typeof card.body === "string" && card.body) box.append(el("div", "card-body", card.body));
  if (card.status !== null && card.status !== undefined) {
    const tally = el("div", "tally", card.status);
    tally.dataset.testid = `tally-${msg.id}`;
    box.append(tally);
  }
  const buttons = Array.isArray(card.buttons) ? card.buttons : [];
  if (buttons.length) {
    const row = el("div", "card-buttons");
    buttons.forEach((button, index) => row.append(cardButton(msg, button || {}, index)));
    box.append(row);
  }
  return box;
}

function cardButton(msg, spec, index) {
  const label = typeof spec.label === "string" ? spec.label : String(spec.value ?? "");
  const testid = `btn-${msg.id}-${index}`;
  if (spec.url !== null && spec.url !== undefined) {
    const href = safeUrl(spec.url);
    if (!href) {
      const dead = el("button", "btn", label);
      dead.type = "button";
      dead.disabled = true;
      dead.title = t("badLink");
      dead.dataset.testid = testid;
      return dead;
    }
    const link = el("a", "btn link", label);
    link.href = href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.dataset.testid = testid;
    return link;
  }
  const button = el("button", "btn", label);
  button.type = "button";
  button.dataset.testid = testid;
  button.addEventListener("click", () => act(msg.id, spec.value, button));
  return button;
}

function fillMessage(node, msg) {
  node.className = "msg";
  if (msg.sender === "bot") node.classList.add("from-bot");
  if (state.me && msg.sender === state.me) node.classList.add("mine");
  if (isDm(msg)) node.classList.add("dm");

  const meta = el("div", "meta");
  meta.append(el("span", "sender", senderName(msg)));
  if (msg.sender === "bot") meta.append(el("span", "tag", t("botTag")));
  const person = state.people.get(msg.sender);
  if (person && person.department) meta.append(el("span", "dept", person.department));
  const time = el("time", "time", clock(msg.ts));
  if (typeof msg.ts === "string") time.dateTime = msg.ts;
  time.title = fullTime(msg.ts);
  meta.append(time);
  if (msg.edited_at) {
    const mark = el("span", "edited", t("edited"));
    mark.title = t("editedAt", { time: fullTime(msg.edited_at) });
    meta.append(mark);
  }
  if (!isDm(msg)) {
    const reply = el("button", "reply-btn", t("reply"));
    reply.type = "button";
    reply.dataset.testid = `reply-${msg.id}`;
    reply.addEventListener("click", () => startReply(msg.id));
    meta.append(reply);
  }

  const parts = [meta];
  if (msg.reply_to !== null && msg.reply_to !== undefined) parts.push(quoteNode(msg.reply_to));
  // A card's text is its fallback for platforms without cards: the card alone says it here.
  if (hasCard(msg)) parts.push(cardNode(msg));
  else if (typeof msg.text === "string" && msg.text) parts.push(el("div", "text", msg.text));
  node.replaceChildren(...parts);
}

function insertSorted(list, node, id) {
  let after = list.lastElementChild;
  while (after && Number(after.dataset.id) > id) after = after.previousElementSibling;
  if (after) after.after(node);
  else list.prepend(node);
}

function place(msg) {
  const list = isDm(msg) ? ui.dmList : ui.timeline;
  let node = document.getElementById(`m-${msg.id}`);
  if (node && node.parentElement !== list) {
    node.remove();
    node = null;
  }
  if (!node) {
    node = el("li");
    node.id = `m-${msg.id}`;
    node.dataset.id = String(msg.id);
    fillMessage(node, msg);
    insertSorted(list, node, msg.id);
  } else {
    fillMessage(node, msg);
  }
  for (const quote of document.querySelectorAll(`.quote[data-quote-of="${msg.id}"]`)) {
    fillQuote(quote, msg.id);
  }
  if (state.replyTo === msg.id) showReplyBar();
}

function unplace(id) {
  const node = document.getElementById(`m-${id}`);
  if (node) node.remove();
}

function isValidMessage(msg) {
  return msg && typeof msg === "object" && Number.isInteger(msg.id);
}

function isStale(incoming, current) {
  // A late answer to a full fetch must not undo an edit that arrived on the stream meanwhile.
  const a = parseTime(incoming.edited_at);
  const b = parseTime(current.edited_at);
  if (!b) return false;
  return !a || a < b;
}

function atBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight <= BOTTOM_SLACK_PX;
}

function scrollToBottom(list) {
  list.scrollTop = list.scrollHeight;
}

function apply(messages, { full = false, follow = false } = {}) {
  const stickTimeline = follow || atBottom(ui.timeline);
  const stickDms = atBottom(ui.dmList);
  const seen = new Set();
  for (const msg of messages) {
    if (!isValidMessage(msg)) continue;
    seen.add(msg.id);
    const current = state.store.get(msg.id);
    if (current && isStale(msg, current)) continue;
    state.store.set(msg.id, msg);
    if (isVisible(msg)) place(msg);
    else unplace(msg.id);
  }
  if (full) {
    for (const id of [...state.store.keys()]) {
      if (!seen.has(id)) {
        state.store.delete(id);
        unplace(id);
      }
    }
  }
  if (stickTimeline) scrollToBottom(ui.timeline);
  if (stickDms) scrollToBottom(ui.dmList);
  updateEmpty();
  updateUnread();
}

function renderAll() {
  ui.timeline.replaceChildren();
  ui.dmList.replaceChildren();
  const messages = [...state.store.values()].sort((a, b) => a.id - b.id);
  for (const msg of messages) if (isVisible(msg)) place(msg);
  scrollToBottom(ui.timeline);
  scrollToBottom(ui.dmList);
  updateEmpty();
  updateUnread();
}

function updateEmpty() {
  ui.timelineEmpty.hidden = ui.timeline.childElementCount > 0;
  ui.dmEmpty.hidden = ui.dmList.childElementCount > 0;
}

// --- direct messages panel --------------------------------------------------------------

function dmPanelShown() {
  return !narrow.matches || state.dmsOpen;
}

function myDmIds() {
  const ids = [];
  for (const msg of state.store.values()) if (state.me && msg.to === state.me) ids.push(msg.id);
  return ids;
}

function updateUnread() {
  const ids = myDmIds();
  const key = DM_SEEN_KEY + state.me;
  let seen = Number(storageGet(key)) || 0;
  if (state.me && dmPanelShown() && ids.length) {
    const newest = Math.max(...ids);
    if (newest > seen) {
      seen = newest;
      storageSet(key, String(seen));
    }
  }
  const unread = ids.filter((id) => id > seen).length;
  ui.dmUnread.textContent = String(unread);
  ui.dmUnread.hidden = unread === 0;
  ui.dmToggle.title = unread ? t("unread", { count: unread }) : t("dms");
}

function setDmsOpen(open) {
  state.dmsOpen = open;
  document.body.classList.toggle("dms-open", open);
  ui.dmToggle.setAttribute("aria-expanded", String(open));
  if (open) scrollToBottom(ui.dmList);
  updateUnread();
}

// --- replying and composing -------------------------------------------------------------

function startReply(id) {
  if (!state.store.has(id)) return;
  state.replyTo = id;
  showReplyBar();
  ui.text.focus();
}

function showReplyBar() {
  const msg = state.store.get(state.replyTo);
  if (!msg) {
    clearReply();
    return;
  }
  ui.replyText.textContent = t("replyingTo", { name: senderName(msg), snippet: snippet(msg) });
  ui.replyBar.hidden = false;
}

function clearReply() {
  state.replyTo = null;
  ui.replyBar.hidden = true;
  ui.replyText.textContent = "";
}

function updateComposer() {
  const ready = state.me !== "";
  ui.text.disabled = !ready;
  ui.send.disabled = !ready || state.sending;
  ui.text.placeholder = ready ? t("composer") : t("composerLocked");
}

function autosize() {
  ui.text.style.height = "auto";
  ui.text.style.height = `${Math.min(ui.text.scrollHeight, 160)}px`;
}

async function send() {
  if (state.sending) return;
  if (!state.me) {
    showError(t("pickFirst"));
    return;
  }
  const text = ui.text.value.trim();
  if (!text) return;
  state.sending = true;
  updateComposer();
  let sent = false;
  try {
    await api("POST", `${API}/messages`, { sender: state.me, text, reply_to: state.replyTo });
    sent = true;
    ui.text.value = "";
    autosize();
    clearReply();
  } catch (err) {
    showError(err.message);
  } finally {
    state.sending = false;
    updateComposer();
    ui.text.focus();
  }
  // The stream normally brings the post first; this only matters when it is down.
  if (sent) catchUp({ follow: true }).catch(() => {});
}

async function act(messageId, action, button) {
  if (!state.me) {
    showError(t("pickFirst"));
    return;
  }
  button.disabled = true;
  try {
    await api("POST", `${API}/actions`, { sender: state.me, message_id: messageId, action });
    if (!state.stream || state.stream.readyState !== EventSource.OPEN) await resync();
  } catch (err) {
    showError(err.message);
  } finally {
    if (button.isConnected) button.disabled = false;
  }
}

// --- loading and the event stream -------------------------------------------------------

// The server lists a DM only for its recipient (or sender): every read names who we are.
function forQuery(reader) {
  return reader ? `for=${encodeURIComponent(reader)}` : "";
}

async function fetchFrom(after) {
  const reader = state.me;
  const messages = [];
  let cursor = after;
  for (;;) {
    const query = [`after=${cursor}`, `limit=${PAGE_SIZE}`, forQuery(reader)].filter(Boolean);
    const data = await api("GET", `${API}/messages?${query.join("&")}`);
    const page = Array.isArray(data && data.messages) ? data.messages : [];
    messages.push(...page);
    const last = page.length ? page[page.length - 1].id : null;
    if (page.length < PAGE_SIZE || !Number.isInteger(last) || last <= cursor) return { reader, messages };
    cursor = last;
  }
}

async function catchUp({ follow = false } = {}) {
  const newest = state.store.size ? Math.max(...state.store.keys()) : 0;
  const { reader, messages } = await fetchFrom(newest);
  if (reader === state.me) apply(messages, { follow });
}

async function resync({ quiet = false } = {}) {
  // One full reload at a time; a request made meanwhile runs once more afterwards.
  if (state.syncing) {
    state.syncAgain = true;
    return state.syncing;
  }
  state.syncing = (async () => {
    do {
      state.syncAgain = false;
      try {
        if (await loadDirectory()) renderAll();
        if (state.stream && state.streamFor !== state.me) connect();
        const { reader, messages } = await fetchFrom(0);
        // Read for someone else meanwhile (a new pick in "I am"): read again for the new one.
        if (reader === state.me) apply(messages, { full: true });
        else state.syncAgain = true;
      } catch (err) {
        if (!quiet) showError(t("loadFailed", { message: err.message }));
      }
    } while (state.syncAgain);
  })();
  try {
    await state.syncing;
  } finally {
    state.syncing = null;
  }
}

function onStreamEvent(event) {
  let msg;
  try {
    msg = JSON.parse(event.data);
  } catch {
    return;
  }
  apply([msg]);
}

function updateConn() {
  const stateName = ui.conn.dataset.state || "connecting";
  ui.conn.textContent = t(stateName);
  ui.conn.title = t(stateName);
}

function setConn(name) {
  ui.conn.dataset.state = name;
  updateConn();
}

function connect() {
  if (state.stream) state.stream.close();
  const query = forQuery(state.me);
  const stream = new EventSource(`${API}/stream${query ? `?${query}` : ""}`);
  state.stream = stream;
  state.streamFor = state.me;
  stream.addEventListener("open", () => {
    state.retryMs = 1000;
    setConn("connected");
    resync();
  });
  stream.addEventListener("message", onStreamEvent);
  stream.addEventListener("edit", onStreamEvent);
  stream.addEventListener("error", () => {
    setConn("reconnecting");
    // Without the stream, each retry still polls, so the room keeps up while it is down.
    resync({ quiet: true });
    if (stream.readyState === EventSource.CLOSED && state.stream === stream) {
      // The browser gave up (e.g. the server answered with an error): retry with backoff.
      window.setTimeout(connect, state.retryMs);
      state.retryMs = Math.min(state.retryMs * 2, 30000);
    }
  });
}

// --- wiring -----------------------------------------------------------------------------

function choose(id) {
  state.me = state.people.has(id) ? id : "";
  storageSet(ME_KEY, state.me);
  clearReply();
  updateComposer();
  renderAll();
  // Another identity reads other DMs: reopen the stream for it (its open event re-reads).
  if (state.stream && state.streamFor !== state.me) connect();
  if (state.me) ui.text.focus();
}

function wire() {
  ui.who.addEventListener("change", () => choose(ui.who.value));
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.text.addEventListener("keydown", (event) => {
    const composing = event.isComposing || event.keyCode === 229;
    if (event.key === "Enter" && !event.shiftKey && !composing) {
      event.preventDefault();
      send();
    } else if (event.key === "Escape" && state.replyTo !== null) {
      clearReply();
    }
  });
  ui.text.addEventListener("input", autosize);
  ui.replyCancel.addEventListener("click", () => {
    clearReply();
    ui.text.focus();
  });
  ui.dmToggle.addEventListener("click", () => setDmsOpen(!state.dmsOpen));
  ui.dmsClose.addEventListener("click", () => setDmsOpen(false));
  narrow.addEventListener("change", () => setDmsOpen(false));
  // A list that was scrolled to the bottom stays there when it shrinks (reply bar, errors).
  for (const list of [ui.timeline, ui.dmList]) {
    let pinned = true;
    list.addEventListener("scroll", () => {
      pinned = atBottom(list);
    });
    new ResizeObserver(() => {
      if (pinned) scrollToBottom(list);
    }).observe(list);
  }
}

async function start() {
  applyLabels();
  wire();
  for (;;) {
    try {
      await loadDirectory();
      break;
    } catch (err) {
      showError(t("loadFailed", { message: err.message }));
      await new Promise((resolve) => window.setTimeout(resolve, 3000));
    }
  }
  updateComposer();
  updateEmpty();
  connect();
}

start();
