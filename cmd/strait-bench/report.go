package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets from issue 3.
const (
	targetRatio = 0.85 // through ÷ direct throughput, produce and consume
	// targetEncryptRatio: produce through an encrypting Strait (issue 4).
	targetEncryptRatio = 0.6
	// targetPolicyRatio: consume through a policy-enforcing Strait (issue 7).
	targetPolicyRatio = 0.6
	targetAddedP99Ms  = 1.0 // added p99 produce latency at half the direct rate

	// noisyOtherCores: a run during which other processes kept more than
	// this many of the machine's cores busy is flagged as noisy.
	noisyOtherCores = 0.5
)

// report is everything the bench prints, as a table or as JSON.
type report struct {
	Date          string             `json:"date"`
	Host          hostInfo           `json:"host"`
	Settings      settings           `json:"settings"`
	Runs          []runResult        `json:"runs"`
	Summary       []workloadSummary  `json:"summary"`
	CPUPerGB      map[string]float64 `json:"strait_cpu_seconds_per_gb"` // by workload, and "all"
	AllTargetsMet bool               `json:"all_targets_met"`
}

type hostInfo struct {
	CPUs    int    `json:"cpus"`
	LoadAvg string `json:"loadavg_at_start"`
}

type settings struct {
	Duration    string `json:"duration"`
	Warmup      string `json:"warmup"`
	Rounds      int    `json:"rounds"`
	RecordBytes int    `json:"record_bytes"`
	Partitions  int    `json:"partitions"`
	Inflight    int    `json:"inflight_per_broker"`
	Linger      string `json:"linger"`
	Strait      string `json:"strait"`
}

// pathSummary pools the runs of one workload on one path.
type pathSummary struct {
	MBps          float64 `json:"mb_per_s"`
	RecordsPerSec float64 `json:"records_per_s"`
	FailedRecords int64   `json:"failed_records"`
	P50Ms         float64 `json:"p50_ms,omitempty"`
	P99Ms         float64 `json:"p99_ms,omitempty"`
	// Average cores each process used during these runs.
	StraitCores  float64 `json:"strait_cores"`
	KfakeCores   float64 `json:"kfake_cores"`
	LoadgenCores float64 `json:"loadgen_cores"`
	MachineCores float64 `json:"machine_cores"`
	// OtherCores is the machine's busy cores minus ours: other people's
	// load on a shared machine, the noise in these figures.
	OtherCores float64 `json:"other_cores"`
	// GBPerCPUSecond is payload moved per CPU second of our whole tree
	// (load generator + kfake + Strait).
	GBPerCPUSecond float64 `json:"gb_per_cpu_second"`
	// Strait's requests per second and CPU microseconds per request.
	StraitRequestsPerSec  float64 `json:"strait_requests_per_s,omitempty"`
	StraitCPUPerRequestUs float64 `json:"strait_cpu_us_per_request,omitempty"`

	seconds, straitCPU float64
	bytes              int64
}

type workloadSummary struct {
	Workload string      `json:"workload"`
	Direct   pathSummary `json:"direct"`
	Strait   pathSummary `json:"strait"`
	// Ratio is through ÷ direct throughput (records/s).
	Ratio float64 `json:"ratio"`
	// CPURatio is through ÷ direct of GB per CPU second of our tree: what
	// Ratio would be on a dedicated machine that the bench saturates, as a
	// 2-core machine is. It does not depend on other people's load.
	CPURatio   float64 `json:"cpu_normalized_ratio"`
	AddedP50Ms float64 `json:"added_p50_ms,omitempty"`
	AddedP99Ms float64 `json:"added_p99_ms,omitempty"`
	Rate       float64 `json:"rate_records_per_s,omitempty"`
	Target     string  `json:"target"`
	Met        bool    `json:"met"`
	// Noisy: in some run, other processes kept more than 0.5 cores busy.
	Noisy bool `json:"noisy"`
}

func newReport(o options) *report {
	la, _ := os.ReadFile("/proc/loadavg")
	strait := o.straitBin
	if o.profileDir != "" {
		strait = "in-process (profiling)"
	}
	return &report{
		Date: time.Now().UTC().Format(time.RFC3339),
		Host: hostInfo{CPUs: runtime.NumCPU(), LoadAvg: strings.TrimSpace(string(la))},
		Settings: settings{
			Duration: o.duration.String(), Warmup: o.warmup.String(), Rounds: o.rounds,
			RecordBytes: o.recordBytes, Partitions: o.partitions, Inflight: o.inflight,
			Linger: o.linger.String(), Strait: strait,
		},
		CPUPerGB: map[string]float64{},
	}
}

func (r *report) add(workload string, runs []runResult) {
	r.Runs = append(r.Runs, runs...)
	s := workloadSummary{Workload: workload, Direct: pool(runs, pathDirect), Strait: pool(runs, pathStrait)}
	if s.Direct.RecordsPerSec > 0 {
		s.Ratio = s.Strait.RecordsPerSec / s.Direct.RecordsPerSec
	}
	if s.Direct.GBPerCPUSecond > 0 {
		s.CPURatio = s.Strait.GBPerCPUSecond / s.Direct.GBPerCPUSecond
	}
	if workload == wlLatency {
		s.Rate = runs[0].Rate
		s.AddedP50Ms = s.Strait.P50Ms - s.Direct.P50Ms
		s.AddedP99Ms = s.Strait.P99Ms - s.Direct.P99Ms
		s.Target = fmt.Sprintf("added p99 <= %.0f ms", targetAddedP99Ms)
		s.Met = s.AddedP99Ms <= targetAddedP99Ms
	} else {
		want := targetRatio
		switch workload {
		case wlEncrypt:
			want = targetEncryptRatio
		case wlPolicy:
			want = targetPolicyRatio
		}
		s.Target = fmt.Sprintf("ratio >= %.2f", want)
		s.Met = s.Ratio >= want && s.Direct.FailedRecords == 0 && s.Strait.FailedRecords == 0
	}
	for _, run := range runs {
		s.Noisy = s.Noisy || run.OtherCores > noisyOtherCores
	}
	r.Summary = append(r.Summary, s)
	if s.Strait.bytes > 0 {
		r.CPUPerGB[workload] = s.Strait.straitCPU / (float64(s.Strait.bytes) / 1e9)
	}
}

// pool sums the runs of one path: throughput is total records over total
// seconds, and latency percentiles come from all samples together.
func pool(runs []runResult, path string) pathSummary {
	var p pathSummary
	var records int64
	var kfake, loadgen, machine float64
	var lat []time.Duration
	var requests int64
	for _, r := range runs {
		if r.Path != path {
			continue
		}
		requests += r.StraitRequests
		p.FailedRecords += r.FailedRecords
		p.seconds += r.Seconds
		p.bytes += r.Bytes
		records += r.Records
		p.straitCPU += r.CPUSeconds["strait"]
		kfake += r.CPUSeconds["kfake"]
		loadgen += r.CPUSeconds["loadgen"]
		machine += r.MachineBusyCores * r.Seconds
		lat = append(lat, r.lat...)
	}
	if p.seconds == 0 {
		return p
	}
	p.MBps = float64(p.bytes) / 1e6 / p.seconds
	p.RecordsPerSec = float64(records) / p.seconds
	p.StraitCores, p.KfakeCores = p.straitCPU/p.seconds, kfake/p.seconds
	p.LoadgenCores, p.MachineCores = loadgen/p.seconds, machine/p.seconds
	ours := p.straitCPU + kfake + loadgen
	p.OtherCores = max(0, (machine-ours)/p.seconds)
	if ours > 0 {
		p.GBPerCPUSecond = float64(p.bytes) / 1e9 / ours
	}
	if len(lat) > 0 {
		p.P50Ms, p.P99Ms = percentileMs(lat, 0.50), percentileMs(lat, 0.99)
	}
	if requests > 0 {
		p.StraitRequestsPerSec = float64(requests) / p.seconds
		p.StraitCPUPerRequestUs = p.straitCPU / float64(requests) * 1e6
	}
	return p
}

// finish computes the overall figures once every workload has run.
func (r *report) finish() {
	var cpu float64
	var bytes int64
	r.AllTargetsMet = true
	for _, s := range r.Summary {
		cpu += s.Strait.straitCPU
		bytes += s.Strait.bytes
		r.AllTargetsMet = r.AllTargetsMet && s.Met
	}
	if bytes > 0 {
		r.CPUPerGB["all"] = cpu / (float64(bytes) / 1e9)
	}
}

func (r *report) directRecordsPerSec(workload string) float64 {
	for _, s := range r.Summary {
		if s.Workload == workload {
			return s.Direct.RecordsPerSec
		}
	}
	return 0
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeTable(w io.Writer) {
	s := r.Settings
	fmt.Fprintf(w, "Strait benchmark  %s  %d CPUs  loadavg at start: %s\n", r.Date, r.Host.CPUs, r.Host.LoadAvg)
	fmt.Fprintf(w, "%s measured + %s warm-up per run, %d rounds (direct, strait alternating), %d B records, %d partitions, linger %s, %d in flight/broker\n",
		s.Duration, s.Warmup, s.Rounds, s.RecordBytes, s.Partitions, s.Linger, s.Inflight)
	fmt.Fprintf(w, "strait: %s\n\n", s.Strait)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tpath\tMB/s\trecords/s\tfailed\tp50 ms\tp99 ms\tstrait cores\tkfake cores\tloadgen cores\tother cores\tGB/CPU-s\t")
	for _, sm := range r.Summary {
		for _, p := range []struct {
			name string
			ps   pathSummary
		}{{pathDirect, sm.Direct}, {pathStrait, sm.Strait}} {
			fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.0f\t%d\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.3f\t\n", sm.Workload, p.name,
				p.ps.MBps, p.ps.RecordsPerSec, p.ps.FailedRecords, msOrDash(p.ps.P50Ms), msOrDash(p.ps.P99Ms),
				p.ps.StraitCores, p.ps.KfakeCores, p.ps.LoadgenCores, p.ps.OtherCores, p.ps.GBPerCPUSecond)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "(MB = 10^6 bytes of record values; cores = CPU seconds ÷ wall seconds per process; other = the rest of the machine;")
	fmt.Fprintln(w, " GB/CPU-s = payload per CPU second of loadgen+kfake+strait together)")
	fmt.Fprintln(w)
	for _, sm := range r.Summary {
		verdict := "MISS"
		if sm.Met {
			verdict = "PASS"
		}
		if sm.Noisy {
			verdict += " (noisy: other processes used > 0.5 cores in some run)"
		}
		switch sm.Workload {
		case wlLatency:
			fmt.Fprintf(w, "%-8s at %.0f records/s: added p50 %+.2f ms, added p99 %+.2f ms  (through/direct throughput %.3f)  target %s  %s\n",
				sm.Workload, sm.Rate, sm.AddedP50Ms, sm.AddedP99Ms, sm.Ratio, sm.Target, verdict)
		default:
			fmt.Fprintf(w, "%-8s through/direct = %.3f (CPU-normalized %.3f)  target %s  %s\n", sm.Workload, sm.Ratio, sm.CPURatio, sm.Target, verdict)
		}
	}
	fmt.Fprintln(w, "\nStrait's own CPU (utime+stime of the strait process), through-Strait runs:")
	for _, sm := range r.Summary {
		fmt.Fprintf(w, "  %-8s %6.2f CPU-s per GB moved   %6.1f µs per request   %7.0f requests/s\n",
			sm.Workload, r.CPUPerGB[sm.Workload], sm.Strait.StraitCPUPerRequestUs, sm.Strait.StraitRequestsPerSec)
	}
	if v, ok := r.CPUPerGB["all"]; ok {
		fmt.Fprintf(w, "  %-8s %6.2f CPU-s per GB moved\n", "all", v)
	}
}

func msOrDash(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}
