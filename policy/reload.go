package policy

import (
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Reload re-reads the policies, bundle and catalog. A policy that fails to
// load or compile is rejected: the one in force stays, and the error is
// returned (and logged, and counted).
func (p *Policy) Reload() error {
	c, err := Load(p.cfg)
	if err != nil {
		p.m.reloads.WithLabelValues("rejected").Inc()
		p.log.Error("policy reload rejected: the previous policy stays in force", "revision", p.Revision(), "err", err)
		return err
	}
	old := p.Revision()
	p.swap(c)
	p.m.reloads.WithLabelValues("ok").Inc()
	p.log.Info("policy reloaded", "revision", c.Revision, "previous", old)
	return nil
}

// startReload reloads on SIGHUP and, with reload.interval, when a file's
// size or modification time changes.
func (p *Policy) startReload() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var tick <-chan time.Time
	if r := p.cfg.Reload; r != nil && r.Interval > 0 {
		t := time.NewTicker(r.Interval.D())
		tick = t.C
		p.wg.Add(1)
		go func() { <-p.stop; t.Stop(); p.wg.Done() }()
	}
	seen := p.stamp()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer signal.Stop(hup)
		for {
			select {
			case <-p.stop:
				return
			case <-hup:
				_ = p.Reload()
				seen = p.stamp()
			case <-tick:
				if s := p.stamp(); s != seen {
					seen = s
					_ = p.Reload()
				}
			}
		}
	}()
}

// stamp summarizes the size and modification time of every input file.
func (p *Policy) stamp() string {
	var b []byte
	var walk func(string)
	walk = func(path string) {
		fi, err := os.Stat(path)
		if err != nil {
			b = append(b, "missing:"+path...)
			return
		}
		if fi.IsDir() {
			es, _ := os.ReadDir(path)
			for _, e := range es {
				walk(path + "/" + e.Name())
			}
			return
		}
		b = append(b, path...)
		b = append(b, fi.ModTime().String()...)
		b = append(b, byte(fi.Size()), byte(fi.Size()>>8), byte(fi.Size()>>16))
	}
	for _, f := range p.cfg.Policies {
		walk(f)
	}
	if p.cfg.Bundle != "" {
		walk(p.cfg.Bundle)
	}
	if p.cfg.Catalog != "" {
		walk(p.cfg.Catalog)
	}
	return string(b)
}
