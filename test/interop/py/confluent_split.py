#!/usr/bin/python3
"""Produce N records of 1 KiB with confluent-kafka-python (librdkafka) at its
default batch size (batch.size 1,000,000) through an encrypting Strait, to
partition 0 as fast as the client takes them, so that full batches grow past
the broker's message.max.bytes once encrypted and Strait must split them.

usage: confluent_split.py BOOTSTRAP TOPIC N CODEC MODE
CODEC: none, gzip, snappy, lz4 or zstd. MODE: idempotent or transactional.
Value i: "secret-%06d|", 16 SHA-256 digests of "i/j" (j = 0..15), then text
up to 1024 bytes (split_test.go builds the same). Key i: "k%06d".
Prints "produced N failed F" and exits 0 only if no record failed.
"""
import hashlib
import sys

from confluent_kafka import KafkaException, Producer

bootstrap, topic, n, codec, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
TEXT = b"the quick brown fox jumps over the lazy dog "


def value(i):
    v = b"secret-%06d|" % i
    for j in range(16):
        v += hashlib.sha256(b"%d/%d" % (i, j)).digest()
    while len(v) < 1024:
        v += TEXT
    return v[:1024]


failed = []


def delivered(err, msg):
    if err is not None:
        failed.append(str(err))


# batch.size stays at its default; a longer linger (default 5 ms) lets every
# batch fill up to it, as a busy producer's do.
conf = {"bootstrap.servers": bootstrap, "compression.type": codec, "enable.idempotence": True,
        "linger.ms": 200, "message.timeout.ms": 60000}
if mode == "transactional":
    conf["transactional.id"] = "split-" + topic
p = Producer(conf)
if mode == "transactional":
    p.init_transactions(30)
    p.begin_transaction()
for i in range(n):
    while True:
        try:
            p.produce(topic, key=b"k%06d" % i, value=value(i), partition=0, on_delivery=delivered)
            break
        except BufferError:  # queue full: let deliveries drain
            p.poll(0.1)
    p.poll(0)
left = p.flush(60)
if mode == "transactional":
    try:
        p.commit_transaction(30)
    except KafkaException as e:
        failed.append("commit: %s" % e)
print("produced %d failed %d" % (n, len(failed) + left))
if failed or left:
    print("errors: %s" % failed[:5], file=sys.stderr)
    sys.exit(1)
