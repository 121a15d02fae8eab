// The page: the original tfjs lstm-text-generation demo's controls, over the textgen HTTP API.
// Model output and user text only ever reach the page as text (textContent, text nodes), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "textgen.token";   // sessionStorage: gone when the tab closes
const JOB_KEY = "textgen.job";       // the last job this page started, re-attached on reload
const BASE_MODEL = "base-english";   // the shipped base model (trainer/base_model.py), offered first

// ---- status and errors ----------------------------------------------------------------------------

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

function failed(what, err) {
  if (err.name === "AbortError") return;
  const message = err instanceof ApiError ? err.message : `${err.message || err}`;
  showError(`${what}: ${message}`);
  setStatus(`${what}.`);
  if (err instanceof ApiError && err.status === 401) askForToken();
}

function askForToken() {
  $("token-box").hidden = false;
  $("token").focus();
}

// ---- the HTTP API -----------------------------------------------------------------------------------

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function errorOf(response) {
  let code = `HTTP_${response.status}`, message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) { code = body.error.code || code; message = body.error.message || message; }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(response.status, code, message);
}

async function api(method, path, body, contentType) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = contentType || "application/json";
    init.body = contentType ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "UNAVAILABLE", "the web server cannot be reached");
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

// Read a Server-Sent Events response (fetch, so it can carry a body, a token and an AbortSignal),
// calling onEvent(name, data) for each event until the stream ends.
async function streamEvents(method, path, body, signal, onEvent) {
  const init = { method, headers: headers({ Accept: "text/event-stream" }), signal };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

// ---- formatting ---------------------------------------------------------------------------------------

function fmt(x, digits) { return Number.isFinite(x) ? x.toFixed(digits) : "–"; }
function when(seconds) { return seconds ? new Date(seconds * 1000).toLocaleString() : "–"; }
function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); return td; }
function option(select, value, text) {
  const o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o); return o;
}
function button(text, onClick) {
  const b = document.createElement("button"); b.type = "button"; b.textContent = text;
  b.addEventListener("click", onClick); return b;
}

// ---- source data -------------------------------------------------------------------------------------

let corpora = [];

const OFFLINE_CORPUS = "tfjs-code";  // the built-in text a server gets through npm, without the text's web site

async function loadCorpora(select) {
  corpora = (await api("GET", "/api/v1/corpora")).corpora;
  const keep = select || $("corpus").value;
  $("corpus").replaceChildren();
  for (const c of corpora) {
    const size = c.size ? `, ${(c.size / 1e6).toFixed(2)} MB` : "";
    option($("corpus"), c.id, c.builtin ? `${c.name}${size}` : `${c.name} (your text${size})`);
  }
  // By default, a text the server already has, else tfjs-code: it comes through npm, so it needs no
  // access to the other texts' web sites.
  const ready = corpora.find((c) => c.available) || corpora.find((c) => c.id === OFFLINE_CORPUS);
  if (keep && corpora.some((c) => c.id === keep)) $("corpus").value = keep;
  else if (ready) $("corpus").value = ready.id;
  describeCorpus();
}

function selectedCorpus() { return corpora.find((c) => c.id === $("corpus").value); }

function describeCorpus() {
  const c = selectedCorpus();
  $("corpus-info").textContent = !c ? "" : c.builtin
    ? (c.available ? "built in, on the server"
      : c.id === OFFLINE_CORPUS ? "built in; fetched through npm on first use"
        : "built in; downloaded on first use: the server needs the internet for it")
    : `uploaded, ${c.size} bytes`;
  if (c && !$("from-model").value) $("model-name").placeholder = c.builtin ? c.id : "my-text";
}

async function uploadOwnText() {
  const file = $("own-file").files[0];
  const text = $("own-text").value;
  if (!file && !text) { showError("Load this text: paste a text or pick a file first."); return; }
  const name = $("own-name").value.trim() || (file ? file.name : "my-text.txt");
  setStatus(`Uploading ${name}…`);
  $("upload").disabled = true;
  try {
    const corpus = await api("POST", `/api/v1/corpora?name=${encodeURIComponent(name)}`,
                             file || text, "text/plain; charset=utf-8");
    await loadCorpora(corpus.id);
    showError("");
    setStatus(`Loaded ${corpus.name}: ${corpus.size} bytes. Train a model on it below.`);
  } catch (err) {
    failed("Could not load the text", err);
  } finally {
    $("upload").disabled = false;
  }
}

// ---- models ---------------------------------------------------------------------------------------------

let models = [];

async function loadModels(selectName) {
  models = (await api("GET", "/api/v1/models")).models;
  const body = $("models").tBodies[0];
  body.replaceChildren();
  for (const m of models) {
    const info = m.latest;
    const row = body.insertRow();
    row.dataset.model = m.name;
    cell(row, m.name);
    cell(row, m.versions.join(", "));
    cell(row, info.corpus);
    cell(row, info.lstm_layer_sizes.join(", "));
    cell(row, info.bits_per_char ? fmt(info.bits_per_char, 3) : "–");  // 0: never validated (an imported model)
    cell(row, `${info.epochs}`);
    cell(row, when(info.created));
    const actions = cell(row, "");
    actions.append(
      button("Generate", () => { $("gen-model").value = m.name; $("generate").scrollIntoView(); }),
      button("Keep training", () => { $("from-model").value = m.name; fromModelChanged(); $("train").scrollIntoView(); }),
      button("Download for TensorFlow.js", () => downloadTfjs(m)),
      deleteButton(m),
    );
  }
  $("no-models").hidden = models.length > 0;
  for (const [select, first] of [[$("gen-model"), null], [$("from-model"), "a new model"]]) {
    const keep = select === $("gen-model") ? (selectName || select.value) : select.value;
    select.replaceChildren();
    if (first) option(select, "", first);
    // Start from: the shipped base model first, the one to fine-tune your own text from.
    const ordered = first ? [...models].sort((a, b) => (b.name === BASE_MODEL) - (a.name === BASE_MODEL)) : models;
    for (const m of ordered) {
      option(select, m.name, first && m.name === BASE_MODEL
        ? `${m.name}: general English, to fine-tune on your text`
        : `${m.name} (v${m.latest.version}, ${m.latest.corpus})`);
      // an older version by its reference, NAME:VERSION, as every other place takes it
      for (const v of m.versions.slice(0, -1).reverse()) option(select, `${m.name}:${v}`, `${m.name}:${v}`);
    }
    if (keep && [...select.options].some((o) => o.value === keep)) select.value = keep;
  }
  fromModelChanged();
  updateButtons();
}

// Deleting takes two clicks: the first arms the button for a few seconds.
function deleteButton(m) {
  const b = button("Delete", async () => {
    if (!b.classList.contains("confirm")) {
      b.classList.add("confirm");
      b.textContent = `Delete all ${m.versions.length} version(s)?`;
      setTimeout(() => { b.classList.remove("confirm"); b.textContent = "Delete"; }, 5000);
      return;
    }
    b.disabled = true;
    try {
      const done = await api("DELETE", `/api/v1/models/${encodeURIComponent(m.name)}?all=true`);
      await loadModels();
      setStatus(`Deleted ${m.name} (version ${done.deleted_versions.join(", ")}).`);
      showError("");
    } catch (err) {
      failed(`Could not delete ${m.name}`, err);
      b.disabled = false;
    }
  });
  b.classList.add("delete");
  if (!can("admin")) {
    b.disabled = true;
    b.title = `Deleting a model needs a key with scope 'admin'; this key has ${key.scopes.join(", ")}.`;
  }
  return b;
}

// A model as the original's model.json and weights.bin, in a zip (fetched with the page's token).
async function downloadTfjs(m) {
  try {
    const response = await fetch(`/api/v1/models/${encodeURIComponent(m.name)}/tfjs`, { headers: headers() });
    if (!response.ok) throw await errorOf(response);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = `${m.name}-v${m.latest.version}-tfjs.zip`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    setStatus(`Downloaded ${m.name} for TensorFlow.js (model.json and weights.bin in ${link.download}).`);
  } catch (err) {
    failed(`Could not download ${m.name}`, err);
  }
}

// The original's model.json and weights.bin, with the text selected above (it saves no charset).
async function importTfjs() {
  showError("");
  const corpus = selectedCorpus();
  const form = new FormData();
  try {
    if (!$("import-json").files.length || !$("import-weights").files.length) {
      throw new ApiError(400, "INVALID_ARGUMENT", "choose the model.json and its weights.bin first");
    }
    if (!corpus) throw new ApiError(400, "INVALID_ARGUMENT", "choose the text the model was trained on first");
    form.append("model_json", $("import-json").files[0]);
    for (const file of $("import-weights").files) form.append("weights", file);
    form.append("name", $("import-name").value.trim());
    form.append(corpus.builtin ? "corpus" : "corpus_id", corpus.id);
    const response = await fetch("/api/v1/models/import-tfjs", { method: "POST", headers: headers(), body: form });
    if (!response.ok) throw await errorOf(response);
    const done = await response.json();
    await loadModels(done.model_name);
    setStatus(`Imported ${done.model_name} version ${done.model_version} (${done.charset_size} characters).`);
  } catch (err) {
    failed("Could not import the model", err);
  }
}

let lastContinuing = false;  // Start from had a model when the recipe was last set from it

function fromModelChanged() {
  const continuing = !!$("from-model").value;
  // A trained model is fine-tuned with the finetune recipe (what the server picks with no recipe); the
  // recipe changes with the choice of Start from, not when the model list is reloaded.
  if (recipes && continuing !== lastContinuing && recipes.recipes.some((r) => r.name === "finetune")) {
    $("recipe").value = continuing ? "finetune" : recipes.recommended;
    describeRecipe();
  }
  if (recipes) lastContinuing = continuing;
  $("layer-sizes").disabled = continuing;
  $("layer-sizes").title = continuing ? "kept from the model being trained further"
                                      : "one number per layer, separated by commas; empty: the recipe's";
  if (continuing) $("model-name").placeholder = $("from-model").value.split(":")[0];  // a new version of it
  else describeCorpus();
}

// ---- training -----------------------------------------------------------------------------------------

let job = null;          // {id, state}
let watchAbort = null;
let batchChart = null, epochChart = null;
const batchData = [[], []];             // global batch number, loss
const epochData = [[], [], []];         // epoch, loss, validation loss

function makeChart(element, series, data) {
  const width = Math.max(300, element.clientWidth || 600);
  return new uPlot({
    width, height: 200,
    scales: { x: { time: false } },
    // whole batches and epochs only on the x axis
    axes: [{ label: series[0], incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000] },
           { label: "loss (nats/char)" }],
    series: [{ label: series[0] }, ...series.slice(1).map((label, i) => ({
      label, stroke: ["#1f77b4", "#ff7f0e"][i], width: 1.5, points: { show: true, size: 4 },
    }))],
  }, data, element);
}

function resetCharts() {
  for (const a of batchData) a.length = 0;
  for (const a of epochData) a.length = 0;
  redraw();
  $("samples").replaceChildren();
}

function redraw() {
  if (typeof uPlot === "undefined") return;
  if (!batchChart) batchChart = makeChart($("batch-chart"), ["batch", "loss"], batchData);
  if (!epochChart) epochChart = makeChart($("epoch-chart"), ["epoch", "training", "validation"], epochData);
  batchChart.setData(batchData);
  epochChart.setData(epochData);
  $("batch-chart").dataset.points = batchData[0].length;
  $("epoch-chart").dataset.points = epochData[0].length;
}

// ---- recipes -------------------------------------------------------------------------------------------

let recipes = null;   // GET /api/v1/recipes: {recipes: [{name, description, settings}], recommended, defaults}
// The number fields of the training form, by training option; empty ones take the recipe's values.
const NUMBER_FIELDS = { time_budget_minutes: "time-budget", epochs: "epochs", examples_per_epoch: "examples-per-epoch",
                        batch_size: "batch-size", validation_split: "validation-split", learning_rate: "learning-rate",
                        dropout: "dropout", weight_decay: "weight-decay" };
const CHOICE_FIELDS = { objective: "objective", optimizer: "optimizer", lr_schedule: "lr-schedule" };

async function loadRecipes() {
  if (recipes) return;
  recipes = await api("GET", "/api/v1/recipes");
  $("recipe").replaceChildren();
  for (const r of recipes.recipes) {
    option($("recipe"), r.name, r.name === recipes.recommended ? `${r.name} (recommended)` : r.name);
  }
  $("recipe").value = recipes.recommended;
  describeRecipe();
}

// What the chosen recipe changes, and its values as the empty fields' placeholders.
function describeRecipe() {
  const r = recipes && recipes.recipes.find((x) => x.name === $("recipe").value);
  if (!r) return;
  const changes = Object.entries(r.settings).map(([k, v]) => `${k} = ${v}`).join(", ");
  $("recipe-headline").textContent = r.headline || r.description;  // one line; the rest on demand
  $("recipe-info").textContent = `${r.description}` + (changes ? ` Sets ${changes}.` : "");
  const value = (name) => (name in r.settings ? r.settings[name] : recipes.defaults[name]);
  for (const [name, id] of Object.entries(NUMBER_FIELDS)) {
    const v = value(name);
    $(id).placeholder = name === "time_budget_minutes" && !v ? "off (by epochs)" : `${v}`;
  }
  for (const [name, id] of Object.entries(CHOICE_FIELDS)) {
    $(id).options[0].textContent = `the recipe's (${value(name)})`;
  }
  $("layer-sizes").placeholder = value("lstm_layer_sizes").join(",");
}

function trainingOptions() {
  const options = { recipe: $("recipe").value };
  for (const [name, id] of Object.entries(NUMBER_FIELDS)) {
    const raw = $(id).value.trim();
    if (raw === "") {
      if ($(id).validity.badInput) throw new ApiError(400, "INVALID_ARGUMENT", `${name} is not a number`);
      continue;
    }
    options[name] = Number(raw);
  }
  for (const [name, id] of Object.entries(CHOICE_FIELDS)) {
    if ($(id).value) options[name] = $(id).value;
  }
  if (!options.recipe) delete options.recipe;
  const sizes = $("layer-sizes").value.trim();
  if (!$("from-model").value && sizes) options.lstm_layer_sizes = sizes;
  return options;
}

async function train() {
  showError("");
  const corpus = selectedCorpus();
  const request = { options: {}, model_name: $("model-name").value.trim(), from_model: $("from-model").value };
  try {
    request.options = trainingOptions();
    if (!corpus) throw new ApiError(400, "INVALID_ARGUMENT", "choose a text to train on first");
    if (corpus.builtin) request.corpus = corpus.id; else request.corpus_id = corpus.id;
    if (!request.model_name && !request.from_model && !corpus.builtin) request.model_name = "my-text";
    $("train").disabled = true;
    const submitted = await api("POST", "/api/v1/jobs", request);
    localStorage.setItem(JOB_KEY, submitted.id);
    setStatus(`Training job submitted (${submitted.model_name}).`);
    watchJob(submitted);
  } catch (err) {
    failed("Could not start training", err);
    updateButtons();
  }
}

async function cancelJob() {
  if (!job) return;
  $("cancel-job").disabled = true;
  try {
    await api("POST", `/api/v1/jobs/${encodeURIComponent(job.id)}/cancel`);
    setStatus("Stopping the training job at the next batch…");
  } catch (err) {
    failed("Could not stop the job", err);
  }
}

function setJobState(state, text) {
  job.state = state;
  $("job-state").textContent = text;
  $("job-state").dataset.state = state;
  updateButtons();
}

function onJobEvent(name, e) {
  const d = e[name] || {};
  switch (name) {
    case "queued":
      setJobState("queued", `Job ${job.id.slice(0, 8)} (${job.model_name}) is waiting for a worker.`);
      setStatus("Training job queued.");
      break;
    case "started":
      job.batches = d.batches_per_epoch; job.epochs = d.epochs;
      setJobState("started", d.resumed_from_epoch
        ? `Job ${job.id.slice(0, 8)} resumed from epoch ${d.resumed_from_epoch} (attempt ${d.attempt}).`
        : `Job ${job.id.slice(0, 8)} is training ${job.model_name}: ${d.epochs} epochs.`);
      break;
    case "batch": {
      const x = (d.epoch - 1) * d.batches + d.batch;
      batchData[0].push(x); batchData[1].push(d.loss);
      $("batch-progress").max = d.batches; $("batch-progress").value = d.batch;
      setStatus(`Training: epoch ${d.epoch}/${job.epochs || "?"}, batch ${d.batch}/${d.batches}, loss ${fmt(d.loss, 4)}`);
      redraw();
      break;
    }
    case "epoch":
      epochData[0].push(d.epoch); epochData[1].push(d.loss); epochData[2].push(d.val_loss);
      redraw();
      addSamples(d);
      $("job-state").textContent = `Epoch ${d.epoch}/${d.epochs}: loss ${fmt(d.loss, 4)}, validation loss ` +
        `${fmt(d.val_loss, 4)} (${fmt(d.bits_per_char, 3)} bits/char), ${Math.round(d.examples_per_second)} examples/s`;
      break;
    case "finished":
      setJobState("finished", `Finished: ${d.model_name} version ${d.model_version}.`);
      setStatus(`Model ${d.model_name} v${d.model_version} is trained. Generate text with it below.`);
      $("batch-progress").value = $("batch-progress").max;
      showNewModel(d.model_name);
      break;
    case "failed":
      setJobState("failed", `Failed: ${d.reason}`);
      showError(`Training failed: ${d.reason}`);
      setStatus("Training failed.");
      break;
    case "cancelled":
      setJobState("cancelled", "Cancelled.");
      setStatus("Training stopped.");
      break;
    case "error":
      failed("Lost the training job's progress", new ApiError(e.error.status, e.error.code, e.error.message));
      break;
  }
}

// One listing is enough: the server loads a finished job's model before any watcher hears "finished"
// (its Training service rescans the model store first, and ListModels rescans too).
async function showNewModel(name) {
  try {
    await loadModels(name);
  } catch (err) {
    failed("Could not list the models", err);
  }
}

function addSamples(d) {
  const box = document.createElement("div");
  box.className = "epoch";
  const head = document.createElement("div");
  head.textContent = `Epoch ${d.epoch}: validation loss ${fmt(d.val_loss, 4)}`;
  box.appendChild(head);
  for (const s of d.samples || []) {
    const pre = document.createElement("pre");
    pre.textContent = `T=${s.temperature}: ${s.text}`;
    box.appendChild(pre);
  }
  $("samples").prepend(box);
}

async function watchJob(submitted) {
  if (watchAbort) watchAbort.abort();
  watchAbort = new AbortController();
  job = { id: submitted.id, model_name: submitted.model_name, state: submitted.state };
  resetCharts();
  setJobState(submitted.state, `Job ${job.id.slice(0, 8)}: ${submitted.state}.`);
  const mine = watchAbort;
  try {
    await streamEvents("GET", `/api/v1/jobs/${encodeURIComponent(job.id)}/events`, undefined, mine.signal,
                       onJobEvent);
  } catch (err) {
    if (mine === watchAbort) failed("Lost the training job's progress", err);
  }
}

// Reopening the page: follow a job still running (this page's last one, else the newest running one),
// or replay this page's last job so its charts come back.
async function reattach() {
  const jobs = (await api("GET", "/api/v1/jobs?limit=20")).jobs;
  const running = jobs.filter((j) => j.state === "queued" || j.state === "started");
  const last = localStorage.getItem(JOB_KEY);
  const pick = running.find((j) => j.id === last) || running[0] || jobs.find((j) => j.id === last);
  if (pick) watchJob(pick);
}

// ---- generation -----------------------------------------------------------------------------------------

let generation = null;   // AbortController of the stream in progress

function setGenState(state, text) {
  $("gen-info").dataset.state = state;
  $("gen-info").textContent = text;
  updateButtons();
}

// Top-k, top-p and stop strings, only those set. Stop strings are separated by commas or new lines;
// "\n" and "\t" in one stand for a new line and a tab. The server checks the values.
function samplingControls() {
  const controls = {};
  for (const [name, id] of [["top_k", "top-k"], ["top_p", "top-p"]]) {
    const raw = $(id).value.trim();
    if (raw !== "") controls[name] = Number(raw);
    else if ($(id).validity.badInput) throw new ApiError(400, "INVALID_ARGUMENT", `${name} is not a number`);
  }
  const stop = $("stop-strings").value.split(/[,\n]/).map((s) => s.trim()).filter((s) => s)
    .map((s) => s.replace(/\\([nt\\])/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]));
  if (stop.length) controls.stop = stop;
  return controls;
}

const END_NOTES = { stop: " (it generated a stop string, left out of the text)" };

async function generate() {
  showError("");
  const request = { model: $("gen-model").value, prompt: $("seed-text").value,
                    length: Number($("gen-length").value), temperature: Number($("temperature").value) };
  if ($("gen-length").value.trim() === "" || $("temperature").value.trim() === "") {
    failed("Could not generate", new ApiError(400, "INVALID_ARGUMENT", "give a length and a temperature"));
    return;
  }
  if ($("seed").value.trim() !== "") request.seed = $("seed").value.trim();
  try {
    Object.assign(request, samplingControls());
  } catch (err) {
    failed("Could not generate", err);
    return;
  }
  const controller = new AbortController();
  generation = controller;
  const seedNode = $("output-seed"), textNode = document.createTextNode("");
  $("output-text").replaceChildren(textNode);
  seedNode.textContent = "";
  let produced = 0, start = null, frame = 0;
  delete $("gen-info").dataset.reason;
  // Text arrives in chunks of a few characters: add it to the page once per frame, not per chunk.
  const pending = [];
  const flush = () => {
    if (frame) { cancelAnimationFrame(frame); frame = 0; }
    if (!pending.length) return;
    textNode.appendData(pending.join(""));
    pending.length = 0;
    $("output").scrollTop = $("output").scrollHeight;
  };
  setGenState("running", "Generating…");
  setStatus(`Generating ${request.length} characters with ${request.model}…`);
  try {
    await streamEvents("POST", "/api/v1/generate", request, controller.signal, (name, d) => {
      if (name === "start") {
        start = d;
        seedNode.textContent = d.prompt;
        setGenState("running", `Generating: ${d.model} v${d.version}, seed ${d.seed}…`);
      } else if (name === "text") {
        pending.push(d.text);
        produced += [...d.text].length;  // characters (code points), as the server counts them
        if (!frame) frame = requestAnimationFrame(flush);
      } else if (name === "end") {
        flush();
        $("gen-info").dataset.reason = d.reason;
        setGenState("done", `${d.characters} characters from ${start.model} v${start.version}, seed ${start.seed}` +
                             ` (the seed text is grey; the same seed gives the same text). ` +
                             `End reason: ${d.reason}${END_NOTES[d.reason] || ""}.`);
        setStatus("Text generated.");
      } else if (name === "error") {
        throw new ApiError(d.error.status, d.error.code, d.error.message);
      }
    });
    flush();
    if ($("gen-info").dataset.state === "running") setGenState("done", `${produced} characters.`);
  } catch (err) {
    flush();
    if (err.name === "AbortError") {
      setGenState("stopped", `Stopped after ${produced} characters` + (start ? ` (seed ${start.seed}).` : "."));
      setStatus("Generation stopped.");
    } else {
      setGenState("error", "");
      failed("Could not generate", err);
    }
  } finally {
    if (generation === controller) generation = null;
    updateButtons();
  }
}

function stopGeneration() { if (generation) generation.abort(); }

// ---- wiring ---------------------------------------------------------------------------------------------

function updateButtons() {
  const training = !!job && (job.state === "queued" || job.state === "started");
  $("train").disabled = training || !can("train");
  $("cancel-job").disabled = !training;
  $("generate").disabled = !!generation || models.length === 0 || !can("generate");
  $("stop").disabled = !generation;
}

// ---- the key's scopes -------------------------------------------------------------------------------------

let key = { auth: "off", scopes: ["generate", "train", "admin"] };   // until /api/v1/whoami says

function can(scope) { return key.scopes.includes(scope); }

// What each part of the page needs, and the note shown in it when the key lacks that scope (the models'
// table stays: listing and downloading need 'generate', deleting 'admin', said on each Delete button).
const NEEDS = [
  ["#source-section", "train", "Uploading and choosing a text to train on"],
  ["#model-section > .row", "train", ""],
  ["#import-section", "train", "Importing a model"],
  ["#training-section", "train", "Training"],
  ["#generation-section", "generate", "Generating"],
];

function applyScopes() {
  const who = key.auth === "off" ? "This server needs no key."
    : `Key ${key.id}${key.name ? ` (${key.name})` : ""}: scopes ${key.scopes.join(", ") || "none"}.`;
  $("key-info").textContent = who;
  $("key-info").hidden = key.auth === "off";
  for (const [selector, scope, what] of NEEDS) {
    const part = document.querySelector(selector), allowed = can(scope);
    for (const el of part.querySelectorAll("button, input, select, textarea")) {
      if (!allowed) el.disabled = true;
      else if (el.dataset.scopeDisabled) el.disabled = false;
      el.dataset.scopeDisabled = allowed ? "" : "1";
    }
    if (!what) continue;
    let note = part.querySelector(".scope-note");
    if (!note) {
      note = document.createElement("p");
      note.className = "scope-note";
      part.querySelector("h2, summary").after(note);
    }
    note.textContent = allowed ? "" : `${what} needs a key with scope '${scope}'; this key has ${key.scopes.join(", ") || "none"}.`;
    note.hidden = allowed;
  }
  updateButtons();
}

async function init() {
  setStatus("Loading the corpora and models…");
  try {
    key = await api("GET", "/api/v1/whoami");
    await loadRecipes();
    if (can("train")) await loadCorpora();
    if (can("generate")) await loadModels();
    applyScopes();
    $("token-box").hidden = true;
    showError("");
    setStatus(models.length ? "Ready: train a model, or generate text with a trained one."
                            : "Ready: pick a text and train a model.");
    if (can("train")) await reattach();
  } catch (err) {
    failed("Could not reach the service", err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("corpus").addEventListener("change", describeCorpus);
  $("recipe").addEventListener("change", describeRecipe);
  $("upload").addEventListener("click", uploadOwnText);
  $("from-model").addEventListener("change", fromModelChanged);
  $("import").addEventListener("click", importTfjs);
  $("train").addEventListener("click", train);
  $("cancel-job").addEventListener("click", cancelJob);
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", stopGeneration);
  $("token-box").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    init();
  });
  window.addEventListener("resize", () => {
    for (const [chart, id] of [[batchChart, "batch-chart"], [epochChart, "epoch-chart"]]) {
      if (chart) chart.setSize({ width: Math.max(300, $(id).clientWidth), height: 200 });
    }
  });
  redraw();
  init();
});
