// edgeguard helpers for guarded ONNX files, for onnxruntime-node and onnxruntime-web (same API).
//
// A guarded file (made by `edgeguard guard`) has one output, "release". When its pipeline
// has random stages (noise) or the input dither, it also takes "edgeguard_uniform":
// float64 (batch, M) values, independent and uniform in (0, 1), that the app draws from
// its platform's CSPRNG at every run. onnxruntime's own random ops are not used: they
// repeat the same noise in every new session of a process.
'use strict';

const UNIFORM_INPUT = 'edgeguard_uniform';

// float64 (rows * perRow) values (k + 0.5) / 2^53 for 53 random bits k, from crypto.getRandomValues
// (the same formula as edgeguard.guard.uniform_noise in Python).
function uniformNoise(rows, perRow) {
  const count = rows * perRow;
  const out = new Float64Array(count);
  const words = new Uint32Array(2 * count);
  const cryptoApi = globalThis.crypto;
  for (let start = 0; start < words.length; start += 16384) {  // getRandomValues takes <= 65536 bytes
    cryptoApi.getRandomValues(words.subarray(start, Math.min(start + 16384, words.length)));
  }
  for (let i = 0; i < count; i++) {
    const high = words[2 * i] >>> 5;  // 27 bits
    const low = words[2 * i + 1] >>> 6;  // 26 bits
    out[i] = (high * 67108864 + low + 0.5) / 9007199254740992;  // (k + 0.5) / 2^53
  }
  return out;
}

// The feeds for one run: `images` (Float32Array of rows * C * H * W pixels) to the image input,
// fresh uniforms to edgeguard_uniform when the file has one. `ort` is onnxruntime-node or -web.
function guardedFeeds(ort, session, images, dims) {
  const rows = dims[0];
  const feeds = {};
  session.inputNames.forEach((name, index) => {
    if (name === UNIFORM_INPUT) {
      const perRow = Number(session.inputMetadata[index].shape[1]);
      feeds[name] = new ort.Tensor('float64', uniformNoise(rows, perRow), [rows, perRow]);
    } else {
      feeds[name] = new ort.Tensor('float32', images, dims);
    }
  });
  return feeds;
}

// Run a guarded file once: returns the release tensor (float32 (rows, K), or int64 (rows,) labels).
async function runGuarded(ort, session, images, dims) {
  const results = await session.run(guardedFeeds(ort, session, images, dims));
  return results.release;
}

const api = { UNIFORM_INPUT, uniformNoise, guardedFeeds, runGuarded };
if (typeof module !== 'undefined' && module.exports) {
  module.exports = api;  // Node (require)
} else {
  globalThis.edgeguard = api;  // a browser <script>
}
