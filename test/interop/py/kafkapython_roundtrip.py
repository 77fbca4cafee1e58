#!/usr/bin/python3
"""Produce N records with kafka-python, then consume them back in a consumer
group, printing "key=value" per record consumed.

usage: kafkapython_roundtrip.py BOOTSTRAP TOPIC N PREFIX GROUP
Exit status 0 only if all N records came back before the deadline.
"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer

bootstrap, topic, n, prefix, group = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
deadline = time.time() + 60

p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=20000)
futures = [p.send(topic, key=f"k{i}".encode(), value=f"{prefix}-{i}".encode()) for i in range(n)]
p.flush(30)
for f in futures:
    f.get(timeout=30)  # raises on a failed send
p.close(10)
print(f"produced {n}", file=sys.stderr)

c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                  auto_offset_reset="earliest", enable_auto_commit=True,
                  consumer_timeout_ms=2000)
seen = {}
while len(seen) < n and time.time() < deadline:
    for m in c:  # ends after consumer_timeout_ms without records
        seen[(m.partition, m.offset)] = f"{m.key.decode()}={m.value.decode()}"
        if len(seen) >= n:
            break
c.close()
for v in seen.values():
    print(v)
if len(seen) < n:
    print(f"consumed only {len(seen)} of {n}", file=sys.stderr)
    sys.exit(1)
