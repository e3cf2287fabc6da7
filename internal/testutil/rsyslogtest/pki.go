package rsyslogtest

import (
	"testing"

	"github.com/trellismesh/trellis/internal/testutil"
)

// PKI is a CA with a server certificate for 127.0.0.1 and localhost and a
// client certificate, as PEM files in a temporary dir.
type PKI = testutil.PKI

// NewPKI makes a fresh PKI valid for a day.
func NewPKI(t testing.TB) PKI {
	t.Helper()
	return testutil.NewPKI(t, t.TempDir(), testutil.PKIOptions{CAName: "trellis test syslog CA", ServerName: "127.0.0.1", ClientName: "trellis-collector"})
}
