// Produce N records with kafkajs over SASL (mechanism, user and password from
// the environment: SASL_MECHANISM = plain | scram-sha-256 | scram-sha-512,
// SASL_USERNAME, SASL_PASSWORD), then consume them back in a consumer group,
// printing "key=value" per record consumed.
//
// usage: node sasl_roundtrip.js BOOTSTRAP TOPIC N PREFIX GROUP
// Exit status 0 only if all N records came back before the deadline; 3 if
// authentication failed (the error is printed on stderr).
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, nStr, prefix, group] = process.argv.slice(2);
const n = Number(nStr);

async function main() {
  const kafka = new Kafka({
    clientId: 'strait-interop-kafkajs-sasl',
    brokers: bootstrap.split(','),
    logLevel: logLevel.NOTHING,
    retry: { retries: 2 },
    sasl: {
      mechanism: process.env.SASL_MECHANISM,
      username: process.env.SASL_USERNAME,
      password: process.env.SASL_PASSWORD,
    },
  });

  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < n; i++) messages.push({ key: `k${i}`, value: `${prefix}-${i}` });
  await producer.send({ topic, acks: -1, messages });
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
  console.error(e && e.stack ? e.stack : String(e));
  const auth = e && (e.type === 'SASL_AUTHENTICATION_FAILED' || /SASL|[Aa]uthentication/.test(String(e.message)));
  process.exit(auth ? 3 : 1);
});
