// Command strait-bench measures what Strait costs on the data path: the same
// franz-go load runs direct to a kfake cluster and through Strait, in one
// process tree and alternating (direct, strait, direct, strait...), so that
// noise from a shared machine lands on both paths alike and the ratios mean
// something even when the absolute figures do not.
//
//	STRAIT_BIN=bin/strait go run ./cmd/strait-bench [-duration 10s] [-json]
//
// It reports produce and consume throughput (1 KiB records) through ÷ direct,
// p50/p99 produce latency at a fixed rate of half the direct produce
// throughput, and Strait's own CPU seconds per GB moved, and prints PASS or
// MISS against the targets of issue 3. It exits non-zero only on errors.
// See docs/performance.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/strait-proxy/strait/crypto/kms/local"
)

type options struct {
	straitConfig     string // -config: a Strait config file for the passthrough workloads
	encrypting       bool   // the workload runs through an encrypting Strait
	duration, warmup time.Duration
	rounds           int
	batchBytes       int // producer batch limit; 0: the workload's default (batchMaxBytes)
	recordBytes      int
	partitions       int
	inflight         int
	linger           time.Duration
	rate             float64
	only             map[string]bool
	json             bool
	jsonFile         string
	profileDir       string
	straitBin        string
}

// Workloads, in the order they run: latency needs produce's direct figure.
const (
	wlProduce = "produce"
	wlConsume = "consume"
	wlLatency = "latency"
	// wlEncrypt is produce through a Strait that encrypts every record
	// value of the bench topic (local keyring), against the same load direct.
	wlEncrypt = "encrypt"
	// wlPolicy is consume through a Strait whose policy redacts one JSON
	// field of every record (policy.go), against the same consumer direct.
	wlPolicy = "policy"
)

func main() {
	var (
		o          options
		role       string
		cpuprofile string
		only       string
		synthetic  string
	)
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time of each run")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "unmeasured time before each run (connections, metadata, first batches)")
	flag.IntVar(&o.batchBytes, "batch-max-bytes", 0, "producer batch limit (0: franz-go's default 1,000,012 for encrypt, 1 MiB otherwise)")
	flag.IntVar(&o.rounds, "rounds", 2, "direct+strait pairs per workload, alternating")
	flag.IntVar(&o.recordBytes, "record-bytes", 1024, "record value size")
	flag.IntVar(&o.partitions, "partitions", 6, "partitions of the bench topic (spread over 3 brokers)")
	flag.IntVar(&o.inflight, "inflight", 5, "produce requests in flight per broker")
	flag.DurationVar(&o.linger, "linger", 5*time.Millisecond, "producer linger for the throughput runs (latency runs use 0)")
	flag.Float64Var(&o.rate, "rate", 0, "records/s of the latency runs; 0: half the direct produce throughput")
	flag.StringVar(&o.straitConfig, "config", "", "Strait config file for the produce, consume and latency workloads (e.g. limits.max_versions)")
	flag.StringVar(&only, "only", "produce,consume,latency,encrypt,policy", "workloads to run")
	flag.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	flag.StringVar(&o.jsonFile, "json-file", "", "also write the JSON results to this file")
	flag.StringVar(&o.profileDir, "profile-dir", "", "run Strait in-process (this binary, same proxy code) and write a CPU profile per workload here")
	flag.StringVar(&role, "role", "", "internal: kfake or strait (child processes of the bench)")
	flag.StringVar(&cpuprofile, "cpuprofile", "", "internal: CPU profile of the strait role")
	flag.StringVar(&synthetic, "synthetic", "", "internal: what the kfake role serves (orders: JSON orders)")
	flag.Parse()
	o.only = map[string]bool{}
	for _, w := range strings.Split(only, ",") {
		o.only[strings.TrimSpace(w)] = true
	}
	o.straitBin = os.Getenv("STRAIT_BIN")

	var err error
	switch role {
	case "kfake":
		err = runKfake(o.partitions, o.recordBytes, synthetic)
	case "strait":
		err = runStraitInProcess(flag.Args(), cpuprofile)
	case "":
		err = bench(o)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "strait-bench: %v\n", err)
		os.Exit(1)
	}
}

// bench runs every selected workload and prints the report.
func bench(o options) error {
	if o.straitBin == "" && o.profileDir == "" {
		bin, err := buildStrait()
		if err != nil {
			return err
		}
		o.straitBin = bin
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	kf, seeds, err := startKfake(o, "")
	if err != nil {
		return err
	}
	defer kf.stop()

	rep := newReport(o)
	if o.only[wlProduce] {
		runs, err := runWorkload(o, wlProduce, seeds, kf, 0, func(s []string) workload {
			return func(ctx context.Context, m *meter) error { return produceMax(ctx, s, o, m) }
		})
		if err != nil {
			return err
		}
		rep.add(wlProduce, runs)
	}
	if o.only[wlConsume] {
		runs, err := runWorkload(o, wlConsume, seeds, kf, 0, func(s []string) workload {
			return func(ctx context.Context, m *meter) error { return consumeMax(ctx, s, o, m) }
		})
		if err != nil {
			return err
		}
		rep.add(wlConsume, runs)
	}
	if o.only[wlLatency] {
		if err := runLatency(o, seeds, kf, rep); err != nil {
			return err
		}
	}
	if o.only[wlEncrypt] {
		cfg, cleanup, err := encryptConfig()
		if err != nil {
			return err
		}
		defer cleanup()
		eo := o
		eo.encrypting = true
		runs, err := runWorkloadWith(eo, wlEncrypt, seeds, kf, 0, cfg, func(s []string) workload {
			return func(ctx context.Context, m *meter) error { return produceMax(ctx, s, eo, m) }
		})
		if err != nil {
			return err
		}
		rep.add(wlEncrypt, runs)
	}
	if o.only[wlPolicy] {
		if err := runPolicy(o, rep); err != nil {
			return err
		}
	}
	rep.finish()
	if o.jsonFile != "" {
		f, err := os.Create(o.jsonFile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := rep.writeJSON(f); err != nil {
			return err
		}
	}
	if o.json {
		return rep.writeJSON(os.Stdout)
	}
	rep.writeTable(os.Stdout)
	return nil
}

// runPolicy consumes JSON orders from their own kfake child, direct and
// through a Strait running the policy of policy.go.
func runPolicy(o options, rep *report) error {
	kf, seeds, err := startKfake(o, "orders")
	if err != nil {
		return err
	}
	defer kf.stop()
	cfg, cleanup, err := policyConfig()
	if err != nil {
		return err
	}
	defer cleanup()
	runs, err := runWorkloadWith(o, wlPolicy, seeds, kf, 0, cfg, func(s []string) workload {
		return func(ctx context.Context, m *meter) error { return consumeMax(ctx, s, o, m) }
	})
	if err != nil {
		return err
	}
	rep.add(wlPolicy, runs)
	return nil
}

// runLatency produces at a fixed rate: half the direct produce throughput,
// so that neither path is saturated and the latency is the path's, not a
// queue's.
func runLatency(o options, seeds []string, kf *child, rep *report) error {
	rate := o.rate
	if rate == 0 {
		rate = rep.directRecordsPerSec(wlProduce) / 2
	}
	if rate == 0 { // produce was not run: calibrate with one direct run
		r, err := measure(o, wlProduce, pathDirect, tree{procs: map[string]int{"kfake": kf.pid(), "loadgen": os.Getpid()}}, 0,
			func(ctx context.Context, m *meter) error { return produceMax(ctx, seeds, o, m) })
		if err != nil {
			return err
		}
		rate = r.RecordsPerSec / 2
	}
	latCap := int(rate*o.duration.Seconds()*1.5) + 10000
	runs, err := runWorkload(o, wlLatency, seeds, kf, latCap, func(s []string) workload {
		return func(ctx context.Context, m *meter) error { return producePaced(ctx, s, o, rate, m) }
	})
	if err != nil {
		return err
	}
	for i := range runs {
		runs[i].Rate = rate
	}
	rep.add(wlLatency, runs)
	return nil
}

// runWorkload starts a fresh Strait for this workload (fresh connections; a
// profile per workload) and runs the rounds, alternating direct and
// through Strait.
func runWorkload(o options, name string, seeds []string, kf *child, latCap int, mk func([]string) workload) ([]runResult, error) {
	return runWorkloadWith(o, name, seeds, kf, latCap, o.straitConfig, mk)
}

// runWorkloadWith is runWorkload with a Strait config file (interceptors).
func runWorkloadWith(o options, name string, seeds []string, kf *child, latCap int, config string, mk func([]string) workload) ([]runResult, error) {
	profile := ""
	if o.profileDir != "" {
		profile = filepath.Join(o.profileDir, "strait-"+name+".pprof")
	}
	st, err := startStrait(o, seeds, profile, config)
	if err != nil {
		return nil, err
	}
	defer st.stop()
	t := tree{procs: map[string]int{"kfake": kf.pid(), "strait": st.pid(), "loadgen": os.Getpid()}, metrics: st.metrics}
	var runs []runResult
	for i := range o.rounds {
		for _, path := range []string{pathDirect, pathStrait} {
			s := seeds
			if path == pathStrait {
				s = []string{st.bootstrap}
			}
			r, err := measure(o, name, path, t, latCap, mk(s))
			if err != nil {
				return nil, err
			}
			progress(i, o.rounds, r)
			runs = append(runs, r)
		}
	}
	return runs, nil
}

func progress(i, n int, r runResult) {
	lat := ""
	if r.P99Ms > 0 {
		lat = fmt.Sprintf("  p50 %.2f ms  p99 %.2f ms", r.P50Ms, r.P99Ms)
	}
	fmt.Fprintf(os.Stderr, "%-8s %-6s %d/%d  %8.1f MB/s %9.0f rec/s  failed %d%s  cpu strait %.2f kfake %.2f loadgen %.2f  machine %.2f cores\n",
		r.Workload, r.Path, i+1, n, r.MBps, r.RecordsPerSec, r.FailedRecords, lat,
		r.CPUSeconds["strait"]/r.Seconds, r.CPUSeconds["kfake"]/r.Seconds, r.CPUSeconds["loadgen"]/r.Seconds, r.MachineBusyCores)
}

// buildStrait builds cmd/strait when STRAIT_BIN is not set, so that a bare
// `go run ./cmd/strait-bench` measures the current tree.
func buildStrait() (string, error) {
	dir, err := os.MkdirTemp("", "strait-bench")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "strait")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/strait-proxy/strait/cmd/strait")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	fmt.Fprintln(os.Stderr, "STRAIT_BIN not set: building cmd/strait")
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build strait: %w", err)
	}
	return bin, nil
}

// encryptConfig writes a keyring and a Strait config that encrypts the whole
// value of every record of the bench topic, and returns the config's path.
func encryptConfig() (string, func(), error) {
	dir, err := os.MkdirTemp("", "strait-bench-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	keyring := filepath.Join(dir, "keys.json")
	if err := local.Generate(keyring, "bench-kek"); err != nil {
		cleanup()
		return "", nil, err
	}
	cfg := fmt.Sprintf(`interceptors:
  - name: encrypt
    config:
      kms: {local: {keyring: %q}}
      rules:
        - {topics: [%q], key_id: bench-kek}
`, keyring, benchTopic)
	path := filepath.Join(dir, "strait.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		cleanup()
		return "", nil, err
	}
	return path, cleanup, nil
}
