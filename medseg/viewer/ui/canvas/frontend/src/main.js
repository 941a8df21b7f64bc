// medseg viewer canvas: a NiiVue (WebGL2) view inside a Streamlit component iframe.
//
// Python owns the data and sends it as bytes arguments (NIfTI), each under a key; the page
// reports which keys it holds ("loaded"), so a rerun resends nothing it already has. Paging,
// window/level, zoom and drawing run here at frame rate; a click (crosshair) or a finished
// stroke is sent back. Voxel indices are NiiVue's RAS voxel order: Python sends RAS-ordered
// volumes, so that order is also the arrays' own. No request leaves the page.
import { DRAG_MODE, NVImage, Niivue, SLICE_TYPE } from "@niivue/niivue";

const LAYOUTS = {
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  multiplanar: SLICE_TYPE.MULTIPLANAR,
  render: SLICE_TYPE.RENDER,
};
const PAGE_AXIS = { sagittal: 0, coronal: 1, axial: 2 };
const PAGE_KEYS = { ArrowUp: 1, ArrowRight: 1, PageUp: 10, ArrowDown: -1, ArrowLeft: -1, PageDown: -10 };

const canvas = document.getElementById("gl");
const statusLine = document.getElementById("status");
const errorBox = document.getElementById("error");

const nv = new Niivue({
  backColor: [0, 0, 0, 1],
  isRadiologicalConvention: true,
  show3Dcrosshair: true,
  crosshairColor: [1, 0.78, 0.16, 1],
  dragMode: DRAG_MODE.contrast,
  logLevel: "error",
  loadingText: "",
  isColorbar: false,
  isOrientCube: false,
});

// tells Python a reloaded page from the one whose strokes it acknowledged
const INSTANCE = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

const s = {
  attached: false,
  digest: null,
  caseKey: null,
  layerKeys: {}, // overlay name -> key of the bytes it shows
  layerImages: {}, // overlay name -> NVImage
  drawingKey: null,
  snapshot: null, // the drawing as last synced with Python (diffed at each stroke's end)
  pending: [], // strokes Python has not acknowledged yet (resent until it does)
  editId: 0,
  strokes: 0,
  caseLoads: 0,
  timing: null, // ms from a case's bytes to its first image
  seq: 0,
  asked: null, // the keys last asked for (asked once, so a stuck server is not spammed)
  applied: {}, // argument -> JSON of the value last applied
  focusSent: null,
  pageView: "axial",
  tool: null,
  latest: null, // newest render arguments not yet handled
  busy: false,
};

function post(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
}

function focus() {
  if (!nv.volumes.length) return null;
  return Array.from(nv.frac2vox(nv.scene.crosshairPos), (v) => Math.round(v));
}

let sendTimer = null;
function send() {
  // one message per event-loop turn: a stroke's end and its mouse-up are one rerun
  if (sendTimer !== null) return;
  sendTimer = setTimeout(() => {
    sendTimer = null;
    s.seq += 1;
    s.focusSent = JSON.stringify(focus());
    const value = {
      seq: s.seq,
      instance: INSTANCE,
      digest: s.digest,
      loaded: { case: s.caseKey, layers: { ...s.layerKeys }, drawing: s.drawingKey },
      focus: focus(),
      edits: s.pending,
    };
    post("streamlit:setComponentValue", { value, dataType: "json" });
  }, 0);
}

function buffer(bytes) {
  // a bytes argument may be a view into a larger message buffer
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) return bytes.buffer;
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

function has(bytes) {
  return bytes instanceof Uint8Array && bytes.byteLength > 0;
}

function changed(name, value) {
  const text = JSON.stringify(value);
  if (s.applied[name] === text) return false;
  s.applied[name] = text;
  return true;
}

function setStatus() {
  const back = nv.volumes[0];
  const f = focus();
  if (!back || !f) return;
  const dims = back.dimsRAS;
  const axis = PAGE_AXIS[s.pageView];
  statusLine.textContent =
    `${s.pageView} ${f[axis] + 1}/${dims[axis + 1]} · voxel (RAS) ${f.join(", ")} · ` +
    `W ${(back.cal_max - back.cal_min).toPrecision(4)} / L ${((back.cal_max + back.cal_min) / 2).toPrecision(4)}`;
}

async function loadCase(args) {
  s.pending = [];
  s.layerKeys = {};
  s.layerImages = {};
  s.drawingKey = null;
  s.snapshot = null;
  s.applied = {};
  if (nv.drawBitmap) nv.closeDrawing();
  const image = await NVImage.new(buffer(args.image), "case.nii", "gray", 1);
  nv.volumes = [];
  nv.addVolume(image);
  s.caseKey = args.case;
  s.digest = args.digest;
  s.caseLoads += 1;
}

async function loadLayer(spec, bytes) {
  const image = await NVImage.new(buffer(bytes), `${spec.name}.nii`, "gray", spec.opacity);
  if (spec.kind === "label") {
    image.setColormapLabel(spec.lut);
  } else {
    nv.addColormap(`medseg_${spec.name}`, spec.lut);
    image.colormap = `medseg_${spec.name}`;
    image.cal_min = spec.range[0];
    image.cal_max = spec.range[1];
  }
  s.layerImages[spec.name] = image;
  s.layerKeys[spec.name] = spec.key;
}

function reapplyPending() {
  for (const edit of s.pending) {
    for (const v of edit.voxels) nv.drawBitmap[v] = edit.erase ? 0 : edit.label;
  }
}

async function syncDrawing(args) {
  const spec = args.drawing;
  if (!spec) {
    if (s.drawingKey !== null) nv.closeDrawing();
    s.drawingKey = null;
    s.snapshot = null;
    return false;
  }
  if (changed("drawing_lut", spec.lut)) nv.setDrawColormap(spec.lut);
  if (changed("drawing_opacity", spec.opacity)) nv.setDrawOpacity(spec.opacity);
  if (s.drawingKey === spec.key) return false;
  if (spec.alias !== null && s.drawingKey === spec.alias) {
    // Python applied our own strokes: the bitmap already shows that version
    s.drawingKey = spec.key;
    return false;
  }
  if (!has(args.drawing_bytes)) return true;
  const image = await NVImage.new(buffer(args.drawing_bytes), "drawing.nii", "gray", 1);
  nv.loadDrawing(image);
  reapplyPending();
  s.snapshot = nv.drawBitmap.slice();
  nv.refreshDrawing(true);
  s.drawingKey = spec.key;
  return false;
}

function applyTool(tool) {
  s.tool = tool;
  if (!tool || tool.mode === "navigate") {
    nv.setDrawingEnabled(false);
    return;
  }
  nv.opts.penSize = tool.pen_size;
  nv.setDrawingEnabled(true);
  nv.setPenValue(tool.mode === "eraser" ? 0 : tool.label, tool.mode === "brush" && tool.filled);
}

async function render(args) {
  if (!s.attached) {
    document.getElementById("wrap").style.height = `${args.height}px`;
    canvas.style.height = "100%";
    await nv.attachToCanvas(canvas);
    s.attached = true;
  }
  let missing = false;
  const started = performance.now();
  const fresh = args.case !== s.caseKey && has(args.image);
  if (args.case !== s.caseKey) {
    if (!has(args.image)) {
      missing = true;
    } else {
      await loadCase(args);
    }
  }
  if (s.caseKey === null) return ask(args);
  let reorder = false;
  const wanted = new Set(args.layers.map((spec) => spec.name));
  for (const name of Object.keys(s.layerKeys)) {
    if (!wanted.has(name)) {
      delete s.layerKeys[name];
      delete s.layerImages[name];
      reorder = true;
    }
  }
  for (const spec of args.layers) {
    if (s.layerKeys[spec.name] !== spec.key) {
      const bytes = args[`layer_${spec.name}`];
      if (!has(bytes)) {
        missing = true;
        continue;
      }
      await loadLayer(spec, bytes);
      reorder = true;
    }
    const image = s.layerImages[spec.name];
    if (image && spec.kind === "label" && changed(`lut_${spec.name}`, spec.lut)) {
      image.setColormapLabel(spec.lut);
      reorder = true;
    }
    if (image && image.opacity !== spec.opacity) {
      image.opacity = spec.opacity;
      reorder = true;
    }
  }
  if (reorder) {
    // addVolume (not an assignment) builds each overlay's textures
    nv.volumes = [nv.volumes[0]];
    for (const spec of args.layers) {
      if (s.layerImages[spec.name]) nv.addVolume(s.layerImages[spec.name]);
    }
  }
  const back = nv.volumes[0];
  if (changed("window", args.window)) {
    back.cal_min = args.window[0];
    back.cal_max = args.window[1];
    nv.updateGLVolume();
  }
  if (changed("radiological", args.radiological)) nv.setRadiologicalConvention(args.radiological);
  if (changed("layout", args.layout)) nv.setSliceType(LAYOUTS[args.layout]);
  s.pageView = args.view;
  missing = (await syncDrawing(args)) || missing;
  if (changed("tool", args.tool)) applyTool(args.tool);
  s.pending = s.pending.filter((edit) => edit.id > args.ack);
  const target = JSON.stringify(args.focus);
  if (args.focus && changed("focus", args.focus) && target !== s.focusSent) {
    nv.scene.crosshairPos = nv.vox2frac(args.focus);
    nv.drawScene();
  }
  setStatus();
  if (fresh) {
    // bytes received -> first image drawn (a 1-pixel read waits for the GPU)
    nv.drawScene();
    nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
    s.timing = Math.round(performance.now() - started);
  }
  if (missing) return ask(args);
  const loaded = JSON.stringify([s.caseKey, s.layerKeys, s.drawingKey]);
  if (loaded !== s.applied.loaded) {
    s.applied.loaded = loaded;
    send(); // tell Python what this page holds, so the next rerun sends nothing again
  }
}

function ask(args) {
  const wanted = JSON.stringify([args.case, args.layers.map((l) => l.key), args.drawing]);
  if (s.asked === wanted) return;
  s.asked = wanted;
  s.applied.loaded = null;
  send();
}

async function pump() {
  if (s.busy) return;
  s.busy = true;
  try {
    while (s.latest !== null) {
      const args = s.latest;
      s.latest = null;
      try {
        await render(args);
        errorBox.style.display = "none";
      } catch (err) {
        errorBox.textContent = `Canvas error: ${err && err.message ? err.message : err}. ` +
          "WebGL2 is needed; choose 'static images' in the sidebar otherwise.";
        errorBox.style.display = "block";
      }
      post("streamlit:setFrameHeight", { height: document.body.scrollHeight });
      if (s.attached) nv.resizeListener(); // the iframe's width settles after the first frame
    }
  } finally {
    s.busy = false;
  }
}

window.addEventListener("resize", () => s.attached && nv.resizeListener());
window.addEventListener("message", (event) => {
  if (!event.data || event.data.type !== "streamlit:render") return;
  s.latest = event.data.args;
  pump();
});

// ----------------------------------------------------------------------------- interaction
function page(step) {
  const move = [0, 0, 0];
  move[PAGE_AXIS[s.pageView]] = step;
  nv.moveCrosshairInVox(move[0], move[1], move[2]);
}

window.addEventListener(
  "keydown",
  (event) => {
    const step = PAGE_KEYS[event.key];
    if (step === undefined || s.caseKey === null) return;
    event.preventDefault();
    event.stopPropagation();
    page(step);
  },
  true,
);

function strokeEnded() {
  const bitmap = nv.drawBitmap;
  const snap = s.snapshot;
  const tool = s.tool;
  if (!bitmap || !snap || !tool || tool.mode === "navigate") return;
  const erase = tool.mode === "eraser";
  const voxels = [];
  let reverted = false;
  for (let i = 0; i < bitmap.length; i++) {
    if (bitmap[i] === snap[i]) continue;
    // the eraser clears the chosen label only (Python's rule): other labels come back
    const kept = erase ? snap[i] === tool.label && bitmap[i] === 0 : bitmap[i] === tool.label;
    if (kept) {
      voxels.push(i);
      snap[i] = bitmap[i];
    } else {
      bitmap[i] = snap[i];
      reverted = true;
    }
  }
  if (reverted) nv.refreshDrawing(true);
  if (!voxels.length) return;
  s.editId += 1;
  s.pending.push({ id: s.editId, label: tool.label, erase, voxels });
  s.strokes += 1;
  send();
}

nv.onDrawingChanged = (action) => {
  if (action === "draw") strokeEnded();
};
nv.onMouseUp = () => send();
nv.onLocationChange = () => setStatus();
nv.onIntensityChange = () => setStatus();

// For the browser tests and benchmarks (read-only use).
window.medsegCanvas = { nv, state: s, focus, page, NVImage };

document.title = INSTANCE;
post("streamlit:componentReady", { apiVersion: 1 });
post("streamlit:setFrameHeight", { height: 120 });
