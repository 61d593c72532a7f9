// llama.cpp's next-token probabilities for a GGUF file, through node-llama-cpp's prebuilt CPU
// build (pinned in tests/package.json; nothing is built or downloaded): an F32 KV cache, flash
// attention off, the token ids evaluated as given (no BOS added), and the full distribution
// after the last one at temperature 1 with no top-k/top-p/min-p cut.
//   node llama_next_token.mjs MODEL.gguf 1,2,3   ->  {"probs": [p_0, p_1, ...], "top": id}
import {getLlama} from "node-llama-cpp";

const [modelPath, tokenList] = process.argv.slice(2);
const tokens = tokenList.split(",").map(Number);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({
  contextSize: 64, batchSize: 64, flashAttention: false, threads: 1,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
const sequence = context.getSequence();
const input = tokens.map((t, i) => i + 1 < tokens.length ? t :
  [t, {generateNext: {probabilities: true, options: {temperature: 1, topK: 0, topP: 1, minP: 0}}}]);
const results = await sequence.controlledEvaluate(input);
const next = results[results.length - 1].next;
const probs = new Array(model.tokens.vocabSize ?? next.probabilities.size).fill(0);
for (const [token, p] of next.probabilities) probs[token] = p;
let top = 0;
for (let i = 1; i < probs.length; ++i) if (probs[i] > probs[top]) top = i;
console.log(JSON.stringify({probs, top}));
await context.dispose();
await model.dispose();
