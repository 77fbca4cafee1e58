// Produce N records with kafkajs, then consume them back in a consumer group,
// printing "key=value" per record consumed.
//
// usage: node roundtrip.js BOOTSTRAP TOPIC N PREFIX GROUP
// Exit status 0 only if all N records came back before the deadline.
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, nStr, prefix, group] = process.argv.slice(2);
const n = Number(nStr);

async function main() {
  const kafka = new Kafka({
    clientId: 'strait-interop-kafkajs',
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    retry: { retries: 8 },
  });

  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < n; i++) messages.push({ key: `k${i}`, value: `${prefix}-${i}` });
  for (let i = 0; i < messages.length; i += 10) {
    await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 10) });
  }
  await producer.disconnect();
  console.error(`produced ${n}`);

  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Map();
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      seen.set(`${partition}/${message.offset}`, `${message.key.toString()}=${message.value.toString()}`);
      if (seen.size >= n) resolveDone();
    },
  });
  const timer = setTimeout(resolveDone, 60000);
  await done;
  clearTimeout(timer);
  await consumer.disconnect();
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
