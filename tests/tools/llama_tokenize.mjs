// llama.cpp's tokenization of a text with a GGUF file's vocabulary (node-llama-cpp's prebuilt CPU
// build; nothing is built or downloaded): no BOS, special tokens not parsed.
//   node llama_tokenize.mjs MODEL.gguf TEXT   ->  {"ids": [...]}
import {getLlama} from "node-llama-cpp";

const [modelPath, text] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath, vocabOnly: true});
console.log(JSON.stringify({ids: Array.from(model.tokenize(text, false))}));
await model.dispose();
