// The preview page: a bundle run in the browser as an app runs it (manifest, contract resize, LiteRT.js).
// Not a medical device. `window.preview.classify(bytes)` is what the toolkit's browser test calls.
import { loadAndCompile, loadLiteRt, Tensor } from '@litertjs/core';
import { resizeContract } from '/resize.js';

const $ = (id) => document.getElementById(id);
const manifest = await (await fetch('/bundle/manifest.json')).json();
const labels = (await (await fetch('/bundle/labels.txt')).text()).split('\n').filter((line) => line);
await loadLiteRt('/litert/wasm/');
const model = await loadAndCompile('/bundle/model.tflite', { accelerator: 'wasm' });
const size = manifest.input.shape[1];

// Step 1: decode upright (EXIF orientation applied, no colour management), as RGB; alpha is refused.
async function decode(bytes) {
  const bitmap = await createImageBitmap(new Blob([bytes]),
    { imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    if (rgba[i + 3] !== 255) throw new Error('an image with transparency: the manifest takes colour photos only');
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, width: bitmap.width, height: bitmap.height };
}

// Step 3: the input tensor's values, as the manifest's dtype, scale and zero point say (rounding half to even).
function inputTensor(resized) {
  const { dtype, scale, zero_point: zeroPoint } = manifest.input;
  if (dtype === 'float32') return new Tensor(Float32Array.from(resized), manifest.input.shape);
  const [low, high, Type] = dtype === 'int8' ? [-128, 127, Int8Array] : [0, 255, Uint8Array];
  const halfEven = (x) => { const r = Math.round(x); return Math.abs(x % 1) === 0.5 && r % 2 ? r - 1 : r; };
  const values = Type.from(resized, (v) => Math.min(Math.max(halfEven(v / scale) + zeroPoint, low), high));
  return new Tensor(values, manifest.input.shape);
}

// Steps 2-4: probabilities in label order, with the resized bytes and the model's latency.
async function classify(bytes) {
  const { rgb, width, height } = await decode(bytes);
  const resized = resizeContract(rgb, width, height, 3, size, manifest.preprocessing.resize_mode);
  const input = inputTensor(resized);
  const started = performance.now();
  const [output] = await model.run([input]);
  const latencyMs = performance.now() - started;
  const raw = Array.from(await output.data());
  input.delete(); output.delete();
  const { dtype, scale, zero_point: zeroPoint } = manifest.output;
  const probabilities = dtype === 'float32' ? raw : raw.map((q) => scale * (q - zeroPoint));
  return { resized: Array.from(resized), probabilities, raw, latencyMs };
}

// Step 5: the referral decision at the manifest's default operating point.
function referral(probabilities) {
  const points = (manifest.referral && manifest.referral.points) || [];
  const point = points.find((p) => p.name === manifest.referral.default);
  if (!point) return null;
  const shortNames = manifest.classes.map((c) => c.short_name);
  const score = point.classes.reduce((sum, name) => sum + probabilities[shortNames.indexOf(name)], 0);
  return { name: point.name, score, threshold: point.threshold, refer: score >= point.threshold };
}

function show(name, result, resized) {
  const item = document.createElement('div');
  item.className = 'result';
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = size;
  const rgba = new Uint8ClampedArray(size * size * 4);
  for (let i = 0, j = 0; j < resized.length; i += 4, j += 3) rgba.set([resized[j], resized[j + 1], resized[j + 2], 255], i);
  canvas.getContext('2d').putImageData(new ImageData(rgba, size, size), 0, 0);
  const ranked = labels.map((label, i) => [manifest.classes[i].display_name || label, result.probabilities[i]])
    .sort((a, b) => b[1] - a[1]).slice(0, 3);
  const decision = referral(result.probabilities);
  const text = document.createElement('div');
  text.innerHTML = `<strong>${name}</strong><ol>${ranked.map(([l, p]) => `<li>${l}: ${(100 * p).toFixed(1)}%</li>`).join('')}</ol>`
    + (decision ? `<p class="${decision.refer ? 'refer' : ''}">Malignancy score ${decision.score.toFixed(3)}: `
      + `${decision.refer ? 'refer to a dermatologist' : 'no referral'} (operating point ${decision.name}, `
      + `threshold ${decision.threshold.toFixed(3)})</p>` : '')
    + `<p>${result.latencyMs.toFixed(1)} ms in this browser (LiteRT.js, WebAssembly). Not a medical device.</p>`;
  item.append(canvas, text);
  $('results').prepend(item);
}

async function handle(files) {
  for (const file of files) {
    try {
      const result = await classify(new Uint8Array(await file.arrayBuffer()));
      show(file.name, result, result.resized);
    } catch (error) {
      $('results').insertAdjacentHTML('afterbegin', `<p class="error">${file.name}: ${error.message}</p>`);
    }
  }
}

function card() {
  const metrics = (manifest.metrics && (manifest.metrics.exported || manifest.metrics.float)) || null;
  const numbers = metrics ? `Test split (${metrics.images} images): accuracy ${metrics.accuracy.toFixed(3)}, `
    + `balanced accuracy ${metrics.balanced_accuracy.toFixed(3)}, macro-F1 ${metrics.macro_f1.toFixed(3)}. ` : '';
  const demo = manifest.training_data && manifest.training_data.demo
    ? 'Trained on the synthetic DEMO set: its answers on real photos mean nothing. ' : '';
  return `${demo}${manifest.quantization} model, ${size}x${size} input. ${numbers}${manifest.licence || ''}`;
}

$('name').textContent = manifest.name;
$('card').textContent = card();
$('files').addEventListener('change', (event) => handle(event.target.files));
const drop = $('drop');
drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => { event.preventDefault(); drop.classList.remove('over'); handle(event.dataTransfer.files); });
$('status').textContent = 'Ready: drop or pick photos.';
window.preview = { ready: true, classify: async (bytes) => classify(Uint8Array.from(bytes)) };
