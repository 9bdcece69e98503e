// Run a guarded ONNX file with onnxruntime-node; used by tests/test_guard_js.py and benchmarks/guard_latency.py.
//
//   node run_guarded.js release MODEL IMAGES.f32 N,C,H,W [SESSIONS] [RUNS]
//       -> JSON {"dtype", "shape", "releases": [[hex per run] per session]} on stdout
//   node run_guarded.js compare RAW GUARDED IMAGES.f32 N,C,H,W BATCH REPEATS
//       -> JSON {"batch", "raw_ns": [...], "guarded_ns": [...]}: the raw file against the guarded one in one
//          process, one thread each, the order alternating every repetition (10 untimed warm-up repetitions)
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
  if (mode === 'release') {
    const dims = dimsText.split(',').map(Number);
    const bytes = fs.readFileSync(imagesPath);
    const images = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
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
  } else if (mode === 'compare') {
    // argv: compare RAW GUARDED IMAGES dims BATCH REPEATS
    const [rawModel, guardedModel, pixelsPath, dimsArg, batchArg, repeatsArg] = process.argv.slice(3);
    const allDims = dimsArg.split(',').map(Number);
    const data = fs.readFileSync(pixelsPath);
    const pixelsAll = new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4);
    const batch = Number(batchArg);
    const repeats = Number(repeatsArg);
    const raw = await open(rawModel);
    const guarded = await open(guardedModel);
    const inputName = raw.inputNames[0];
    const perImage = allDims.slice(1).reduce((x, y) => x * y, 1);
    const batchDims = [batch, ...allDims.slice(1)];
    const windows = Math.max(1, Math.floor(allDims[0] / batch));
    const rawNs = [];
    const guardedNs = [];
    const runRaw = async (x) => {
      const t0 = process.hrtime.bigint();
      await raw.run({ [inputName]: new ort.Tensor('float32', x, batchDims) });
      return Number(process.hrtime.bigint() - t0);
    };
    const runGuard = async (x) => {
      const t0 = process.hrtime.bigint();
      await runGuarded(ort, guarded, x, batchDims);
      return Number(process.hrtime.bigint() - t0);
    };
    for (let r = 0; r < repeats + 10; r++) {
      const start = (r % windows) * batch * perImage;
      const x = pixelsAll.subarray(start, start + batch * perImage);
      let a;
      let b;
      if (r % 2) {
        b = await runGuard(x);
        a = await runRaw(x);
      } else {
        a = await runRaw(x);
        b = await runGuard(x);
      }
      if (r >= 10) {
        rawNs.push(a);
        guardedNs.push(b);
      }
    }
    process.stdout.write(JSON.stringify({ batch, raw_ns: rawNs, guarded_ns: guardedNs }));
  } else {
    throw new Error(`expected mode 'release' or 'compare', got ${mode}; see the usage at the top of run_guarded.js`);
  }
}

main().catch((error) => {
  process.stderr.write(`error: ${error && error.message ? error.message : error}\n`);
  process.exit(2);
});
