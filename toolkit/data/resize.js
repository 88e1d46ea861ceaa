// The resize of the preprocessing contract: the same bytes as toolkit/data/resize.py, line for line.
// Per axis, area averaging with fractional edge weights when the axis shrinks, linear interpolation with
// half-pixel centres and clamped edges when it grows; taps summed in float64 in increasing source order,
// columns first, then rows, rounded half up once at the end. Not a medical device.

export function taps(source, target) {
  const scale = source / target;
  const rows = [];
  for (let j = 0; j < target; j++) {
    const row = [];
    if (target < source) {
      const start = j * scale, end = (j + 1) * scale;
      const first = Math.floor(start), stop = Math.min(Math.ceil(end), source);
      for (let i = first; i < stop; i++) row.push([i, (Math.min(i + 1, end) - Math.max(i, start)) / scale]);
    } else {
      const centre = Math.min(Math.max((j + 0.5) * scale - 0.5, 0.0), source - 1.0);
      const left = Math.floor(centre);
      const fraction = centre - left;
      row.push([left, 1.0 - fraction], [Math.min(left + 1, source - 1), fraction]);
    }
    rows.push(row);
  }
  return rows;
}

// One axis resampled. `values` is a Float64Array of `outer` x `length` x `inner` values; the axis is `length`.
function resample(values, outer, length, inner, target) {
  const rows = taps(length, target);
  const out = new Float64Array(outer * target * inner);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < target; j++) {
      for (let k = 0; k < inner; k++) {
        let total = 0.0;
        for (const [index, weight] of rows[j]) total += weight * values[(o * length + index) * inner + k];
        out[(o * target + j) * inner + k] = total;
      }
    }
  }
  return out;
}

// `rgb`: Uint8Array of height x width x channels; returns a Uint8Array of newHeight x newWidth x channels.
export function resizeExact(rgb, width, height, channels, newWidth, newHeight) {
  const columns = resample(Float64Array.from(rgb), height, width, channels, newWidth);
  const rows = resample(columns, 1, height, newWidth * channels, newHeight);
  return Uint8Array.from(rows, (v) => Math.min(Math.max(Math.floor(v + 0.5), 0), 255));
}

export function paddedSize(width, height, size) {
  const scale = size / Math.max(width, height);
  return [Math.floor(width * scale + 0.5), Math.floor(height * scale + 0.5)];
}

export function resizeContract(rgb, width, height, channels, size, mode) {
  if (mode === 'squash') return resizeExact(rgb, width, height, channels, size, size);
  const [newWidth, newHeight] = paddedSize(width, height, size);
  const resized = resizeExact(rgb, width, height, channels, newWidth, newHeight);
  const canvas = new Uint8Array(size * size * channels);
  const top = Math.floor((size - newHeight) / 2), left = Math.floor((size - newWidth) / 2);
  for (let y = 0; y < newHeight; y++) {
    canvas.set(resized.subarray(y * newWidth * channels, (y + 1) * newWidth * channels),
      ((top + y) * size + left) * channels);
  }
  return canvas;
}
