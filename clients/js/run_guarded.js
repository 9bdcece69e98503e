// Run a guarded ONNX file with onnxruntime-node; used by tests/test_guard_js.py and benchmarks/guard_latency.py.
//
//   node run_guarded.js release MODEL IMAGES.f32 N,C,H,W [SESSIONS] [RUNS]
//       -> JSON {"dtype", "shape", "releases": [[hex per run] per session]} on stdout
//   node run_guarded.js time MODEL IMAGES.f32 N,C,H,W BATCH REPEATS
//       -> JSON {"batch", "samples_ns": [...]} (one thread; the caller interleaves)
'use strict';

const fs = require('node:fs');
const ort = require('onnxruntime-node');
const { runGuarded } = require('./edgeguard.js');

function hex(tensor) {
  const data = tensor.data;
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex');
}

async function open(model) {
  return ort.InferenceSession.create(model, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
  });
}

async function main() {
  const [mode, model, imagesPath, dimsText, a, b] = process.argv.slice(2);
  const dims = dimsText.split(',').map(Number);
  const bytes = fs.readFileSync(imagesPath);
  const images = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  if (mode === 'release') {
    const sessions = Number(a || 1);
    const runs = Number(b || 1);
    const releases = [];
    let last = null;
    for (let s = 0; s < sessions; s++) {
      const session = await open(model);
      const perSession = [];
      for (let r = 0; r < runs; r++) {
        last = await runGuarded(ort, session, images, dims);
        perSession.push(hex(last));
      }
      releases.push(perSession);
    }
    process.stdout.write(JSON.stringify({ dtype: last.type, shape: last.dims, releases }));
  } else if (mode === 'time') {
    const batch = Number(a);
    const repeats = Number(b);
    const session = await open(model);
    const pixels = dims.slice(1).reduce((x, y) => x * y, 1);
    const batchDims = [batch, ...dims.slice(1)];
    const samples = [];
    for (let r = 0; r < repeats + 10; r++) {
      const start = ((r * batch) % Math.max(1, dims[0] - batch + 1)) * pixels;
      const x = images.subarray(start, start + batch * pixels);
      const t0 = process.hrtime.bigint();
      await runGuarded(ort, session, x, batchDims);
      const t1 = process.hrtime.bigint();
      if (r >= 10) samples.push(Number(t1 - t0));  // 10 warm-up runs
    }
    process.stdout.write(JSON.stringify({ batch, samples_ns: samples }));
  } else {
    throw new Error(`expected mode 'release' or 'time', got ${mode}`);
  }
}

main().catch((error) => {
  process.stderr.write(`error: ${error && error.message ? error.message : error}\n`);
  process.exit(2);
});
