// Produce N records of 1 KiB with kafkajs at its defaults through an
// encrypting Strait, in sends of 950 records to partition 0 (one batch per
// send, about
// 990 KB in clear: the broker takes it; about 1.1 MB encrypted: it would
// not), so that Strait must split every batch.
//
// usage: node split.js BOOTSTRAP TOPIC N MODE
// MODE: plain (kafkajs' default producer), idempotent or transactional.
// Value i: "secret-%06d|", 16 SHA-256 digests of "i/j" (j = 0..15), then
// text up to 1024 bytes (split_test.go builds the same). Key i: "k%06d".
// Prints "produced N failed F" and exits 0 only if no record failed.
'use strict';
const crypto = require('crypto');
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, nArg, mode] = process.argv.slice(2);
const n = Number(nArg);
const text = Buffer.from('the quick brown fox jumps over the lazy dog ');

function pad(i) { return String(i).padStart(6, '0'); }

function value(i) {
  const parts = [Buffer.from(`secret-${pad(i)}|`)];
  for (let j = 0; j < 16; j++) parts.push(crypto.createHash('sha256').update(`${i}/${j}`).digest());
  let v = Buffer.concat(parts);
  while (v.length < 1024) v = Buffer.concat([v, text]);
  return v.subarray(0, 1024);
}

async function main() {
  const kafka = new Kafka({ clientId: 'strait-interop-kafkajs-split', brokers: bootstrap.split(','), logLevel: logLevel.WARN });
  const opts = { allowAutoTopicCreation: false };
  if (mode === 'idempotent') Object.assign(opts, { idempotent: true, maxInFlightRequests: 1 });
  if (mode === 'transactional') Object.assign(opts, { idempotent: true, maxInFlightRequests: 1, transactionalId: `split-${topic}` });
  const producer = kafka.producer(opts);
  await producer.connect();
  let failed = 0;
  const txn = mode === 'transactional' ? await producer.transaction() : null;
  for (let i = 0; i < n; i += 950) {
    const messages = [];
    for (let k = i; k < Math.min(n, i + 950); k++) messages.push({ key: `k${pad(k)}`, value: value(k), partition: 0 });
    try {
      await (txn || producer).send({ topic, acks: -1, messages });
    } catch (e) {
      failed += messages.length;
      console.error(`send at ${i}: ${e.message}`);
    }
  }
  if (txn) {
    try { await txn.commit(); } catch (e) { failed = n; console.error(`commit: ${e.message}`); }
  }
  await producer.disconnect();
  console.log(`produced ${n} failed ${failed}`);
  if (failed) process.exit(1);
}

main().catch((e) => { console.error(e); process.exit(1); });
