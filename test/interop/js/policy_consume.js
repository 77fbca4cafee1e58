// Consume a topic with kafkajs in a consumer group over mTLS until a record
// whose value contains UNTIL arrives, printing "offset value" per record.
//
// usage: node policy_consume.js BOOTSTRAP TOPIC GROUP CA CERT KEY UNTIL
// Exit status 0 only if the UNTIL record came before the deadline.
'use strict';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, group, ca, cert, key, until] = process.argv.slice(2);

async function main() {
  const kafka = new Kafka({
    clientId: 'strait-interop-kafkajs',
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    retry: { retries: 8 },
    ssl: { ca: [fs.readFileSync(ca)], cert: fs.readFileSync(cert), key: fs.readFileSync(key) },
  });
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  let found = false;
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  await consumer.run({
    eachMessage: async ({ message }) => {
      const v = message.value.toString();
      seen.push([Number(message.offset), v]);
      if (v.includes(until)) { found = true; resolveDone(); }
    },
  });
  const timer = setTimeout(resolveDone, 60000);
  await done;
  clearTimeout(timer);
  await consumer.disconnect();
  seen.sort((a, b) => a[0] - b[0]);
  for (const [o, v] of seen) console.log(`${o} ${v}`);
  if (!found) {
    console.error(`no record containing ${until}`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
