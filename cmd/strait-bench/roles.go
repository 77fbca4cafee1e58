package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/plugins"
	"github.com/strait-proxy/strait/proxy"
)

// benchTopic is the one topic every run produces to and consumes from.
const benchTopic = "bench"

// runKfake is the kfake child: a 3-broker cluster that keeps its own storage
// out of the measurement. Produce is acknowledged and discarded
// (BlackholeProduce); every fetch is answered from one canned batch of
// record-bytes values (SyntheticFetch), so consumers never run dry and the
// broker never touches a log.
func runKfake(partitions, recordBytes int, synthetic string) error {
	// 128 records of 1 KiB make ~130 KiB batches: a 1 MiB partition
	// fetch is then filled with several copies instead of one 1 MiB
	// batch that may not fit.
	sb := kfake.SyntheticBatch{RecordBytes: recordBytes, Records: 128}
	switch synthetic {
	case "":
	case "orders": // the policy workload: JSON values
		sb = kfake.SyntheticBatch{Batch: ordersBatch(128, recordBytes)}
	default:
		return fmt.Errorf("-synthetic %q: orders or nothing", synthetic)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(3),
		kfake.SeedTopics(int32(partitions), benchTopic),
		kfake.BlackholeProduce(),
		kfake.SyntheticFetch(sb),
	)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("ADDRS %s\n", strings.Join(c.ListenAddrs(), ","))
	waitSignal()
	return nil
}

// runStraitInProcess is the profiling role: the same proxy package and
// interceptor registry the strait binary wires up (cmd/strait's cmdRun),
// driven by the same flags, with a CPU profile written when it stops. It
// exists so that we can profile Strait without adding pprof to the binary.
func runStraitInProcess(args []string, cpuprofile string) error {
	fs := flag.NewFlagSet("strait", flag.ContinueOnError)
	upstream := fs.String("upstream", "", "")
	listen := fs.String("listen", "", "")
	portBase := fs.Int("broker-port-base", 0, "")
	admin := fs.String("admin-listen", "", "")
	level := fs.String("log-level", "warn", "")
	file := fs.String("config", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := config.Default()
	if *file != "" {
		var err error
		if cfg, err = config.Load(*file); err != nil {
			return err
		}
	}
	cfg.Upstream.Bootstrap = strings.Split(*upstream, ",")
	cfg.Listen.Bootstrap = *listen
	cfg.Listen.BrokerPortBase = *portBase
	cfg.Admin.Listen = *admin
	cfg.Log.Level = *level
	if err := cfg.Validate(); err != nil {
		return err
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(*level))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	reg := prometheus.NewRegistry()
	ics, err := plugins.Build(cfg, log, reg)
	if err != nil {
		return err
	}
	defer ics.Close()
	srv, err := proxy.New(cfg, proxy.Options{Logger: log, Registerer: reg, Interceptors: ics.List, Topics: ics.Topics})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *admin)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.AdminHandler(reg), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()

	f, err := os.Create(cpuprofile)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return srv.Run(ctx)
}

func waitSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
	<-ch
}
