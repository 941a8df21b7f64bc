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
// layouts that show a volume rendering, which alone needs NiiVue's gradient texture
const LAYOUTS_3D = new Set(["multiplanar", "render"]);
const PAGE_KEYS = { ArrowUp: 1, ArrowRight: 1, PageUp: 10, ArrowDown: -1, ArrowLeft: -1, PageDown: -10 };

const canvas = document.getElementById("gl");
const statusLine = document.getElementById("status");
const poster = document.getElementById("poster");
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
  previewKey: null, // the case whose 8-bit preview is shown (its own voxels follow)
  layerKeys: {}, // overlay name -> key of the bytes it shows
  layerImages: {}, // overlay name -> NVImage
  drawingKey: null,
  snapshot: null, // the drawing as last synced with Python (diffed at each stroke's end)
  pending: [], // strokes Python has not acknowledged yet (resent until it does)
  editId: 0,
  strokes: 0,
  caseLoads: 0,
  timing: null, // ms from a case's bytes reaching this page to its first image
  timingPage: null, // ms from this page's creation to its first image
  timingPoster: null, // ms from this page's creation to the server-drawn slice shown
  attachMs: null, // NiiVue attached to the canvas (compiles its shaders), at the first render
  timingFull: null, // ms from a case's bytes to its own voxels and overlays drawn
  steps: [], // [step, ms] of the last case's load (for the benchmark)
  seq: 0,
  asked: null, // the keys last asked for (asked once, so a stuck server is not spammed)
  applied: {}, // argument -> JSON of the value last applied
  focusSent: null,
  pageView: "axial",
  tool: null,
  latest: null, // newest render arguments not yet handled
  busy: false,
  preview: false, // the back volume is the 8-bit preview (its voxels are not the case's)
  backPending: null, // the case's volume, loaded while the preview is shown
  gradient: true, // NiiVue's own gradient shaders are in place
  unit: "", // the image's intensity unit (HU for CT)
  roi: null, // the last ROI dragged: {plane (0 axial, 1 coronal, 2 sagittal), start, end}
  strokePlanes: new Map(), // "axis:index" -> [axis, index] touched by the current stroke
};

// NiiVue computes a gradient texture (blur + Sobel over every voxel) for the 3D render each
// time the back volume changes; on a CPU renderer that is most of a volume's load time. Out of
// 3D layouts its shaders are swapped for one that rasterises nothing.
let realGradient = null;
function skipGradient(skip) {
  if (skip === !s.gradient) return false;
  const names = ["blurShader", "sobelFirstOrderShader", "gradientPrePassShader", "sobelSecondOrderShader"];
  if (realGradient === null) realGradient = Object.fromEntries(names.map((n) => [n, nv[n]]));
  if (skip) {
    const gl = nv.gl;
    const shader = (type, text) => {
      const out = gl.createShader(type);
      gl.shaderSource(out, `#version 300 es\n${text}`);
      gl.compileShader(out);
      return out;
    };
    const program = gl.createProgram();
    gl.attachShader(program, shader(gl.VERTEX_SHADER, "void main() { gl_Position = vec4(2.0, 2.0, 2.0, 1.0); }"));
    gl.attachShader(program, shader(gl.FRAGMENT_SHADER, "precision lowp float; out vec4 c; void main() { c = vec4(0.0); }"));
    gl.linkProgram(program);
    const none = { use: (g) => g.useProgram(program), uniforms: {} }; // absent uniforms: no-ops
    for (const n of names) nv[n] = none;
  } else {
    Object.assign(nv, realGradient);
  }
  s.gradient = !skip;
  return true;
}

// During a pen stroke only the drawn plane changes: upload that plane, not the whole bitmap.
const fullRefreshDrawing = nv.refreshDrawing.bind(nv);
nv.refreshDrawing = (isForceRedraw = true, useClickToSegmentBitmap = false) => {
  const at = nv.drawPenLocation;
  const axis = [2, 1, 0][nv.drawPenAxCorSag]; // axial: z, coronal: y, sagittal: x
  const bitmap = nv.drawBitmap;
  if (useClickToSegmentBitmap || !nv.uiData.mouseButtonLeftDown || !at || Number.isNaN(at[0]) ||
      axis === undefined || nv.opts.is2DSliceShader || !bitmap || !nv.back || !nv.drawTexture) {
    return fullRefreshDrawing(isForceRedraw, useClickToSegmentBitmap);
  }
  const gl = nv.gl;
  const [nx, ny, nz] = nv.back.dims.slice(1, 4);
  const index = Math.round(at[axis]);
  s.strokePlanes.set(`${axis}:${index}`, [axis, index]);
  gl.activeTexture(gl.TEXTURE7); // NiiVue's drawing texture unit
  gl.bindTexture(gl.TEXTURE_3D, nv.drawTexture);
  const [plane, box] = planeOf(bitmap, [nx, ny, nz], axis, index);
  gl.texSubImage3D(gl.TEXTURE_3D, 0, ...box, gl.RED, gl.UNSIGNED_BYTE, plane);
  if (isForceRedraw) nv.drawScene();
};

function planeOf(bitmap, [nx, ny, nz], axis, index) {
  // one plane of a NIfTI-order bitmap (x fastest) and its texSubImage3D box
  if (axis === 2) {
    return [bitmap.subarray(index * nx * ny, (index + 1) * nx * ny), [0, 0, index, nx, ny, 1]];
  }
  if (axis === 1) {
    const out = new Uint8Array(nx * nz);
    for (let z = 0; z < nz; z++) out.set(bitmap.subarray((z * ny + index) * nx, (z * ny + index + 1) * nx), z * nx);
    return [out, [0, index, 0, nx, 1, nz]];
  }
  const out = new Uint8Array(ny * nz);
  for (let z = 0, o = 0; z < nz; z++) {
    for (let y = 0; y < ny; y++, o++) out[o] = bitmap[(z * ny + y) * nx + index];
  }
  return [out, [index, 0, 0, 1, ny, nz]];
}

function planeVoxels(dims, axis, index, visit) {
  // flat indices of one plane, in order
  const [nx, ny, nz] = dims;
  const lo = [0, 0, 0];
  const hi = [nx, ny, nz];
  lo[axis] = index;
  hi[axis] = index + 1;
  for (let z = lo[2]; z < hi[2]; z++) {
    for (let y = lo[1]; y < hi[1]; y++) {
      for (let x = lo[0]; x < hi[0]; x++) visit((z * ny + y) * nx + x);
    }
  }
}

function post(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
}

function focus() {
  if (!nv.volumes.length || s.preview) return null;
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
      loaded: {
        case: s.caseKey,
        preview: s.previewKey,
        layers: { ...s.layerKeys },
        drawing: s.drawingKey,
      },
      focus: focus(),
      edits: s.pending,
      roi: s.roi,
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
  // the volume holds the image's own values (HU for CT), so the crosshair's value is in its unit
  const value = back.getValue(f[0], f[1], f[2]);
  statusLine.textContent =
    `${s.pageView} ${f[axis] + 1}/${dims[axis + 1]} · voxel (RAS) ${f.join(", ")} · ` +
    `${Number(value).toPrecision(5)} ${s.unit} · ` +
    `W ${(back.cal_max - back.cal_min).toPrecision(4)} / L ${((back.cal_max + back.cal_min) / 2).toPrecision(4)}`;
}

function setLayers(back, overlays) {
  // one texture update for all layers (each addVolume would redo every layer below it)
  nv.volumes = [back, ...overlays];
  nv.setVolume(back, 0);
}

function firstFrame() {
  // draw now and wait for the GPU (a 1-pixel read), then let the page present the frame
  nv.drawScene();
  nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
  return new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
}

function firstImage(started) {
  s.timing = Math.round(performance.now() - started);
  if (s.timingPage === null) s.timingPage = Math.round(performance.now());
  hidePoster();
}

// The server-drawn JPEG of the slice the canvas opens on (index.html shows it as soon as it
// comes): NiiVue's attach compiles ~50 shader programs, 0.3-1.5 s on a CPU renderer. Placed as
// NiiVue places a single slice (fitted, centred); it goes when NiiVue draws, or cannot.
function hidePoster() {
  if (!poster.src) return;
  poster.style.display = "none";
  URL.revokeObjectURL(poster.src);
  poster.removeAttribute("src");
}

function step(name, since) {
  s.steps.push([name, Math.round(performance.now() - since)]);
  return performance.now();
}

function resetCase(args) {
  s.steps = [];
  s.pending = [];
  s.layerKeys = {};
  s.layerImages = {};
  s.drawingKey = null;
  s.snapshot = null;
  s.applied = {};
  if (nv.drawBitmap) nv.closeDrawing();
  skipGradient(!LAYOUTS_3D.has(args.layout));
  if (changed("layout", args.layout)) nv.setSliceType(LAYOUTS[args.layout]);
}

async function showPreview(args, started) {
  // a small 8-bit copy, already windowed, sent alone: an image within a second or two; the
  // page then asks for the case's own voxels (a message of ~8x the bytes)
  resetCase(args);
  s.caseKey = null;
  s.previewKey = args.case;
  s.preview = true;
  let t = performance.now();
  const preview = await NVImage.new(buffer(args.preview), "preview.nii", "gray", 1);
  t = step("preview decoded", t);
  preview.cal_min = 0;
  preview.cal_max = 255;
  setLayers(preview, []);
  if (args.focus && args.shape) {
    // the opening slice and crosshair, as the poster and the case show them: the same fraction
    // of the extent on the preview's coarser grid (NiiVue's vox2frac on the case's)
    nv.scene.crosshairPos = Float32Array.from(args.focus, (v, i) => (v + 0.5) / args.shape[i]);
  }
  t = step("preview textures", t);
  await firstFrame();
  step("preview drawn", t);
  firstImage(started);
}

async function loadCase(args) {
  if (s.previewKey !== args.case) {
    resetCase(args);
    s.preview = false;
  }
  let t = performance.now();
  const image = await NVImage.new(buffer(args.image), "case.nii", "gray", 1);
  t = step("case decoded", t);
  image.cal_min = args.window[0];
  image.cal_max = args.window[1];
  s.applied.window = JSON.stringify(args.window);
  s.applied.focus = null; // the preview's voxel grid is not the case's
  if (s.preview) {
    s.backPending = image; // shown with the overlays, one texture build for all (render)
  } else {
    setLayers(image, []);
  }
  s.caseKey = args.case;
  s.previewKey = null;
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

async function render(args, started) {
  const early = window.medsegEarly;
  if (!s.attached && early && early.poster) {
    await early.poster; // shown and presented before the attach holds this thread
    s.timingPoster = early.posterAt === null ? null : Math.round(early.posterAt);
  }
  if (!s.attached && args.case !== s.caseKey && !has(args.image) && !has(args.preview)) {
    // a new page got the poster alone: the volume, asked before the attach holds this thread
    // (index.html asked already when it showed the poster)
    if (early && early.asked && s.asked === null) s.asked = wanted(args);
    ask(args);
  }
  if (!s.attached) {
    const t = performance.now();
    document.getElementById("wrap").style.height = `${args.height}px`;
    canvas.style.height = "100%";
    await nv.attachToCanvas(canvas);
    s.attached = true;
    s.attachMs = Math.round(performance.now() - t);
  }
  let missing = false;
  const fresh = args.case !== s.caseKey && has(args.image);
  if (args.case !== s.caseKey) {
    if (has(args.image)) {
      const previewed = s.preview;
      await loadCase(args);
      if (!previewed) {
        // the case's image before its overlays: they follow in the same call
        await firstFrame();
        firstImage(started);
      }
    } else if (has(args.preview) && s.previewKey !== args.case) {
      await showPreview(args, started);
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
  const back = s.backPending || nv.volumes[0];
  const windowed = changed("window", args.window);
  if (windowed) {
    back.cal_min = args.window[0];
    back.cal_max = args.window[1];
  }
  if (reorder || s.backPending) {
    const t = performance.now();
    setLayers(back, args.layers.map((spec) => s.layerImages[spec.name]).filter(Boolean));
    step("case and overlay textures", t);
    s.backPending = null;
    s.preview = false;
  } else if (windowed) {
    nv.updateGLVolume();
  }
  if (changed("radiological", args.radiological)) nv.setRadiologicalConvention(args.radiological);
  if (changed("layout", args.layout)) {
    // entering a 3D layout computes the gradient the volume rendering needs
    if (skipGradient(!LAYOUTS_3D.has(args.layout)) && s.gradient) nv.updateGLVolume();
    nv.setSliceType(LAYOUTS[args.layout]);
  }
  s.pageView = args.view;
  s.unit = args.unit || "";
  missing = (await syncDrawing(args)) || missing;
  if (changed("tool", args.tool)) applyTool(args.tool);
  if (changed("drag", args.drag)) nv.opts.dragMode = DRAG_MODE[args.drag || "contrast"];
  s.pending = s.pending.filter((edit) => edit.id > args.ack);
  const target = JSON.stringify(args.focus);
  if (args.focus && changed("focus", args.focus) && target !== s.focusSent) {
    nv.scene.crosshairPos = nv.vox2frac(args.focus);
    nv.drawScene();
  }
  setStatus();
  if (fresh) {
    // bytes received -> the case's own voxels and overlays drawn
    nv.drawScene();
    nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
    s.timingFull = Math.round(performance.now() - started);
  }
  if (missing) return ask(args);
  const loaded = JSON.stringify([s.caseKey, s.layerKeys, s.drawingKey]);
  if (loaded !== s.applied.loaded) {
    s.applied.loaded = loaded;
    send(); // tell Python what this page holds, so the next rerun sends nothing again
  }
}

function wanted(args) {
  return JSON.stringify([args.case, args.layers.map((l) => l.key), args.drawing]);
}

function ask(args) {
  if (s.asked === wanted(args)) return;
  s.asked = wanted(args);
  s.applied.loaded = null;
  send();
}

async function pump() {
  if (s.busy) return;
  s.busy = true;
  try {
    while (s.latest !== null) {
      const [args, started] = s.latest;
      s.latest = null;
      try {
        await render(args, started);
        errorBox.style.display = "none";
      } catch (err) {
        hidePoster(); // a still image must not pass for a canvas that cannot page
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
  // timed from the message's arrival: waiting for a previous render or the attach counts
  s.latest = [event.data.args, performance.now()];
  pump();
});

// ----------------------------------------------------------------------------- interaction
// A CPU renderer (SwiftShader, llvmpipe: no GPU, or a remote desktop) pays per pixel for each
// frame: while the user pages or draws, frames are drawn at half resolution, and the sharp
// frame follows once input pauses. A GPU draws a frame in about a millisecond: left as is.
const MOTION_DPR = 0.5;
const SHARP_AFTER_MS = 250;
let software = null;
let sharpTimer = null;

// Input faster than the CPU renderer's frames (a spun wheel, a held key, a pen stroke) would
// queue one frame per event, each shown later than the last (0.4 s behind after a second of a
// held key on SwiftShader): within a burst, at most one draw per animation frame (the browser
// paces those to the frames it can present), of the newest state. A lone event is drawn at once.
const BURST_MS = 150;
let lastInput = -Infinity;
let burst = false;
let due = false; // a draw was put off and nothing has drawn the newest state since
let frameAsked = false;
const drawNow = nv.drawScene.bind(nv);

function frameDraw() {
  frameAsked = false;
  if (!due) return;
  due = false;
  drawNow();
}

nv.drawScene = () => {
  if (!burst) {
    due = false;
    return drawNow();
  }
  due = true;
  if (!frameAsked) {
    frameAsked = true;
    requestAnimationFrame(frameDraw);
  }
  return undefined;
};

function inMotion(event) {
  if (!s.attached) return;
  if (software === null) {
    const info = nv.gl.getExtension("WEBGL_debug_renderer_info");
    const name = info ? String(nv.gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
    software = /swiftshader|llvmpipe|software/i.test(name);
  }
  if (!software) return;
  const now = performance.now();
  // a press is drawn at once: a click in the 3D view reads its depth from that frame
  burst = now - lastInput < BURST_MS && event?.type !== "mousedown";
  lastInput = now;
  if (nv.opts.forceDevicePixelRatio !== MOTION_DPR) {
    // the event's own draw follows at once: the resize's is put off (and dropped when it does)
    const lone = !burst;
    burst = true;
    nv.opts.forceDevicePixelRatio = MOTION_DPR;
    nv.resizeListener();
    burst = !lone;
  }
  clearTimeout(sharpTimer);
  sharpTimer = setTimeout(() => {
    if (nv.uiData.mouseButtonLeftDown || nv.uiData.mouseButtonRightDown) return inMotion();
    burst = false;
    nv.opts.forceDevicePixelRatio = 0;
    nv.resizeListener();
  }, SHARP_AFTER_MS);
}
canvas.addEventListener("wheel", inMotion, { capture: true, passive: true });
canvas.addEventListener("mousedown", inMotion, true);
canvas.addEventListener("mousemove", (event) => event.buttons && inMotion(event), true);

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
    inMotion();
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
  const planes = [...s.strokePlanes.values()];
  s.strokePlanes.clear();
  const dims = nv.back.dims.slice(1, 4);
  // a filled outline may reach planes the pen did not touch: then compare every voxel
  const whole = !planes.length || tool.filled;
  const visit = (i) => {
    if (bitmap[i] === snap[i]) return;
    // the eraser clears the chosen label only (Python's rule): other labels come back
    const kept = erase ? snap[i] === tool.label && bitmap[i] === 0 : bitmap[i] === tool.label;
    if (kept) {
      voxels.push(i);
      snap[i] = bitmap[i];
    } else {
      bitmap[i] = snap[i];
      reverted = true;
    }
  };
  if (whole) {
    for (let i = 0; i < bitmap.length; i++) visit(i);
  } else {
    for (const [axis, index] of planes) planeVoxels(dims, axis, index, visit);
    voxels.sort((a, b) => a - b);
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
nv.onDragRelease = (info) => {
  // an ROI goes to Python, which gives its statistics in the image's units
  if (nv.opts.dragMode !== DRAG_MODE.roiSelection || info.axCorSag < 0 || info.axCorSag > 2) return;
  const vox = (v) => Array.from(v, (x) => Math.round(x));
  s.roi = { plane: info.axCorSag, start: vox(info.voxStart), end: vox(info.voxEnd) };
  send();
};
nv.onLocationChange = () => setStatus();
nv.onIntensityChange = () => setStatus();

// For the browser tests and benchmarks (read-only use).
window.medsegCanvas = { nv, state: s, focus, page, NVImage };

document.title = INSTANCE;
// index.html asked for the first render before this bundle ran; one that came meanwhile is taken
if (window.medsegEarly && window.medsegEarly.args) {
  s.latest = window.medsegEarly.args;
  pump();
}
post("streamlit:setFrameHeight", { height: 120 });
