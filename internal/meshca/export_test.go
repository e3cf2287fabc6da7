package meshca

// SetCommitHook makes every step of ca's next rotation or retirement call
// hook (steps "generation-written", "switched"); an error stops the write
// there, as a crash would.
func SetCommitHook(ca *CA, hook func(step string) error) { ca.hook = hook }
