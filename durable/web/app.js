// The durable web page: runs, a run's journal as a timeline, and the prompt inbox.
// Plain JS over the HTTP API (GET runs, runs/{id}, prompts; POST answers and
// cancels) and the run's Server-Sent Events stream; no build step, no framework.
"use strict";

const REFRESH_MS = 2000;
const ENDED = new Set(["completed", "failed", "cancelled", "blocked"]); // blocked: until retried or cancelled

const state = {
  filter: "",
  queue: "", // the queue whose runs are listed (a click on a queue), or every run
  selected: null, // run_id shown on the right
  run: null, // that run, as GET runs/{id} returned it
  records: new Map(), // its journal by seq, kept current by the event stream
  source: null, // its EventSource
  promptsShown: null, // identity of the prompt cards on screen, so typing is not interrupted
  limit: 100, // runs listed (Show more adds 100)
  workflow: "", // the runs of one workflow, or all
  since: "", // seconds: the runs created that recently, or all
  search: "", // part of a run_id
  me: null, // the signed-in name (a server with tokens), or null
  mine: false, // the inbox shows only the prompts assigned to me
};

// --- helpers -------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== undefined && child !== null && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

class ApiError extends Error {
  constructor(status, error, detail) {
    super(detail);
    this.status = status;
    this.error = error;
  }
}

function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(`${name}=`));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

async function api(method, path, body) {
  // The page says it is the page (the channel an answer records); a POST carries the session's CSRF token.
  const init = { method, headers: { Accept: "application/json", "X-Durable-Client": "page" } };
  if (method !== "GET") init.headers["X-CSRF-Token"] = cookie("durable_csrf");
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401 && state.me) location.reload(); // the session ended: the server shows the sign-in form
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, data?.error ?? "HTTPError", data?.detail ?? response.statusText);
  }
  return data;
}

function json(value) {
  return JSON.stringify(value);
}

function preview(value, limit = 80) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : json(value);
  return text.length > limit ? text.slice(0, limit - 1) + "…" : text;
}

function ago(iso) {
  if (!iso) return "";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  const n = Math.abs(seconds);
  const text = n < 60 ? `${Math.floor(n)}s` : n < 3600 ? `${Math.floor(n / 60)}m` : n < 86400 ? `${Math.floor(n / 3600)}h` : `${Math.floor(n / 86400)}d`;
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

function duration(record) {
  if (!record.finished_at || record.kind === "ask" || record.kind === "now") return "";
  const ms = Date.parse(record.finished_at) - Date.parse(record.started_at);
  if (record.kind === "sleep") return "";
  return ms < 1000 ? `${Math.max(0, Math.round(ms))} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

function badge(status) {
  return h("span", { className: `badge status-${status}` }, status);
}

function errorText(error) {
  if (!error) return "";
  return error.type ? `${error.type}: ${error.message ?? ""}` : json(error);
}

function errorDetails(error) {
  // The error, the chain of its causes, and its traceback behind a disclosure.
  return h(
    "div",
    { className: "error" },
    h("p", {}, errorText(error)),
    (error.causes ?? []).map((cause) => h("p", { className: "cause" }, `caused by ${cause}`)),
    error.traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", {}, error.traceback)) : null,
  );
}

function setConnected(ok) {
  document.getElementById("connection").hidden = ok;
}

// --- runs list -------------------------------------------------------------------

async function refreshRuns() {
  const query = new URLSearchParams({ limit: String(state.limit + 1) });
  if (state.filter) query.set("status", state.filter);
  if (state.queue) query.set("queue", state.queue);
  if (state.workflow) query.set("workflow", state.workflow);
  if (state.since) query.set("since", new Date(Date.now() - Number(state.since) * 1000).toISOString());
  let runs = await api("GET", `runs?${query}`);
  document.getElementById("runs-more").hidden = runs.length <= state.limit;
  runs = runs.slice(0, state.limit).filter((run) => !state.search || run.run_id.includes(state.search));
  const body = document.getElementById("runs");
  const focused = document.activeElement?.closest?.("#runs tr")?.dataset.runId; // kept across the refresh
  body.replaceChildren(
    ...runs.map((run) =>
      h(
        "tr",
        {
          className: run.run_id === state.selected ? "selected" : "",
          tabindex: "0",
          "data-run-id": run.run_id,
          onclick: () => selectRun(run.run_id),
          onkeydown: (event) => event.key === "Enter" && selectRun(run.run_id),
        },
        h("td", {}, badge(run.status)),
        h("td", { className: "mono", title: run.run_id }, preview(run.run_id, 28)),
        h("td", {}, run.workflow),
        h("td", { className: "muted", title: run.updated_at }, ago(run.updated_at)),
      ),
    ),
  );
  document.getElementById("runs-empty").hidden = runs.length > 0;
  if (focused) body.querySelector(`tr[data-run-id="${CSS.escape(focused)}"]`)?.focus();
}

function showQueue(name) {
  state.queue = name;
  const chip = document.getElementById("queue-filter");
  chip.hidden = !name;
  chip.textContent = name ? `queue ${name} ×` : "";
  refreshRuns();
}

// --- queues and schedules --------------------------------------------------------

// Re-render `container` and give the focus back to what had it (the row with the same `attribute`, or its button).
function keepingFocus(container, attribute, render) {
  const active = document.activeElement;
  const row = active?.closest?.(`[${attribute}]`);
  const key = row && container.contains(row) ? row.getAttribute(attribute) : null;
  render();
  if (key === null) return;
  const again = container.querySelector(`[${attribute}="${CSS.escape(key)}"]`);
  (active.tagName === "BUTTON" ? again?.querySelector("button") : again)?.focus();
}

async function refreshQueues() {
  const queues = await api("GET", "queues");
  document.getElementById("queues-panel").hidden = queues.length === 0;
  const limits = (q) =>
    [
      q.concurrency && `${q.concurrency} at once`,
      q.worker_concurrency && `${q.worker_concurrency} per worker`,
      q.key_concurrency && `${q.key_concurrency} per key`,
      q.rate && `${q.rate[0]} per ${q.rate[1]} s`,
    ].filter(Boolean).join(", ") || "none";
  const list = document.getElementById("queues");
  keepingFocus(list, "data-queue", () => list.replaceChildren(
    ...queues.map((q) =>
      h(
        "tr",
        {
          tabindex: "0",
          "data-queue": q.name,
          title: `Show the runs of queue ${q.name}`,
          onclick: () => showQueue(q.name),
          onkeydown: (event) => event.key === "Enter" && showQueue(q.name),
        },
        h("td", { className: "mono" }, q.name),
        h("td", {}, Object.entries(q.runs).map(([status, n]) => `${n} ${status}`).join(", ") || "none waiting"),
        h("td", { className: "muted" }, limits(q)),
      ),
    ),
  ));
}

async function refreshSchedules() {
  const schedules = await api("GET", "schedules");
  document.getElementById("schedules-panel").hidden = schedules.length === 0;
  const toggle = async (s) => {
    try {
      await api("POST", `schedules/${encodeURIComponent(s.name)}/${s.paused ? "resume" : "pause"}`);
    } catch (err) {
      alert(err.message);
    }
    await refreshSchedules();
  };
  const rows = document.getElementById("schedules");
  keepingFocus(rows, "data-schedule", () => rows.replaceChildren(
    ...schedules.map((s) =>
      h(
        "tr",
        { "data-schedule": s.name },
        h("td", { className: "mono" }, s.name),
        h("td", { className: "mono", title: s.timezone }, s.cron),
        h("td", { className: "muted", title: s.last ?? "" }, s.last ? ago(s.last) : "never"),
        h("td", { className: "muted", title: s.next ?? "" }, s.paused ? "paused" : ago(s.next)),
        h("td", {}, h("button", { type: "button", className: s.paused ? "resume" : "pause", onclick: () => toggle(s) },
          s.paused ? "Resume" : "Pause")),
      ),
    ),
  ));
}

// --- prompt inbox ----------------------------------------------------------------

function resolve(schema) {
  // Follow a local $ref ("#/$defs/Name") into the schema's own $defs.
  let node = schema ?? {};
  for (let depth = 0; depth < 10 && typeof node.$ref === "string"; depth++) {
    const name = node.$ref.split("/").pop();
    node = (schema.$defs ?? {})[name] ?? {};
  }
  return node;
}

function skeleton(schema) {
  const node = resolve(schema);
  if (node.type === "array") return "[]";
  if (node.type === "object" && node.properties) {
    const example = {};
    for (const [name, prop] of Object.entries(node.properties)) {
      const type = resolve(prop).type;
      example[name] = type === "number" || type === "integer" ? 0 : type === "boolean" ? false : type === "string" ? "" : null;
    }
    return JSON.stringify(example, null, 2);
  }
  return "";
}

// --- forms from a JSON schema (json-editor, shipped in static/vendor) ------------------------

// The schema as the form reads it: an enum without a default offers "choose" first (nothing is preselected),
// and a required text may not be left empty. The server still checks the answer against the prompt's own schema.
function formSchema(schema) {
  const copy = JSON.parse(JSON.stringify(schema));
  const visit = (node) => {
    if (!node || typeof node !== "object") return;
    if (Array.isArray(node.enum) && !("default" in node)) {
      node.enum = ["", ...node.enum];
      node.options = { ...(node.options ?? {}), enum_titles: ["— choose —", ...node.enum.slice(1).map(String)] };
      node.x_choose = true;
    }
    for (const name of node.required ?? []) {
      const prop = node.properties?.[name];
      if (prop && prop.type === "string" && !prop.enum && prop.minLength === undefined) prop.minLength = 1;
    }
    for (const [name, prop] of Object.entries(node.properties ?? {})) {
      if (!(node.required ?? []).includes(name)) prop.title = `${prop.title ?? name} (optional)`;
    }
    for (const value of Object.values(node)) {
      if (value && typeof value === "object") Array.isArray(value) ? value.forEach(visit) : visit(value);
    }
  };
  visit(copy);
  return copy;
}

function schemaForm(schema, showError) {
  const holder = h("div", { className: "schema-form" });
  const editor = new JSONEditor(holder, {
    schema: formSchema(schema), theme: "html", iconlib: null, disable_collapse: true, disable_edit_json: true,
    disable_properties: true, disable_array_reorder: true, no_additional_properties: true, show_errors: "interaction",
    use_default_values: true, prompt_before_delete: false, required_by_default: false,
  });
  const value = () => {
    // json-editor reads a field at its change event: take what is typed in a field still focused too.
    // (Only its fields, named root[...]: not the hidden JSON and property editors it keeps beside them.)
    for (const field of holder.querySelectorAll('[name^="root"]')) field.dispatchEvent(new Event("change", { bubbles: true }));
    const problems = editor.validate(editor.getValue()); // with the value: now, not its last change
    if (problems.length) {
      editor.options.show_errors = "always"; // each problem shows at its field
      editor.onChange();
      const where = [...new Set(problems.map((p) => p.path.replace(/^root\.?/, "") || "the answer"))];
      showError(`To fix: ${where.join(", ")}.`);
      return undefined;
    }
    return editor.getValue();
  };
  return { holder, value, editor };
}

if (window.JSONEditor) {
  JSONEditor.defaults.custom_validators.push((schema, value, path) =>
    schema.x_choose && value === "" ? [{ path, property: "enum", message: "Choose one." }] : [],
  );
}

// The controls that answer one prompt, chosen by its JSON schema; each calls submit(value).
function answerControls(prompt, submit, showError) {
  const schema = prompt.schema;
  const node = resolve(schema);
  const id = `answer-${prompt.run_id}-${prompt.key}`;
  if (node.type === "boolean") {
    // Two steps, so a slip of the finger answers nothing: Yes or No, then "Send yes" (or Back).
    const holder = h("span", { className: "choice" });
    const choose = () =>
      holder.replaceChildren(
        h("button", { type: "button", className: "yes", onclick: () => confirmChoice(true) }, "Yes"),
        h("button", { type: "button", className: "no", onclick: () => confirmChoice(false) }, "No"),
      );
    const confirmChoice = (value) => {
      const send = h("button", { type: "button", className: value ? "yes" : "no", onclick: () => submit(value) }, `Send ${value ? "yes" : "no"}`);
      holder.replaceChildren(send, h("button", { type: "button", onclick: choose }, "Back"));
      send.focus();
    };
    choose();
    return [holder];
  }
  if (Array.isArray(node.enum)) {
    const choices = node.enum.map((v, i) => h("option", { value: String(i) }, preview(v, 60)));
    const select = h("select", { id, "aria-label": prompt.question }, h("option", { value: "" }, "— choose —"), choices);
    const send = (e) => {
      e.preventDefault();
      if (select.value === "") return showError("Choose one."); // nothing is preselected
      submit(node.enum[Number(select.value)]);
    };
    return [select, h("button", { type: "submit", className: "primary", onclick: send }, "Answer")];
  }
  if (node.type === "integer" || node.type === "number" || node.type === "string") {
    const numeric = node.type !== "string";
    const input = h("input", {
      id,
      type: numeric ? "number" : "text",
      step: node.type === "integer" ? "1" : numeric ? "any" : undefined,
      placeholder: numeric ? node.type : node.format ?? "text",
      "aria-label": prompt.question,
      autocomplete: "off",
    });
    const send = (e) => {
      e.preventDefault();
      const raw = input.value;
      // An empty or partial number goes as typed, so the server's message explains what is expected.
      submit(numeric && raw.trim() !== "" && !Number.isNaN(Number(raw)) ? Number(raw) : raw);
    };
    return [input, h("button", { type: "submit", className: "primary", onclick: send }, "Answer")];
  }
  if ((node.type === "object" || node.type === "array") && window.JSONEditor) {
    const { holder, value } = schemaForm(schema, showError);
    const send = (e) => {
      e.preventDefault();
      const answer = value();
      if (answer !== undefined) submit(answer);
    };
    return [holder, h("button", { type: "submit", className: "primary", onclick: send }, "Answer")];
  }
  const area = h("textarea", { id, rows: "4", spellcheck: "false", "aria-label": prompt.question, placeholder: "JSON" });
  area.value = skeleton(schema);
  const send = (e) => {
    e.preventDefault();
    let value;
    try {
      value = JSON.parse(area.value);
    } catch (error) {
      showError(`Not valid JSON: ${error.message}`);
      return;
    }
    submit(value);
  };
  return [area, h("button", { type: "submit", className: "primary", onclick: send }, "Answer")];
}

function promptCard(prompt) {
  const error = h("p", { className: "form-error", role: "alert", hidden: true });
  const showError = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };
  const submit = async (value) => {
    showError("");
    form.classList.add("busy");
    try {
      await api("POST", `runs/${encodeURIComponent(prompt.run_id)}/prompts/${encodeURIComponent(prompt.key)}`, { value });
      card.classList.add("answered");
      await refreshAll();
    } catch (err) {
      showError(err.message);
    } finally {
      form.classList.remove("busy");
    }
  };
  const form = h("form", { className: "answer", onsubmit: (e) => e.preventDefault() }, answerControls(prompt, submit, showError));
  const card = h(
    "article",
    { className: "prompt", "data-run-id": prompt.run_id, "data-key": prompt.key },
    h("p", { className: "question" }, prompt.question),
    h(
      "p",
      { className: "meta" },
      h("a", { href: `#run=${encodeURIComponent(prompt.run_id)}`, className: "mono" }, prompt.run_id),
      ` · ${prompt.workflow} · key `,
      h("code", {}, prompt.key),
      prompt.assignee ? ` · for ${prompt.assignee}` : "",
      ` · ${ago(prompt.created_at)}`,
    ),
    form,
    error,
  );
  return card;
}

async function refreshPrompts() {
  const query = state.mine && state.me ? `?${new URLSearchParams({ assignee: state.me })}` : "";
  const prompts = await api("GET", `prompts${query}`);
  document.getElementById("prompt-count").textContent = String(prompts.length);
  const identity = prompts.map((p) => `${p.run_id}\u0000${p.key}`).join("\n");
  if (identity === state.promptsShown) return; // same cards: keep what the user is typing
  state.promptsShown = identity;
  const list = document.getElementById("prompts");
  if (prompts.length === 0) {
    const none = state.mine ? `No prompts are assigned to ${state.me}.` : "No prompts are waiting for an answer.";
    list.replaceChildren(h("p", { className: "empty" }, none));
    return;
  }
  // Cards are kept by prompt: one that stays is never rebuilt or moved, so what is typed in it and the
  // keyboard focus stay; only cards of prompts gone are removed and new ones put in their places.
  const key = (p) => `${p.run_id}\u0000${p.key}`;
  const shown = new Map([...list.querySelectorAll("article.prompt")].map((card) => [card.dataset.identity, card]));
  const wanted = new Set(prompts.map(key));
  for (const child of [...list.children]) if (!wanted.has(child.dataset.identity)) child.remove();
  let before = list.firstElementChild;
  for (const prompt of prompts) {
    const card = shown.get(key(prompt));
    if (card) {
      if (card === before) before = card.nextElementSibling;
      continue;
    }
    const fresh = promptCard(prompt);
    fresh.dataset.identity = key(prompt);
    list.insertBefore(fresh, before);
  }
}

// --- one run and its journal -------------------------------------------------------

function recordItem(record, open) {
  const details = [];
  if (record.kind === "child") {
    // A child run: its run_id is in `question`; follow the link to its own journal.
    details.push(h("p", { className: "question" }, "run ", h("a", { href: `#run=${encodeURIComponent(record.question)}` }, record.question)));
  }
  if (record.kind === "ask") {
    details.push(h("p", { className: "question" }, record.question ?? ""));
    if (record.status === "answered") {
      const by = record.by ? ` by ${record.by}` : "";
      const when = record.finished_at ? ` · ${ago(record.finished_at)}` : "";
      details.push(h("p", { className: "value" }, "→ ", h("code", {}, preview(record.value, 200)), h("span", { className: "muted by", title: record.finished_at ?? "" }, `${by}${record.via ? ` (${record.via})` : ""}${when}`)));
    } else if (record.assignee) {
      details.push(h("p", { className: "muted" }, `for ${record.assignee}`));
    }
  } else if (record.value !== null && record.value !== undefined) {
    const text = json(record.value);
    details.push(
      text.length > 80
        ? h("details", { className: "value", open: open.has(String(record.seq)) }, h("summary", {}, h("code", {}, preview(record.value))), h("pre", {}, JSON.stringify(record.value, null, 2)))
        : h("p", { className: "value" }, h("code", {}, text)),
    );
  }
  if (record.error) details.push(errorDetails(record.error));
  return h(
    "li",
    { className: `record kind-${record.kind} status-${record.status}`, "data-seq": String(record.seq) },
    h(
      "div",
      { className: "record-head" },
      h("span", { className: "seq" }, `#${record.seq}`),
      h("span", { className: "kind" }, record.kind),
      h("span", { className: "name" }, record.name),
      badge(record.status),
      record.attempts > 1 ? h("span", { className: "attempts" }, `${record.attempts} attempts`) : null,
      h("span", { className: "duration" }, duration(record)),
    ),
    details,
  );
}

function renderRun() {
  const run = state.run;
  const panel = document.getElementById("run");
  if (!run) {
    panel.replaceChildren(h("p", { className: "empty" }, "Select a run to see its journal."));
    return;
  }
  const facts = [
    ["workflow", run.workflow],
    ["args", preview(run.args, 120)],
    Object.keys(run.kwargs ?? {}).length ? ["kwargs", preview(run.kwargs, 120)] : null,
    run.status === "completed" ? ["result", preview(run.result, 200)] : null,
    run.wake_at && run.status === "sleeping" ? ["wakes", ago(run.wake_at)] : null,
    ["created", ago(run.created_at)],
    ["updated", ago(run.updated_at)],
  ].filter(Boolean);
  const records = [...state.records.values()].sort((a, b) => a.seq - b.seq);
  // The latest value the run published on each topic (ctx.publish), and its parent run if it is a child.
  const latest = new Map(records.filter((r) => r.kind === "publish").map((r) => [r.name, r.value]));
  for (const [topic, value] of latest) facts.push([`published ${topic}`, preview(value, 120)]);
  if (run.parent) facts.push(["parent", h("a", { href: `#run=${encodeURIComponent(run.parent)}` }, run.parent)]);
  const open = new Set([...panel.querySelectorAll("details[open]")].map((d) => d.closest("li")?.dataset.seq));
  const parts = [
    h(
      "div",
      { className: "run-head" },
      h("button", { type: "button", className: "back", onclick: closeRun, "aria-label": "Back to the runs" }, "←"),
      h("h2", { className: "mono" }, run.run_id),
      h("span", { id: "run-status" }, badge(run.status)),
      h("span", { className: "actions" }, runActions(run)),
    ),
    h("dl", { className: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", { className: k === "workflow" ? "" : "mono" }, v)])),
    run.error ? errorDetails(run.error) : null,
    h("h3", {}, "Journal"),
    records.length
      ? h("ol", { className: "timeline" }, records.map((r) => recordItem(r, open)))
      : h("p", { className: "empty" }, "No journal records yet."),
  ];
  panel.replaceChildren(...parts.filter(Boolean));
}

async function loadRun() {
  if (!state.selected) return;
  const runId = state.selected;
  try {
    const run = await api("GET", `runs/${encodeURIComponent(runId)}`);
    if (state.selected !== runId) return;
    state.run = run;
    for (const record of run.steps) state.records.set(record.seq, record);
  } catch (err) {
    if (err.status !== 404) throw err;
    state.run = null;
  }
  renderRun();
}

function watchRun(runId) {
  // Records come recorded first, then live; the browser resumes with Last-Event-ID after a drop.
  const source = new EventSource(`runs/${encodeURIComponent(runId)}/events`);
  const onRecord = (event) => {
    const record = JSON.parse(event.data);
    state.records.set(record.seq, record);
    renderRun();
  };
  source.onmessage = onRecord;
  source.addEventListener("published", onRecord); // ctx.publish: shown as its topic's latest value too
  source.addEventListener("received", onRecord); // a message the run received (ctx.receive)
  source.addEventListener("end", () => {
    source.close(); // the run has ended; without this the browser would reconnect
    loadRun();
  });
  state.source = source;
}

function closeRun() {
  state.selected = null;
  state.run = null;
  state.source?.close();
  state.source = null;
  history.replaceState(null, "", location.pathname + location.search);
  document.body.classList.remove("showing-run");
  renderRun();
}

async function selectRun(runId) {
  document.body.classList.add("showing-run"); // on a phone the run replaces the lists
  if (state.source) state.source.close();
  state.source = null;
  state.selected = runId;
  state.run = null;
  state.records = new Map();
  if (location.hash !== `#run=${encodeURIComponent(runId)}`) history.replaceState(null, "", `#run=${encodeURIComponent(runId)}`);
  for (const row of document.querySelectorAll("#runs tr")) row.classList.toggle("selected", row.dataset.runId === runId);
  await loadRun();
  if (state.run && state.selected === runId) watchRun(runId);
}

function runActions(run) {
  // What an operator may do to the run in its status: the same rules as `durable retry|pause|resume|cancel`.
  const button = (label, action, className, ask) =>
    h("button", { type: "button", className, onclick: () => act(action, ask) }, label);
  return [
    run.status === "failed" || run.status === "blocked"
      ? button("Retry", "retry", "retry", `Retry run ${run.run_id}? Its failure is set aside and the failed step runs again.`)
      : null,
    run.status === "paused" ? button("Resume", "resume", "resume", null) : null,
    !ENDED.has(run.status) && run.status !== "paused" ? button("Pause", "pause", "pause", null) : null,
    !ENDED.has(run.status) || run.status === "blocked"
      ? button("Cancel run", "cancel", "cancel", `Cancel run ${run.run_id}? It will not run again.`)
      : null,
  ].filter(Boolean);
}

async function act(action, ask) {
  if (!state.run || (ask && !confirm(ask))) return;
  const runId = state.run.run_id;
  try {
    await api("POST", `runs/${encodeURIComponent(runId)}/${action}`);
  } catch (err) {
    alert(err.message);
  }
  await refreshAll();
  // A retried run has ended before and goes on now: load it anew and follow its events again.
  if (state.selected === runId) await selectRun(runId);
}

// --- wiring ------------------------------------------------------------------------

async function refreshAll() {
  try {
    await Promise.all([refreshRuns(), refreshPrompts(), refreshQueues(), refreshSchedules(), state.run && !ENDED.has(state.run.status) ? loadRun() : null]);
    setConnected(true);
  } catch (err) {
    setConnected(false);
    if (err instanceof ApiError && err.status === 401) {
      document.getElementById("connection").textContent = err.message;
    }
  }
}

function runFromHash() {
  const match = /^#run=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

document.getElementById("queue-filter").addEventListener("click", () => showQueue(""));
for (const [id, key] of [["workflow-filter", "workflow"], ["since-filter", "since"], ["run-search", "search"]]) {
  document.getElementById(id).addEventListener("input", (event) => {
    state[key] = event.target.value.trim();
    refreshRuns();
  });
}
document.getElementById("runs-more").addEventListener("click", () => {
  state.limit += 100;
  refreshRuns();
});
document.getElementById("status-filter").addEventListener("change", (event) => {
  state.filter = event.target.value;
  refreshRuns();
});
window.addEventListener("hashchange", () => {
  const runId = runFromHash();
  if (runId && runId !== state.selected) selectRun(runId);
});

// --- starting a run from a workflow's argument schema ---------------------------------------

async function loadWorkflows() {
  const workflows = await api("GET", "workflows");
  const filter = document.getElementById("workflow-filter");
  const choose = document.getElementById("start-workflow");
  for (const wf of workflows) {
    filter.append(h("option", { value: wf.name }, wf.name));
    choose.append(h("option", { value: wf.name }, wf.name));
  }
  document.getElementById("start-panel").hidden = workflows.length === 0;
  const form = document.getElementById("start-form");
  const error = document.getElementById("start-error");
  let fields = null;
  const show = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };
  choose.addEventListener("change", () => {
    show("");
    const wf = workflows.find((w) => w.name === choose.value);
    const holder = document.getElementById("start-fields");
    holder.replaceChildren();
    fields = null;
    if (!wf) return;
    const built = schemaForm({ ...wf.args_schema, title: wf.description ?? wf.name }, show);
    holder.append(built.holder);
    fields = built;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    show("");
    if (!fields) return show("Choose a workflow.");
    const kwargs = fields.value();
    if (kwargs === undefined) return;
    try {
      const started = await api("POST", `workflows/${encodeURIComponent(choose.value)}/runs`, { kwargs });
      location.hash = `run=${encodeURIComponent(started.run_id)}`;
      await refreshAll();
    } catch (err) {
      show(err.message);
    }
  });
}

async function whoAmI() {
  const me = await api("GET", "me").catch(() => null);
  state.me = me?.name ?? null;
  if (!state.me) return;
  document.getElementById("who-name").textContent = state.me;
  document.getElementById("who").hidden = false;
  document.getElementById("inbox-filter").hidden = false;
  document.querySelector('#who input[name="csrf"]').value = cookie("durable_csrf");
}

function showMine(mine) {
  state.mine = mine;
  state.promptsShown = null;
  document.getElementById("mine").setAttribute("aria-pressed", String(mine));
  document.getElementById("everyone").setAttribute("aria-pressed", String(!mine));
  refreshPrompts();
}

document.getElementById("mine").addEventListener("click", () => showMine(true));
document.getElementById("everyone").addEventListener("click", () => showMine(false));

whoAmI().then(loadWorkflows).then(refreshAll);
const first = runFromHash();
if (first) selectRun(first);
setInterval(refreshAll, REFRESH_MS);
