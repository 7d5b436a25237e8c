// The /ui page: draw on the pad or upload an image; every finished stroke or chosen file is
// POSTed to /predict as the multipart field "file", and the answer or the API's error is shown.
"use strict";

// Relative, so that the page works behind a path prefix: /ui/ -> /predict.
const PREDICT_URL = new URL("../predict", document.baseURI);
const API_KEY_STORAGE = "dlops-api-key";
// What is sent is always a SENT_SIZE square PNG of the strokes, whatever the screen's size and
// pixel density, so a drawing gets the same answer on a phone and on a desktop.
const SENT_SIZE = 280;
// Stroke width as a share of the pad's side: MNIST strokes are ~2-3 px in a 20 px tall digit.
const STROKE_SHARE = 0.065;

const pad = document.getElementById("pad");
const dropZone = document.getElementById("drop-zone");
const fileInput = document.getElementById("file");
const result = document.getElementById("result");
const errorBox = document.getElementById("error");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const source = document.getElementById("source");

// Strokes in pad coordinates from 0 to 1, so they can be redrawn at any size.
let strokes = [];
let activeStroke = null;
let activePointer = null;
// An uploaded picture shown on the pad (an ImageBitmap), or null.
let preview = null;
// Answers can arrive out of order; only the latest request's answer is shown.
let requestSerial = 0;
// The last upload, so that it can be sent again once an API key has been entered.
let lastUpload = null;
// The API key also lives here, for browsers where sessionStorage is disabled.
let sessionKey = null;

function padColours() {
  const style = getComputedStyle(pad);
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

function drawPreview(context, size) {
  const { paper } = padColours();
  context.fillStyle = paper;
  context.fillRect(0, 0, size, size);
  const scale = Math.min(size / preview.width, size / preview.height);
  const width = preview.width * scale;
  const height = preview.height * scale;
  context.drawImage(preview, (size - width) / 2, (size - height) / 2, width, height);
}

// The visible pad follows its CSS size and the screen's pixel density, so strokes stay sharp.
function render() {
  const side = Math.round(pad.clientWidth * (window.devicePixelRatio || 1));
  if (side > 0 && pad.width !== side) {
    pad.width = side;
    pad.height = side;
  }
  const context = pad.getContext("2d");
  if (preview) drawPreview(context, pad.width);
  else drawStrokes(context, pad.width);
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
  requestSerial += 1;  // an answer still on its way belongs to the cleared drawing
  strokes = [];
  preview = null;
  lastUpload = null;
  fileInput.value = "";
  source.textContent = "";
  hideError();
  setResult("empty");
  render();
}
document.getElementById("clear").addEventListener("click", clearAll);

async function showFile(file) {
  strokes = [];
  try {
    preview = await createImageBitmap(file);
  } catch {
    preview = null;  // not an image the browser decodes (or none at all): the API will say
  }
  render();
  send(file, file.name, `${file.name} (${formatBytes(file.size)})`);
}

document.getElementById("upload").addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => {
  if (fileInput.files.length > 0) showFile(fileInput.files[0]);
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

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} kB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

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
    response = await fetch(PREDICT_URL, { method: "POST", body: form, headers });
    payload = await response.json().catch(() => null);
  } catch (error) {
    if (serial === requestSerial) {
      showError("The service could not be reached", `${error.message}. Is it running?`);
    }
    return;
  }
  if (serial !== requestSerial) return;
  if (response.ok && payload && typeof payload.proba === "number") {
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
}

function setResult(state) {
  result.dataset.state = state;
  result.setAttribute("aria-busy", state === "pending" ? "true" : "false");
}

function showAnswer({ proba, label }) {
  document.getElementById("label").textContent = label;
  const probaText = document.getElementById("proba");
  const figure = proba >= 0.001 ? proba.toFixed(4) : proba.toExponential(2);
  probaText.textContent = `${percent(proba)} (proba ${figure})`;
  probaText.dataset.value = String(proba);  // the API's exact figure, for scripts and tests
  document.getElementById("meter-fill").style.width = `${Math.max(0, Math.min(1, proba)) * 100}%`;
  setResult("answer");
}

// 0.1 % steps, without rounding a near-certain answer to a flat 0 % or 100 %.
function percent(proba) {
  if (proba > 0 && proba < 0.001) return "< 0.1 %";
  if (proba > 0.999 && proba < 1) return "> 99.9 %";
  return `${(proba * 100).toFixed(1)} %`;
}

function showError(title, message) {
  setResult("error");
  document.getElementById("error-title").textContent = title;
  document.getElementById("error-message").textContent = message;
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

new ResizeObserver(render).observe(pad);
render();
