// The /ui page. It reads models.json first, offers a picker when the server serves several
// models, and adapts to the chosen one (the default model at first):
// - digit models ("input": {"kind": "digit"}): draw on the pad, or upload, drop or paste a picture;
// - any other image classifier: upload, drop, paste or (on a phone) photograph an image.
// Every finished stroke or chosen file is POSTed to the chosen model's /models/{name}/predict as
// the multipart field "file". A binary model's answer is shown as its label and P(positive); a
// multi-class model's as its best classes, as bars.
"use strict";

// Relative, so that the page works behind a path prefix: /ui/ -> /ui/models.json, and each
// model's /models/{name}/predict is reached as ../models/{name}/predict.
const MODELS_URL = new URL("models.json", document.baseURI);
// Where the default model answers: the page's only route when models.json cannot be read.
const DEFAULT_PREDICT_URL = new URL("../predict", document.baseURI);
const API_KEY_STORAGE = "dlops-api-key";
// What is sent for a drawing is always a SENT_SIZE square PNG of the strokes, whatever the
// screen's size and pixel density, so a drawing gets the same answer on a phone and a desktop.
const SENT_SIZE = 280;
// Stroke width as a share of the pad's side: MNIST strokes are ~2-3 px in a 20 px tall digit.
const STROKE_SHARE = 0.065;
// Bars shown when the model does not say (its top_k is 0, i.e. all classes): a long tail of
// near-zero bars would say nothing.
const DEFAULT_BARS = 5;
// Labels named in the introduction before "… and N more".
const NAMED_LABELS = 10;

const pad = document.getElementById("pad");
const previewCanvas = document.getElementById("preview");
const dropZone = document.getElementById("drop-zone");
const fileInput = document.getElementById("file");
const cameraInput = document.getElementById("camera");
const clearButton = document.getElementById("clear");
const result = document.getElementById("result");
const errorBox = document.getElementById("error");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const source = document.getElementById("source");
const pickerBox = document.getElementById("picker");
const picker = document.getElementById("model-picker");

// The models served (see pageModel), and the chosen one: null until models.json has been read,
// a stand-in when it could not be.
let models = [];
let model = null;
// Strokes in pad coordinates from 0 to 1, so they can be redrawn at any size.
let strokes = [];
let activeStroke = null;
let activePointer = null;
// A chosen picture shown on the pad or the preview (an ImageBitmap), or null.
let preview = null;
// Answers can arrive out of order; only the latest request's answer is shown.
let requestSerial = 0;
// The last request's body, so that it can be sent again once an API key has been entered.
let lastUpload = null;
// The API key also lives here, for browsers where sessionStorage is disabled.
let sessionKey = null;

// --- the models --------------------------------------------------------------------------------

const isDigitModel = () => model !== null && model.input === "digit";

// A models.json entry (GET /models' fields, plus threshold and top_k) as the page uses it.
function pageModel(entry) {
  return {
    name: entry.name,
    version: entry.version,
    state: entry.state,
    isDefault: entry.default,
    input: entry.input.kind,
    binary: entry.task === "binary",
    labels: entry.labels,
    top_k: entry.top_k,
    // The route is from the service's root ("/models/x/predict"): "..", from /ui/, keeps any
    // path prefix in front of the service.
    predict: new URL(`..${entry.routes.predict}`, document.baseURI),
  };
}

// What the page falls back to without models.json: uploads, sent to the default model, whose
// answer's own shape says how to show it.
const STAND_IN = {
  name: "",
  version: "",
  input: "image",
  binary: false,
  labels: [],
  top_k: 0,
  predict: DEFAULT_PREDICT_URL,
};

// How many classes to ask for: the model's own top_k, or a few when that means "all".
function barCount() {
  const classes = model.labels.length || Infinity;
  return Math.min(model.top_k > 0 ? model.top_k : DEFAULT_BARS, classes);
}

// "binary_classifier_3" -> "Binary classifier 3": the heading of a multi-class model.
function humanName(name) {
  const words = name.replace(/[_-]+/g, " ").trim();
  return words ? words[0].toUpperCase() + words.slice(1) : "Image classifier";
}

const quoted = (label) => `“${label}”`;

// "0, 90, 180 or 270"; "a, b, …, j and 990 more" for a long list.
function labelList(labels) {
  if (labels.length > NAMED_LABELS) {
    const rest = labels.length - NAMED_LABELS;
    return `${labels.slice(0, NAMED_LABELS).join(", ")} and ${rest} more`;
  }
  if (labels.length < 2) return labels.join("");
  return `${labels.slice(0, -1).join(", ")} or ${labels[labels.length - 1]}`;
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

// Headings and wording from the model's name and labels.
function describeModel() {
  const { labels } = model;
  const how = isDigitModel()
    ? "Draw a digit with your mouse, finger or pen, or upload, drop or paste a picture of one."
    : "Upload, drop or paste an image, or take a photo with your phone.";
  let heading;
  let what;
  if (model.binary && labels.length === 2) {
    const [negative, positive] = labels.map(quoted);
    heading = `Is it ${positive} or ${negative}?`;
    what = `The model answers ${positive} or ${negative}, with the probability of ${positive}.`;
    setText("proba-name", `Probability of ${positive}`);
  } else {
    heading = humanName(model.name);
    const classes = labels.length ? `its ${labels.length} classes (${labelList(labels)})` : "";
    what = classes
      ? `The model ranks ${classes} and shows the best ${barCount()}.`
      : "The model ranks its classes and shows the best ones.";
  }
  if (isDigitModel()) what += " It answers as soon as you lift the pen.";
  setText("heading", heading);
  setText("lead", `${how} ${what}`);
  document.title = model.name ? `${heading} · ${model.name} · dlops` : `${heading} · dlops`;
  setText("model-tag", model.name ? `Model ${model.name}, version ${model.version}` : "");

  if (isDigitModel()) {
    setText("input-title", "Your digit");
    setText("pad-hint", "Draw a digit here, or drop an image file");
    setText("sends", "The page sends your drawing as a PNG, or your file as it is, to");
    setText("curl", "curl -F file=@digit.png");
    // Clearing the drawing comes first for the keyboard (back in place after an image model).
    document.getElementById("actions").prepend(clearButton);
  } else {
    setText("input-title", "Your image");
    setText("pad-hint", imageHint());
    setText("sends", "The page sends your image file as it is to");
    setText("curl", "curl -F file=@photo.jpg");
    // Choosing an image comes first for the keyboard, then clearing it.
    document.getElementById("actions").append(clearButton);
  }
  setText("endpoint", `POST ${predictUrl().pathname}${predictUrl().search}`);
  document.body.dataset.input = isDigitModel() ? "digit" : "image";
}

// What the empty preview invites to: a phone has neither drag and drop nor a paste shortcut.
function imageHint() {
  if (matchMedia("(pointer: coarse)").matches) return "Tap here to choose an image";
  const paste = /Mac|iPhone|iPad/.test(navigator.platform) ? "⌘V" : "Ctrl+V";
  return `Drop an image here, click to choose one, or paste one with ${paste}`;
}

async function readModels() {
  const response = await fetch(MODELS_URL, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return (await response.json()).models.map(pageModel);
}

// "digits_10", "binary_classifier_3 (default)", "tagger (loading)".
function optionText(each) {
  const notes = [];
  if (each.isDefault) notes.push("default");
  if (each.state === "LOADING") notes.push("loading");
  if (each.state === "UNAVAILABLE") notes.push("failed to load");
  return notes.length ? `${each.name} (${notes.join(", ")})` : each.name;
}

// One option per model, the chosen one selected; the picker only shows when there is a choice.
function showPicker() {
  const options = models.map((each) => {
    const option = document.createElement("option");
    option.value = each.name;
    option.textContent = optionText(each);
    return option;
  });
  picker.replaceChildren(...options);
  picker.value = model.name;
  pickerBox.hidden = models.length < 2;
}

// Adapts the page to ``chosen``, starting from an empty pad and no answer.
function choose(chosen) {
  model = chosen;
  showPicker();
  describeModel();
  clearAll();
}

const defaultModel = () => models.find((each) => each.isDefault) || models[0];

async function loadModels() {
  try {
    models = await readModels();
  } catch (error) {
    choose(STAND_IN);
    const where = `${MODELS_URL.pathname}: ${error.message}`;
    showError("The models' description could not be read", where);
    return;
  }
  if (models.length === 0) {
    choose(STAND_IN);
    const how = "Load one with POST /v2/repository/models/{name}/load.";
    showError("This server serves no model now", how);
    return;
  }
  choose(defaultModel());
}

// Models are loaded and unloaded while the page is open (/v2/repository): the list is read
// again when the tab is shown again, and when the chosen model answered 404 (``why``).
async function refreshModels(why = "") {
  let latest;
  try {
    latest = await readModels();
  } catch {
    return;  // the list the page has stays; the next refresh may read it
  }
  models = latest;
  const still = models.find((each) => each.name === model.name);
  if (still) {
    const reloaded = still.version !== model.version;
    model = still;
    showPicker();
    if (reloaded) describeModel();
    return;
  }
  if (models.length === 0) {  // nothing to turn to: the chosen model's 404 says what to do
    showPicker();
    return;
  }
  const gone = model === STAND_IN ? null : model.name;  // a stand-in gives way silently
  choose(defaultModel());
  if (gone !== null) {
    const message = `${why} The page now uses ${model.name}.`.trim();
    showError(`The model ${gone} is no longer served`, message);
  }
}

picker.addEventListener("change", () => {
  const chosen = models.find((each) => each.name === picker.value);
  if (chosen && chosen !== model) choose(chosen);
});

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && model !== null) refreshModels();
});

function predictUrl() {
  const url = new URL(model.predict);
  if (!model.binary) url.searchParams.set("top_k", String(barCount()));
  return url;
}

// --- drawing and previews ----------------------------------------------------------------------

function padColours() {
  const style = getComputedStyle(dropZone);
  return {
    paper: style.getPropertyValue("--pad-paper").trim() || "#fff",
    ink: style.getPropertyValue("--pad-ink").trim() || "#111",
  };
}

function drawStrokes(context, size) {
  const { paper, ink } = padColours();
  context.fillStyle = paper;
  context.fillRect(0, 0, size, size);
  context.strokeStyle = ink;
  context.fillStyle = ink;
  context.lineWidth = STROKE_SHARE * size;
  context.lineCap = "round";
  context.lineJoin = "round";
  for (const stroke of strokes) {
    const [first, ...rest] = stroke;
    if (rest.length === 0) {  // a tap leaves a dot
      context.beginPath();
      context.arc(first.x * size, first.y * size, context.lineWidth / 2, 0, 2 * Math.PI);
      context.fill();
      continue;
    }
    context.beginPath();
    context.moveTo(first.x * size, first.y * size);
    for (const point of rest) context.lineTo(point.x * size, point.y * size);
    context.stroke();
  }
}

// The picture, whole and centred ("contain"), on the paper colour.
function drawPreview(context, width, height) {
  context.fillStyle = padColours().paper;
  context.fillRect(0, 0, width, height);
  if (!preview) return;
  const scale = Math.min(width / preview.width, height / preview.height);
  const shownWidth = preview.width * scale;
  const shownHeight = preview.height * scale;
  context.imageSmoothingQuality = "high";
  context.drawImage(
    preview, (width - shownWidth) / 2, (height - shownHeight) / 2, shownWidth, shownHeight,
  );
}

// The visible canvas follows its CSS size and the screen's pixel density, so it stays sharp.
function render() {
  if (model === null) return;
  const canvas = isDigitModel() ? pad : previewCanvas;
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (width > 0 && height > 0 && (canvas.width !== width || canvas.height !== height)) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext("2d");
  if (preview || !isDigitModel()) drawPreview(context, canvas.width, canvas.height);
  else drawStrokes(context, canvas.width);
  dropZone.classList.toggle("has-content", preview !== null || strokes.length > 0);
}

function drawingAsPng() {
  const canvas = document.createElement("canvas");
  canvas.width = SENT_SIZE;
  canvas.height = SENT_SIZE;
  drawStrokes(canvas.getContext("2d"), SENT_SIZE);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function pointOf(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: Math.min(1, Math.max(0, (event.clientX - box.left) / box.width)),
    y: Math.min(1, Math.max(0, (event.clientY - box.top) / box.height)),
  };
}

pad.addEventListener("pointerdown", (event) => {
  if (!isDigitModel()) return;
  if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  if (preview) {  // drawing after an upload starts a new drawing
    preview = null;
    strokes = [];
  }
  activePointer = event.pointerId;
  pad.setPointerCapture(event.pointerId);
  activeStroke = [pointOf(event)];
  strokes.push(activeStroke);
  render();
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== activePointer) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const each of events.length ? events : [event]) activeStroke.push(pointOf(each));
  render();
});

function endStroke(event) {
  if (event.pointerId !== activePointer) return;
  activePointer = null;
  activeStroke = null;
  if (event.type === "pointercancel") return;  // e.g. the browser took over for a gesture
  const drawing = strokes;
  drawingAsPng().then((png) => {
    // Clear replaces the strokes: a drawing cleared while its PNG was being made is not sent.
    if (strokes === drawing) send(png, "drawing.png", "your drawing");
  });
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function clearAll() {
  requestSerial += 1;  // an answer still on its way belongs to the cleared input
  strokes = [];
  preview = null;
  lastUpload = null;
  fileInput.value = "";
  cameraInput.value = "";
  source.textContent = "";
  hideError();
  setResult("empty");
  render();
}
clearButton.addEventListener("click", clearAll);

// --- files: upload, camera, drop, paste ----------------------------------------------------------

// The file itself is sent, not a re-encoded copy of the preview: the model sees the very bytes
// (and EXIF orientation) that curl would send.
async function showFile(file, description = file.name) {
  if (model === null) return;
  strokes = [];
  try {
    preview = await createImageBitmap(file);
  } catch {
    preview = null;  // not an image the browser decodes (or none at all): the API will say
  }
  render();
  send(file, file.name || "image", `${description} (${formatBytes(file.size)})`);
}

document.getElementById("upload").addEventListener("click", () => fileInput.click());
document.getElementById("take-photo").addEventListener("click", () => cameraInput.click());
for (const input of [fileInput, cameraInput]) {
  input.addEventListener("change", () => {
    if (input.files.length > 0) showFile(input.files[0]);
  });
}
// Without a pad to draw on, a click on the empty preview opens the file chooser too.
dropZone.addEventListener("click", () => {
  if (model !== null && !isDigitModel()) fileInput.click();
});

// The whole page accepts a dropped file, so a near miss does not open the file in the tab.
function hasFiles(event) {
  return event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
}
document.addEventListener("dragover", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  dropZone.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) dropZone.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  dropZone.classList.remove("dragging");
  if (event.dataTransfer.files.length > 0) showFile(event.dataTransfer.files[0]);
});

// An image on the clipboard (a screenshot, "Copy image" in a browser) pasted anywhere on the
// page. Text is left alone, so pasting into the API key field works as usual.
function pastedImage(clipboard) {
  if (!clipboard) return null;
  for (const item of clipboard.items) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}
document.addEventListener("paste", (event) => {
  const image = pastedImage(event.clipboardData);
  if (image === null) return;
  event.preventDefault();
  showFile(image, "pasted image");
});

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} kB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// --- the request and its answer ----------------------------------------------------------------

function storedKey() {
  try {
    return sessionStorage.getItem(API_KEY_STORAGE);
  } catch {
    return null;  // storage disabled: the key is asked for again after a reload
  }
}

async function send(body, filename, description) {
  const serial = ++requestSerial;
  lastUpload = { body, filename, description };
  hideError();
  setResult("pending");
  source.textContent = `Sent: ${description}`;
  const form = new FormData();
  form.append("file", body, filename);
  const headers = {};
  const key = storedKey() || sessionKey;
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  let payload = null;
  try {
    response = await fetch(predictUrl(), { method: "POST", body: form, headers });
    payload = await response.json().catch(() => null);
  } catch (error) {
    if (serial === requestSerial) {
      showError("The service could not be reached", `${error.message}. Is it running?`);
    }
    return;
  }
  if (serial !== requestSerial) return;
  const answered = payload && (typeof payload.proba === "number" || Array.isArray(payload.labels));
  if (response.ok && answered) {
    showAnswer(payload);
    return;
  }
  const message = payload && typeof payload.error === "string"
    ? payload.error
    : `${response.status} ${response.statusText || "error"} (the answer was not JSON)`;
  if (response.status === 401) {
    showError(key ? "The API key was refused" : "This service needs an API key", message);
    askForKey();
    return;
  }
  showError(`The service answered ${response.status}`, message);
  if (response.status === 404) refreshModels(message);  // the model was unloaded meanwhile
}

function setResult(state) {
  result.dataset.state = state;
  result.setAttribute("aria-busy", state === "pending" ? "true" : "false");
}

// The answer's own shape decides how it is shown: "labels" (multi-label: every label at or above
// the threshold) or a "top_k" list (multi-class) as bars, else the binary contract's label and
// P(positive).
function showAnswer(answer) {
  if (Array.isArray(answer.labels)) {
    result.dataset.answer = "ranked";  // the same bars; the label line lists every label found
    const found = answer.labels.map((entry) => entry.label).join(", ");
    setText("label", found || `none at or above ${percent(answer.threshold)}`);
    setText("label-name", "Labels");
    showBars(answer.top_k);
  } else if (Array.isArray(answer.top_k)) {
    setText("label", answer.label);
    result.dataset.answer = "ranked";
    setText("label-name", "Most likely");
    showBars(answer.top_k);
  } else {
    setText("label", answer.label);
    result.dataset.answer = "binary";
    setText("label-name", "Label");
    const probaText = document.getElementById("proba");
    probaText.textContent = `${percent(answer.proba)} (proba ${figure(answer.proba)})`;
    probaText.dataset.value = String(answer.proba);  // the API's exact figure, for scripts and tests
    document.getElementById("meter-fill").style.width = `${clamp01(answer.proba) * 100}%`;
  }
  setResult("answer");
}

// One list item per class, best first (the API's order): its label and percentage as text, and
// a bar that only repeats the percentage for the eye (hidden from screen readers).
function showBars(ranked) {
  setText("bars-title", ranked.length === 1 ? "Best class" : `Best ${ranked.length} classes`);
  const items = ranked.map((entry, rank) => {
    const item = document.createElement("li");
    item.className = rank === 0 ? "bar bar-best" : "bar";
    item.dataset.testid = "bar";
    item.dataset.label = entry.label;
    item.dataset.index = String(entry.index);
    item.dataset.value = String(entry.proba);  // the API's exact figure
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = entry.label;
    name.title = `class ${entry.index}`;
    const separator = document.createElement("span");
    separator.className = "visually-hidden";
    separator.textContent = ": ";
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(entry.proba);
    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    // A CSSOM write, which the policy's style-src 'self' allows (a style="" attribute it would not).
    fill.style.width = `${clamp01(entry.proba) * 100}%`;
    track.append(fill);
    item.append(name, separator, value, track);
    return item;
  });
  document.getElementById("bars").replaceChildren(...items);
}

const clamp01 = (value) => Math.max(0, Math.min(1, value));
const figure = (proba) => (proba >= 0.001 ? proba.toFixed(4) : proba.toExponential(2));

// 0.1 % steps, without rounding a near-certain answer to a flat 0 % or 100 %.
function percent(proba) {
  if (proba > 0 && proba < 0.001) return "< 0.1 %";
  if (proba > 0.999 && proba < 1) return "> 99.9 %";
  return `${(proba * 100).toFixed(1)} %`;
}

function showError(title, message) {
  setResult("error");
  setText("error-title", title);
  setText("error-message", message);
  errorBox.hidden = false;
}

function hideError() {
  errorBox.hidden = true;
}

function askForKey() {
  keyForm.hidden = false;
  keyInput.value = "";
  keyInput.focus();
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  sessionKey = key;
  try {
    sessionStorage.setItem(API_KEY_STORAGE, key);
  } catch {
    // storage disabled: sessionKey above keeps it for this page
  }
  keyForm.hidden = true;
  if (lastUpload) send(lastUpload.body, lastUpload.filename, lastUpload.description);
});

const resizes = new ResizeObserver(render);
resizes.observe(pad);
resizes.observe(previewCanvas);
loadModels();
