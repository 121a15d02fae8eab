#!/usr/bin/env node
// The TensorFlow.js "lstm-text-generation" example (tensorflow/tfjs-examples, folder
// lstm-text-generation), cut down to what the tests compare against: train a model and save it the way
// tfjs-node's `model.save('file://DIR')` does, load one from model.json + weights.bin without tfjs-node,
// and predict / generate with it. Pure JavaScript @tensorflow/tfjs 3.18.0 on the CPU backend, installed
// in tests/tfjs/node_modules by deploy/local/install-tfjs.sh.
//
//   node original.js train --text FILE --out DIR --sample-len N --layers 32,16 --epochs E
//                          --examples M --batch-size B --learning-rate LR [--sample-step K] [--seed S]
//   node original.js predict --model DIR/model.json (--text FILE | --charset CHARSET.json) --windows WINDOWS.json
//   node original.js greedy --model DIR/model.json (--text FILE | --charset CHARSET.json)
//                           --seed-text STRING --length L
//
// Each prints one JSON object on stdout; everything else (tfjs's own messages) goes to stderr.
// On an error: the message on stderr, exit code 1.
'use strict';

const fs = require('fs');
const path = require('path');
const util = require('util');

// Keep stdout pure JSON: anything logged (tfjs's banner is a console.warn, already on stderr) goes to stderr.
console.log = console.info = console.debug = (...args) => process.stderr.write(util.format(...args) + '\n');

const tf = require('@tensorflow/tfjs');

function fail(message) {
  process.stderr.write(`original.js: ${message}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) fail(`bad arguments near '${argv[i]}'`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  return args;
}

function need(args, name) {
  if (args[name] == null) fail(`--${name} is required`);
  return args[name];
}

function intArg(args, name, dflt) {
  const v = args[name] == null ? dflt : Number(args[name]);
  if (!Number.isInteger(v)) fail(`--${name} must be an integer`);
  return v;
}

// mulberry32: a small seeded PRNG, so that --seed makes a training run repeatable.
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Mirrors data.js TextData._getCharSet(): unique characters in order of first appearance, iterating
// JavaScript string code units (so a character outside the BMP counts as two surrogates).
function charSetOf(text) {
  const charSet = [];
  for (let i = 0; i < text.length; ++i) {
    if (charSet.indexOf(text[i]) === -1) charSet.push(text[i]);
  }
  return charSet;
}

function readCharSet(args) {
  if (args.charset != null) {
    const charSet = JSON.parse(fs.readFileSync(args.charset, 'utf8'));
    if (!Array.isArray(charSet) || charSet.some(c => typeof c !== 'string' || c.length !== 1)) {
      fail('--charset must be a JSON list of one-character strings');
    }
    return charSet;
  }
  if (args.text == null) fail('--text or --charset is required');
  return charSetOf(fs.readFileSync(args.text, 'utf8'));
}

// Mirrors data.js TextData._textToIndices().
function toIndices(text, charSet) {
  const indices = [];
  for (let i = 0; i < text.length; ++i) {
    const index = charSet.indexOf(text[i]);
    if (index === -1) fail(`character ${JSON.stringify(text[i])} is not in the character set`);
    indices.push(index);
  }
  return indices;
}

// Mirrors model.js createModel().
function createModel(sampleLen, charSetSize, lstmLayerSizes) {
  const model = tf.sequential();
  for (let i = 0; i < lstmLayerSizes.length; ++i) {
    model.add(tf.layers.lstm({
      units: lstmLayerSizes[i],
      returnSequences: i < lstmLayerSizes.length - 1,
      inputShape: i === 0 ? [sampleLen, charSetSize] : undefined
    }));
  }
  model.add(tf.layers.dense({units: charSetSize, activation: 'softmax'}));
  return model;
}

// Mirrors model.js compileModel() (without its console output).
function compileModel(model, learningRate) {
  model.compile({optimizer: tf.train.rmsprop(learningRate), loss: 'categoricalCrossentropy'});
}

// Mirrors data.js TextData: example begin indices every sampleStep characters, shuffled
// (_generateExampleBeginIndices), then nextDataEpoch() draws the next numExamples of them, cycling.
class TextData {
  constructor(text, sampleLen, sampleStep) {
    this.sampleLen = sampleLen;
    this.charSet = charSetOf(text);
    this.indices = toIndices(text, this.charSet);
    this.exampleBeginIndices = [];
    for (let i = 0; i < text.length - sampleLen - 1; i += sampleStep) this.exampleBeginIndices.push(i);
    if (this.exampleBeginIndices.length === 0) fail('the text is shorter than --sample-len + 2');
    tf.util.shuffle(this.exampleBeginIndices);  // Math.random, seeded by --seed (see train())
    this.examplePosition = 0;
  }

  nextDataEpoch(numExamples) {
    const n = this.charSet.length;
    const xsBuffer = tf.buffer([numExamples, this.sampleLen, n]);
    const ysBuffer = tf.buffer([numExamples, n]);
    for (let i = 0; i < numExamples; ++i) {
      const begin = this.exampleBeginIndices[this.examplePosition % this.exampleBeginIndices.length];
      for (let j = 0; j < this.sampleLen; ++j) xsBuffer.set(1, i, j, this.indices[begin + j]);
      ysBuffer.set(1, i, this.indices[begin + this.sampleLen]);
      this.examplePosition++;
    }
    return [xsBuffer.toTensor(), ysBuffer.toTensor()];
  }
}

// What tfjs-node's NodeFileSystem.save() (tfjs-node/src/io/file_system.ts, v3.18.0) writes for
// `model.save('file://DIR')`: model.json with its keys in this order, and the raw weight data in
// weights.bin.
function fileSystemSaveHandler(dir) {
  return tf.io.withSaveHandler(async artifacts => {
    fs.mkdirSync(dir, {recursive: true});
    const modelJSON = {
      modelTopology: artifacts.modelTopology,
      weightsManifest: [{paths: ['weights.bin'], weights: artifacts.weightSpecs}],
      format: artifacts.format,
      generatedBy: artifacts.generatedBy,
      convertedBy: artifacts.convertedBy
    };
    if (artifacts.trainingConfig != null) modelJSON.trainingConfig = artifacts.trainingConfig;
    if (artifacts.signature != null) modelJSON.signature = artifacts.signature;
    if (artifacts.userDefinedMetadata != null) modelJSON.userDefinedMetadata = artifacts.userDefinedMetadata;
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(modelJSON), 'utf8');
    fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.from(artifacts.weightData));
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}};
  });
}

// Loads model.json and its weight files from disk, as tfjs-node's NodeFileSystem.load() does, for
// tf.loadLayersModel without tfjs-node.
function fileSystemLoadHandler(modelJSONPath) {
  return {
    load: async () => {
      const modelJSON = JSON.parse(fs.readFileSync(modelJSONPath, 'utf8'));
      return tf.io.getModelArtifactsForJSON(modelJSON, async weightsManifest => {
        const buffers = [];
        const specs = [];
        for (const group of weightsManifest) {
          for (const p of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelJSONPath), p)));
          specs.push(...group.weights);
        }
        const all = Buffer.concat(buffers);
        return [specs, all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)];
      });
    }
  };
}

async function loadModel(args, charSet) {
  const model = await tf.loadLayersModel(fileSystemLoadHandler(need(args, 'model')));
  const charSetSize = model.inputs[0].shape[2];
  if (charSetSize !== charSet.length) {
    fail(`the model takes ${charSetSize} characters but the character set has ${charSet.length}`);
  }
  return model;
}

// One-hot [1, len, charSetSize], as model.js generateText() builds its input.
function encode(indices, charSetSize) {
  const buffer = tf.buffer([1, indices.length, charSetSize]);
  indices.forEach((index, i) => buffer.set(1, 0, i, index));
  return buffer.toTensor();
}

function nextCharProbs(model, indices, charSetSize) {
  return tf.tidy(() => Array.from(model.predict(encode(indices, charSetSize)).dataSync()));
}

// train_node.js main(): TextData, createModel, compileModel, fitModel, then model.save('file://DIR').
async function train(args) {
  const text = fs.readFileSync(need(args, 'text'), 'utf8');
  const out = need(args, 'out');
  const sampleLen = intArg(args, 'sample-len');
  const sampleStep = intArg(args, 'sample-step', 3);  // train_node.js's default --sampleStep
  const layers = need(args, 'layers').split(',').map(Number);
  if (layers.some(u => !Number.isInteger(u) || u < 1)) fail('--layers must be like 32,16');
  const epochs = intArg(args, 'epochs');
  const examples = intArg(args, 'examples');
  const batchSize = intArg(args, 'batch-size');
  const learningRate = Number(need(args, 'learning-rate'));
  // tf.js draws weight initialisers, fit()'s batch shuffling and tf.util.shuffle from Math.random:
  // seeding it makes the whole run repeatable.
  if (args.seed != null) Math.random = mulberry32(intArg(args, 'seed'));

  const textData = new TextData(text, sampleLen, sampleStep);
  const model = createModel(sampleLen, textData.charSet.length, layers);
  compileModel(model, learningRate);
  // Mirrors model.js fitModel(): a fresh nextDataEpoch() per epoch, fitted for one epoch each
  // (without the example's validationSplit, callbacks and console output).
  for (let i = 0; i < epochs; ++i) {
    const [xs, ys] = textData.nextDataEpoch(examples);
    await model.fit(xs, ys, {epochs: 1, batchSize, verbose: 0});
    xs.dispose();
    ys.dispose();
  }
  await model.save(fileSystemSaveHandler(out));
  return {charset: textData.charSet, sample_len: sampleLen, out};
}

async function predict(args) {
  const charSet = readCharSet(args);
  const model = await loadModel(args, charSet);
  const windows = JSON.parse(fs.readFileSync(need(args, 'windows'), 'utf8'));
  if (!Array.isArray(windows) || windows.some(w => typeof w !== 'string')) {
    fail('--windows must be a JSON list of strings');
  }
  const probs = windows.map(w => nextCharProbs(model, toIndices(w, charSet), charSet.length));
  return {charset: charSet, probs};
}

// Mirrors model.js generateText(), taking the most likely next character (the first one on a tie)
// instead of sampling with a temperature.
async function greedy(args) {
  const charSet = readCharSet(args);
  const model = await loadModel(args, charSet);
  const sampleLen = model.inputs[0].shape[1];
  const seed = need(args, 'seed-text');
  const length = intArg(args, 'length');
  if (seed.length < sampleLen) fail(`--seed-text must have at least ${sampleLen} characters`);
  let sentenceIndices = toIndices(seed.slice(seed.length - sampleLen), charSet);
  let generated = '';
  while (generated.length < length) {
    const probs = nextCharProbs(model, sentenceIndices, charSet.length);
    let winnerIndex = 0;
    for (let i = 1; i < probs.length; ++i) if (probs[i] > probs[winnerIndex]) winnerIndex = i;
    generated += charSet[winnerIndex];
    sentenceIndices = sentenceIndices.slice(1);
    sentenceIndices.push(winnerIndex);
  }
  return {text: generated};
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  const commands = {train, predict, greedy};
  if (!commands[command]) fail('usage: original.js train|predict|greedy --option value ...');
  await tf.setBackend('cpu');
  const result = await commands[command](parseArgs(rest));
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch(e => fail(e && e.message ? e.message : String(e)));
