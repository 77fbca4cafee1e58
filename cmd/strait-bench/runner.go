package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Paths a run can take.
const (
	pathDirect = "direct"
	pathStrait = "strait"
)

// runResult is one measured window of one workload on one path.
type runResult struct {
	Workload      string             `json:"workload"`
	Path          string             `json:"path"`
	Seconds       float64            `json:"seconds"`
	Records       int64              `json:"records"`
	Bytes         int64              `json:"bytes"`
	MBps          float64            `json:"mb_per_s"` // 10^6 bytes of record values per second
	RecordsPerSec float64            `json:"records_per_s"`
	CPUSeconds    map[string]float64 `json:"cpu_seconds"` // per process: strait, kfake, loadgen
	// MachineBusyCores is how many cores the whole machine kept busy on
	// average, ours and everybody else's: it says how noisy the run was.
	MachineBusyCores float64 `json:"machine_busy_cores"`
	// OtherCores is MachineBusyCores minus our processes: everybody else.
	OtherCores float64 `json:"other_cores"`
	// StraitRequests is how many requests Strait forwarded in the window,
	// from its own strait_requests_total: CPU per request explains what CPU
	// per GB cannot when requests are small.
	StraitRequests int64 `json:"strait_requests"`
	// FailedRecords is how many records the client reported failed (any
	// failure also fails the bench).
	FailedRecords int64   `json:"failed_records"`
	Rate          float64 `json:"rate_records_per_s,omitempty"`
	P50Ms         float64 `json:"p50_ms,omitempty"`
	P99Ms         float64 `json:"p99_ms,omitempty"`

	lat []time.Duration
}

// workload is one load generator; it runs until ctx ends, counting into m.
type workload func(ctx context.Context, m *meter) error

// tree is what a run can observe of the process tree: the pids to charge CPU
// to, and Strait's metrics endpoint.
type tree struct {
	procs   map[string]int
	metrics string
}

// snapshot is what we read at each edge of the measured window.
type snapshot struct {
	at             time.Time
	records, byts  int64
	cpu            map[string]time.Duration
	machineBusy    time.Duration
	straitRequests int64
}

func takeSnapshot(m *meter, t tree) (snapshot, error) {
	s := snapshot{at: time.Now(), records: m.records.Load(), byts: m.bytes.Load(), cpu: map[string]time.Duration{}}
	for name, pid := range t.procs {
		used, err := cpuTime(pid)
		if err != nil {
			return s, fmt.Errorf("cpu of %s: %w", name, err)
		}
		s.cpu[name] = used
	}
	var err error
	if s.machineBusy, err = machineBusy(); err != nil {
		return s, err
	}
	if t.metrics != "" {
		s.straitRequests, err = scrapeRequests(t.metrics)
	}
	return s, err
}

// scrapeRequests sums strait_requests_total over all APIs.
func scrapeRequests(url string) (int64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "strait_requests_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("strait metrics: %q: %w", line, err)
		}
		sum += v
	}
	return int64(sum), sc.Err()
}

// measure runs w for warm-up plus the measured duration and reports the
// measured window only. latCap > 0 keeps up to that many latencies.
func measure(o options, name, path string, t tree, latCap int, w workload) (runResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := &meter{lat: make([]time.Duration, latCap)}
	errc := make(chan error, 1)
	go func() { errc <- w(ctx, m) }()

	if err := sleepOrFail(o.warmup, errc, m); err != nil {
		return runResult{}, err
	}
	before, err := takeSnapshot(m, t)
	if err != nil {
		return runResult{}, err
	}
	m.recording.Store(true)
	if err := sleepOrFail(o.duration, errc, m); err != nil {
		return runResult{}, err
	}
	m.recording.Store(false)
	after, err := takeSnapshot(m, t)
	if err != nil {
		return runResult{}, err
	}
	cancel()
	if err := <-errc; err != nil {
		return runResult{}, fmt.Errorf("%s %s: %w", name, path, err)
	}
	r := result(name, path, before, after, m.latencies())
	r.FailedRecords = m.failed.Load()
	return r, nil
}

// sleepOrFail waits d unless the workload stops or fails first.
func sleepOrFail(d time.Duration, errc chan error, m *meter) error {
	select {
	case err := <-errc:
		if err == nil {
			err = fmt.Errorf("workload stopped early")
		}
		return err
	case <-time.After(d):
	}
	if err := m.firstErr(); err != nil {
		return fmt.Errorf("%d records failed, first: %w", m.failed.Load(), err)
	}
	return nil
}

func result(name, path string, before, after snapshot, lat []time.Duration) runResult {
	secs := after.at.Sub(before.at).Seconds()
	r := runResult{
		Workload: name, Path: path, Seconds: secs,
		Records: after.records - before.records, Bytes: after.byts - before.byts,
		CPUSeconds:       map[string]float64{},
		MachineBusyCores: (after.machineBusy - before.machineBusy).Seconds() / secs,
		StraitRequests:   after.straitRequests - before.straitRequests,
		lat:              lat,
	}
	r.MBps = float64(r.Bytes) / 1e6 / secs
	r.RecordsPerSec = float64(r.Records) / secs
	ours := 0.0
	for p, t := range after.cpu {
		r.CPUSeconds[p] = (t - before.cpu[p]).Seconds()
		ours += r.CPUSeconds[p]
	}
	r.OtherCores = max(0, r.MachineBusyCores-ours/secs)
	if len(lat) > 0 {
		r.P50Ms, r.P99Ms = percentileMs(lat, 0.50), percentileMs(lat, 0.99)
	}
	return r
}

// percentileMs sorts lat in place and returns its q-quantile in ms.
func percentileMs(lat []time.Duration, q float64) float64 {
	slices.Sort(lat)
	i := min(int(q*float64(len(lat))), len(lat)-1)
	return float64(lat[i]) / float64(time.Millisecond)
}

// machineBusy is the CPU time all cores spent not idle since boot, from the
// first line of /proc/stat.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected format")
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		// Fields: user nice system idle iowait irq softirq steal guest
		// guest_nice. Idle and iowait are not busy; guest time is already
		// counted in user.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clkTck, nil
}
