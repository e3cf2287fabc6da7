package proxy

// TamperRunningHash makes the proxy report f(hash) as its running hash
// instead of the hash it runs (nil: report the truth again), so tests can
// make a proxy drift. Test builds only: nothing else can set it.
func (p *Proxy) TamperRunningHash(f func(string) string) {
	if f == nil {
		p.reports.tamper.Store(nil)
		return
	}
	p.reports.tamper.Store(&f)
}
