package dataplane_test

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"

	"github.com/trellismesh/trellis/internal/testutil"
)

// TestAppFailureBodies: the answer says which failure it was. An app that
// is not listening is unavailable (503); an app that took the request and
// closed without answering broke the exchange (502), on the fast path
// (bodyless) and on net/http's (with a body).
func TestAppFailureBodies(t *testing.T) {
	l := listen(t)
	down := l.Addr().String()
	l.Close()
	hangUp := startRawApp(t, func(int64, *http.Request, *bufio.Writer) bool { return false })
	for _, tc := range []struct {
		name, app string
		code      int
		body      string
	}{
		{"not listening", down, http.StatusServiceUnavailable, "trellis: local app unavailable\n"},
		{"closed without answering", hangUp.addr, http.StatusBadGateway, "trellis: local app broke the exchange\n"},
	} {
		m := newMesh(t, meshOptions{appAddr: tc.app})
		c := testutil.HTTPClient(t)
		resp, body := testutil.Get(t, c, m.url("/x"))
		if resp.StatusCode != tc.code || body != tc.body {
			t.Errorf("%s, GET: %d %q, want %d %q", tc.name, resp.StatusCode, body, tc.code, tc.body)
		}
		req, err := http.NewRequest(http.MethodPost, m.url("/x"), bytes.NewReader([]byte("payload")))
		if err != nil {
			t.Fatal(err)
		}
		resp, body = testutil.Do(t, c, req)
		if resp.StatusCode != tc.code || body != tc.body {
			t.Errorf("%s, POST: %d %q, want %d %q", tc.name, resp.StatusCode, body, tc.code, tc.body)
		}
	}
}
