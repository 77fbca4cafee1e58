// Package chaos holds Strait's chaos run: for a set time (STRAIT_CHAOS_DURATION,
// default 50s; `make chaos` runs 5m) an idempotent producer and a
// transactional producer write through an encrypting Strait (the real binary,
// AWS KMS test double as key store), two consumer groups read (one through a
// decrypting Strait over TLS, read_committed; one straight from the brokers),
// while a schedule drawn from a logged seed kills and restarts brokers and the
// whole kfake cluster, makes the KMS double fail and recover, sends garbage,
// slowloris and TLS-reset clients, and SIGKILLs and restarts the encrypting
// Strait. At the end it checks what reached the brokers record by record.
// docs/reliability.md describes the run and its figures.
package chaos
