// Runs an ONNX model and its bisected chunks with onnxruntime-node (tests/package.json) on the same
// seeded inputs, feeding each chunk the graph inputs and the tensors earlier chunks produced, and
// compares every output of the original with what the chunks produced, bit for bit.
//
//   node tests/tools/run_onnx_chunks.js ORIGINAL.onnx CHUNK_DIR/<stem>.chunks.json
//
// Graph optimizations are off for both, so each computes with the same kernels (a fused MatMul+Add
// may round differently from the two ops). Prints one JSON line; exits 1 on any difference.
'use strict';
const path = require('path');
const fs = require('fs');
const ort = require(path.join(__dirname, '..', 'node_modules', 'onnxruntime-node'));

function seededFloats(count, seed) {
  const out = new Float32Array(count);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < count; ++i) {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    out[i] = (state / 4294967296) * 2 - 1;
  }
  return out;
}

async function main() {
  const [original, indexPath] = process.argv.slice(2);
  const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  const options = {graphOptimizationLevel: 'disabled'};
  const whole = await ort.InferenceSession.create(original, options);
  const feeds = {};
  whole.inputNames.forEach((name, i) => {
    const meta = whole.inputMetadata ? whole.inputMetadata.find((m) => m.name === name) : undefined;
    const dims = meta && meta.shape ? meta.shape.map((d) => (typeof d === 'number' ? d : 1)) : [1];
    const count = dims.reduce((a, b) => a * b, 1);
    feeds[name] = new ort.Tensor('float32', seededFloats(count, 12345 + i), dims);
  });
  const expected = await whole.run(feeds);
  const values = Object.assign({}, feeds);
  for (const chunk of index.chunks) {
    const session = await ort.InferenceSession.create(path.join(path.dirname(indexPath), chunk.file), options);
    const chunkFeeds = {};
    for (const name of session.inputNames) {
      if (!(name in values)) throw new Error(`chunk ${chunk.index} needs '${name}', which no earlier chunk produced`);
      chunkFeeds[name] = values[name];
    }
    Object.assign(values, await session.run(chunkFeeds));
  }
  const mismatches = [];
  for (const [name, tensor] of Object.entries(expected)) {
    const got = values[name];
    const same = got && got.data.length === tensor.data.length &&
        Buffer.compare(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength),
                       Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength)) === 0;
    if (!same) mismatches.push(name);
  }
  console.log(JSON.stringify({outputs: Object.keys(expected), chunks: index.chunks.length, mismatches}));
  process.exit(mismatches.length === 0 ? 0 : 1);
}

main().catch((e) => { console.error(e.message || e); process.exit(2); });
