package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/trellismesh/trellis/internal/telemetry"
)

// httpSink POSTs each batch as {"events":[...]}.
type httpSink struct {
	url     string // without userinfo
	display string
	user    *url.Userinfo
	header  http.Header
	client  *http.Client
	buf     []byte
}

func newHTTPSink(u *url.URL, opts Options) *httpSink {
	client := &http.Client{Timeout: opts.Timeout}
	if opts.HTTPClient != nil {
		c := *opts.HTTPClient
		client = &c
	}
	// A 301/302 would turn the POST into a GET without a body, and its 2xx
	// would count as delivered.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	target := *u
	target.User = nil
	return &httpSink{
		url:     target.String(),
		display: Display(u.String()),
		user:    u.User,
		header:  opts.HTTPHeader.Clone(),
		client:  client,
	}
}

func (s *httpSink) String() string { return s.display }

func (s *httpSink) Send(ctx context.Context, recs []telemetry.Record) error {
	s.buf = append(s.buf[:0], `{"events":[`...)
	for i, r := range recs {
		if i > 0 {
			s.buf = append(s.buf, ',')
		}
		s.buf = appendJSON(s.buf, r)
	}
	s.buf = append(s.buf, "]}"...)

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(s.buf))
	if err != nil {
		return fmt.Errorf("http sink %s: %w", s.display, err)
	}
	for k, vs := range s.header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	if s.user != nil {
		pw, _ := s.user.Password()
		req.SetBasicAuth(s.user.Username(), pw)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// The error quotes the URL, query included.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return fmt.Errorf("http sink %s: POST: %w", s.display, err)
	}
	defer resp.Body.Close()
	// Read a little of the body for the error, and drain the rest so the
	// connection can be reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	msg := fmt.Sprintf("http sink %s: server answered %s", s.display, resp.Status)
	if loc := resp.Header.Get("Location"); loc != "" {
		msg += " (redirect to " + Display(loc) + "; configure that URL instead)"
	}
	if t := strings.TrimSpace(string(snippet)); t != "" {
		msg += ": " + strings.ToValidUTF8(t, "?")
	}
	return errors.New(msg)
}

func (s *httpSink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
