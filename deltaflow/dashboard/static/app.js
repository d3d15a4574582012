// The dashboard's page: the task list and the workers (live), and a task's page with its facts,
// its plotted metrics and its log, followed live. Everything shown is put in as text.
"use strict";

const TOKEN = document.querySelector('meta[name="deltaflow-token"]').content;
const ENDED = new Set(["FINISHED", "ERROR", "CANCELLED"]);
const LIST_EVERY_MS = 2000, TASK_EVERY_MS = 1000;
let view = null;  // the view shown now: {stop()}

async function api(path, method = "GET") {
  const response = await fetch(path, {method, headers: {"X-Deltaflow-Token": TOKEN}});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// An element with `children`: strings become text nodes, never markup.
function el(tag, properties = {}, ...children) {
  const element = Object.assign(document.createElement(tag), properties);
  element.append(...children.filter(c => c !== null && c !== undefined));
  return element;
}

function problem(error) {
  const shown = document.getElementById("problem");
  shown.hidden = !error;
  shown.textContent = error ? String(error.message || error) : "";
}

const state = t => (t.state || "TASK_STATE_UNSPECIFIED").replace("TASK_STATE_", "");
const kind = t => (t.kind || "").replace("TASK_KIND_", "").toLowerCase();
const pad = n => String(n).padStart(2, "0");
// Unix seconds as local time, as the CLI prints it: YYYY-MM-DD HH:MM:SS.
function stamp(seconds) {
  const d = new Date(seconds * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
const when = s => s ? stamp(s) : "-";

function took(t) {
  if (!t.finishedAt) return "-";
  const s = Math.round(t.finishedAt - t.createdAt);
  return s >= 60 ? `${Math.floor(s / 60)}m${pad(s % 60)}s` : `${s}s`;
}

// Runs `step` now and every `ms` until it returns false or the view is left.
function every(ms, step) {
  let timer = null, stopped = false;
  const run = async () => {
    let again = true;
    try { again = (await step()) !== false; problem(null); } catch (error) { problem(error); }
    if (again && !stopped) timer = setTimeout(run, ms);
  };
  run();
  return {stop() { stopped = true; clearTimeout(timer); }};
}

function showList() {
  document.getElementById("list-view").hidden = false;
  document.getElementById("task-view").hidden = true;
  const tasks = document.querySelector("#tasks tbody");
  const workers = document.querySelector("#workers tbody");
  return every(LIST_EVERY_MS, async () => {
    const [listed, connected] = await Promise.all([api("/api/tasks"), api("/api/workers")]);
    tasks.replaceChildren(...(listed.tasks || []).map(t => el("tr", {},
      el("td", {className: "num"}, el("a", {href: `#/tasks/${t.taskId}`}, t.taskId)),
      el("td", {}, el("a", {href: `#/tasks/${t.taskId}`}, t.name)),
      el("td", {}, kind(t)),
      el("td", {className: `state-${state(t)}`}, state(t)),
      el("td", {}, t.owner || ""),
      el("td", {}, (t.workers || []).join(", ") || "-"),
      el("td", {}, when(t.createdAt)),
      el("td", {}, took(t)))));
    workers.replaceChildren(...(connected.workers || []).map(w => el("tr", {},
      el("td", {}, w.name),
      el("td", {}, (w.datasets || []).join(", ") || "-"),
      el("td", {}, when(w.connectedAt)),
      el("td", {}, (w.runningTasks || []).join(", ") || "-"))));
  });
}

function fact(list, name, value) {
  list.append(el("dt", {}, name), el("dd", {}, value));
}

function showTask(id) {
  document.getElementById("list-view").hidden = true;
  document.getElementById("task-view").hidden = false;
  const title = document.getElementById("task-title");
  const facts = document.getElementById("task-facts");
  const log = document.getElementById("log");
  const plots = document.getElementById("plots");
  const cancel = document.getElementById("cancel");
  title.textContent = `Task ${id}`;
  facts.replaceChildren();
  log.replaceChildren();
  plots.replaceChildren(el("p", {className: "none"}, "No validated round yet."));
  let offset = 0;
  cancel.onclick = async () => {
    cancel.disabled = true;
    try { await api(`/api/tasks/${id}/cancel`, "POST"); problem(null); }
    catch (error) { problem(error); cancel.disabled = false; }
  };
  return every(TASK_EVERY_MS, async () => {
    const task = await api(`/api/tasks/${id}`);
    const logged = await api(`/api/tasks/${id}/logs?from=${offset}`);
    const entries = logged.entries || [];
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    for (const entry of entries) {
      log.append(`${stamp(entry.time)}  ${entry.message}\n`);
      offset = Number(entry.offset || 0) + 1;
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
    const rules = task.rules || {};
    title.textContent = `Task ${task.taskId}: ${task.name}`;
    facts.replaceChildren();
    fact(facts, "state", el("span", {className: `state-${state(task)}`}, state(task)));
    fact(facts, "kind", kind(task));
    fact(facts, "owner", task.owner || "");
    fact(facts, "workers", (task.workers || []).join(", ") || "-");
    fact(facts, "datasets", (task.datasets || []).map(d => d.file).join(", "));
    fact(facts, "rules", `min_clients=${rules.minClients || 0}, max_clients=${rules.maxClients || 0}, ` +
         `wait_timeout=${rules.waitTimeout || 0}s, connection_timeout=${rules.connectionTimeout || 0}s`);
    fact(facts, "created", when(task.createdAt));
    fact(facts, "took", took(task));
    if (task.error) fact(facts, "error", task.error);
    const ended = ENDED.has(state(task));
    cancel.hidden = ended;
    if (kind(task) === "learning" && (entries.length || ended)) {
      DeltaflowPlot.draw(plots, (await api(`/api/tasks/${id}/metrics`)).rounds);
    }
    return !ended || entries.length > 0;  // one more look after the end: the last lines
  });
}

function route() {
  if (view) view.stop();
  const found = location.hash.match(/^#\/tasks\/([1-9][0-9]*)$/);
  view = found ? showTask(found[1]) : showList();
}

async function start() {
  try {
    const me = await api("/api/me");
    document.getElementById("me").textContent = `${me.user} (${me.role}) at ${me.coordinator}`;
  } catch (error) { problem(error); }
  window.addEventListener("hashchange", route);
  route();
}

start();
