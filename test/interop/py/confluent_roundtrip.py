#!/usr/bin/python3
"""Produce N records with confluent-kafka-python (librdkafka), then consume
them back in a consumer group, printing "key=value" per record consumed.

usage: confluent_roundtrip.py BOOTSTRAP TOPIC N PREFIX GROUP
Exit status 0 only if all N records came back before the deadline.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer

bootstrap, topic, n, prefix, group = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
deadline = time.time() + 60

errors = []


def delivered(err, msg):
    if err is not None:
        errors.append(str(err))


p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
              "enable.idempotence": True, "message.timeout.ms": 30000})
for i in range(n):
    p.produce(topic, key=f"k{i}", value=f"{prefix}-{i}", on_delivery=delivered)
    p.poll(0)
left = p.flush(30)
if left or errors:
    print(f"produce failed: {left} undelivered, errors: {errors[:5]}", file=sys.stderr)
    sys.exit(1)
print(f"produced {n}", file=sys.stderr)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
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
        seen[(m.partition(), m.offset())] = f"{m.key().decode()}={m.value().decode()}"
finally:
    c.close()
for v in seen.values():
    print(v)
if len(seen) < n:
    print(f"consumed only {len(seen)} of {n}", file=sys.stderr)
    sys.exit(1)
