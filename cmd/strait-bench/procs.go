package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/strait-proxy/strait/internal/freeport"
)

// The bench is one process tree: this process runs the load generator, a
// child (this same binary, -role kfake) runs the cluster, and another child
// runs Strait. Separate processes let us charge CPU to each of them from
// /proc/<pid>/stat: the issue asks for Strait's own CPU per GB moved, and we
// must be able to tell whether kfake or the load generator is what limits a
// run.

// clkTck is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports; the kernel hides the real HZ.
const clkTck = 100

// cpuTime is the user+system CPU a process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces:
	// count fields after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// child is a process the bench started; it is killed when the bench ends.
type child struct {
	name string
	cmd  *exec.Cmd
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the child to exit (SIGTERM: Strait drains, the kfake and
// profiling roles flush) and kills it if it does not within a few seconds.
func (c *child) stop() {
	if c == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// startKfake re-executes this binary as the kfake role and returns the
// cluster's bootstrap addresses, which the child prints as its first line.
func startKfake(o options, synthetic string) (*child, []string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(self, "-role", "kfake", "-partitions", strconv.Itoa(o.partitions),
		"-record-bytes", strconv.Itoa(o.recordBytes), "-synthetic", synthetic)
	cmd.Stderr = os.Stderr
	// Pdeathsig: if the bench dies, its children must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	c := &child{name: "kfake", cmd: cmd}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		c.stop()
		return nil, nil, fmt.Errorf("kfake child: %w", err)
	}
	addrs := strings.Split(strings.TrimSpace(strings.TrimPrefix(line, "ADDRS ")), ",")
	go io.Copy(io.Discard, out) // never let a full pipe block the child
	return c, addrs, nil
}

// straitProc is a running Strait child and the address clients bootstrap to.
type straitProc struct {
	*child
	bootstrap string
	metrics   string // Strait's /metrics URL
}

// startStrait runs Strait in front of upstream. Normally that is the
// strait binary from STRAIT_BIN, exactly as users run it; with a profile
// path it is this binary's in-process role instead (same proxy package and
// interceptors), because the strait binary exposes no pprof endpoint.
func startStrait(o options, upstream []string, profile, config string) (*straitProc, error) {
	base, err := freeport.Base(12)
	if err != nil {
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(base+10)
	admin := "127.0.0.1:" + strconv.Itoa(base+11)
	args := []string{"run", "--upstream", strings.Join(upstream, ","), "--listen", listen,
		"--broker-port-base", strconv.Itoa(base), "--admin-listen", admin, "--log-level", "error"}
	if config != "" {
		args = append(args, "--config", config)
	}
	bin := o.straitBin
	if profile != "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
		args = append([]string{"-role", "strait", "-cpuprofile", profile, "--"}, args[1:]...)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start strait (%s): %w", bin, err)
	}
	p := &straitProc{child: &child{name: "strait", cmd: cmd}, bootstrap: listen, metrics: "http://" + admin + "/metrics"}
	if err := waitReady("http://"+admin+"/readyz", 20*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("strait: %w", err)
	}
	return p, nil
}

// waitReady polls url until it answers 200: Strait is ready once it has
// fetched upstream metadata.
func waitReady(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s", url, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
