package policy

// Reload re-reads the policies, bundle and catalog and swaps them in whole:
// a partition being decided finishes on the version it started with. A
// policy that fails to load or compile is rejected: the one in force
// stays, and the error is returned, logged and counted
// (strait_policy_reloads_total{result="rejected"}).
//
// The strait binary does not call it: it watches the files the interceptor
// lists in Files (and SIGHUP) and rebuilds the whole chain, which
// rebuilds this interceptor (strait_config_reloads_total). Reload is for
// programs that embed the interceptor.
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
