// Produce records with kafkajs through one bootstrap (the encrypting Strait),
// then consume them back in a consumer group through another (the decrypting
// Strait), printing "hex(key) hex(value)" per record consumed so the caller
// can compare bytes exactly.
//
// usage: node encrypt_roundtrip.js PRODUCE_BOOTSTRAP CONSUME_BOOTSTRAP TOPIC INFILE GROUP
// INFILE: one record per line, "hex(key) hex(value)".
// Exit status 0 only if every record came back before the deadline.
'use strict';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const [prodBs, consBs, topic, infile, group] = process.argv.slice(2);
const records = fs.readFileSync(infile, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => {
  const [k, v] = l.trim().split(' ');
  return { key: Buffer.from(k, 'hex'), value: Buffer.from(v, 'hex') };
});
const n = records.length;

function kafka(bootstrap, id) {
  return new Kafka({ clientId: id, brokers: bootstrap.split(','), logLevel: logLevel.WARN, retry: { retries: 8 } });
}

async function main() {
  const producer = kafka(prodBs, 'strait-interop-kafkajs-enc').producer({ allowAutoTopicCreation: false });
  await producer.connect();
  for (let i = 0; i < n; i += 10) {
    await producer.send({ topic, acks: -1, messages: records.slice(i, i + 10) });
  }
  await producer.disconnect();
  console.error(`produced ${n}`);

  const consumer = kafka(consBs, 'strait-interop-kafkajs-dec').consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Map();
  let bad = null;
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      if (message.headers && Object.prototype.hasOwnProperty.call(message.headers, 'strait.enc')) {
        bad = `consumer saw Strait's header at ${partition}/${message.offset}`;
        resolveDone();
      }
      const k = message.key ? message.key.toString('hex') : '';
      const v = message.value ? message.value.toString('hex') : '';
      seen.set(`${partition}/${message.offset}`, `${k} ${v}`);
      if (seen.size >= n) resolveDone();
    },
  });
  const timer = setTimeout(resolveDone, 60000);
  await done;
  clearTimeout(timer);
  await consumer.disconnect();
  if (bad) {
    console.error(bad);
    process.exit(1);
  }
  for (const v of seen.values()) console.log(v);
  if (seen.size < n) {
    console.error(`consumed only ${seen.size} of ${n}`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
