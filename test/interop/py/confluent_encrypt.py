#!/usr/bin/python3
"""Produce records with confluent-kafka-python (librdkafka) through one
bootstrap (the encrypting Strait), then consume them back in a consumer group
through another (the decrypting Strait). Prints "hex(key) hex(value)" per
record consumed, so the caller can compare bytes exactly.

usage: confluent_encrypt.py PRODUCE_BOOTSTRAP CONSUME_BOOTSTRAP TOPIC INFILE GROUP
INFILE: one record per line, "hex(key) hex(value)".
Exit status 0 only if every record came back before the deadline.
"""
import sys
import time

from confluent_kafka import Consumer, Producer

prod_bs, cons_bs, topic, infile, group = sys.argv[1:6]
recs = []
with open(infile) as f:
    for line in f:
        line = line.strip()
        if line:
            k, v = line.split(" ")
            recs.append((bytes.fromhex(k), bytes.fromhex(v)))
n = len(recs)
deadline = time.time() + 60
errors = []


def delivered(err, msg):
    if err is not None:
        errors.append(str(err))


p = Producer({"bootstrap.servers": prod_bs, "linger.ms": 5, "acks": "all",
              "enable.idempotence": True, "message.timeout.ms": 30000})
for k, v in recs:
    p.produce(topic, key=k, value=v, on_delivery=delivered)
    p.poll(0)
left = p.flush(30)
if left or errors:
    print(f"produce failed: {left} undelivered, errors: {errors[:5]}", file=sys.stderr)
    sys.exit(1)
print(f"produced {n}", file=sys.stderr)

c = Consumer({"bootstrap.servers": cons_bs, "group.id": group,
              "auto.offset.reset": "earliest", "enable.auto.commit": True})
c.subscribe([topic])
seen = {}
try:
    while len(seen) < n and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            print(f"consumer error: {m.error()}", file=sys.stderr)
            continue
        hdrs = m.headers() or []
        if any(h[0] == "strait.enc" for h in hdrs):
            print(f"consumer saw Strait's header at {m.partition()}/{m.offset()}", file=sys.stderr)
            sys.exit(1)
        seen[(m.partition(), m.offset())] = f"{(m.key() or b'').hex()} {(m.value() or b'').hex()}"
finally:
    c.close()
for v in seen.values():
    print(v)
if len(seen) < n:
    print(f"consumed only {len(seen)} of {n}", file=sys.stderr)
    sys.exit(1)
