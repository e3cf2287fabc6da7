package sink

import (
	"bufio"
	"context"
	"io"
	"net"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/telemetry"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"

	"github.com/trellismesh/trellis/internal/testutil/rsyslogtest"
)

func TestSyslogTCP(t *testing.T) {
	t.Parallel()
	srv := rsyslogtest.Start(t, false)
	testSyslogDelivery(t, srv, "syslog+tcp://"+srv.Addr())
}

func TestSyslogTLS(t *testing.T) {
	t.Parallel()
	pki := rsyslogtest.NewPKI(t)
	srv := rsyslogtest.StartTLS(t, pki, true)
	base := "syslog+tls://" + srv.Addr() + "?ca=" + pki.CAFile

	// Batches the server refuses must fail, or they would count as
	// delivered. Their index never appears in the server's output.
	other := rsyslogtest.NewPKI(t)
	for _, tc := range []struct{ name, url, want string }{
		// TLS 1.3 clients finish the handshake before the server checks
		// their certificate: the refusal shows after the write.
		{"no client certificate", base, "may be refusing our client certificate"},
		{"client certificate from another CA", base + "&cert=" + other.ClientCert + "&key=" + other.ClientKey, "may be refusing our client certificate"},
		{"untrusted server", "syslog+tls://" + srv.Addr() + "?ca=" + other.CAFile + "&cert=" + pki.ClientCert + "&key=" + pki.ClientKey, "certificate signed by unknown authority"},
		{"wrong server name", base + "&servername=siem.example&cert=" + pki.ClientCert + "&key=" + pki.ClientKey, "not siem.example"},
	} {
		s, err := Parse(tc.url, Options{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = s.Send(context.Background(), []telemetry.Record{{Index: refusedIndex, Event: testEvent(1)}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
		s.Close()
	}

	testSyslogDelivery(t, srv, base+"&servername=localhost&cert="+pki.ClientCert+"&key="+pki.ClientKey)
}

// refusedIndex marks batches a server must not accept.
const refusedIndex = 999999

// testSyslogDelivery delivers events to srv through url: first a backlog,
// then a stream during which the server is stopped and started again.
// Every event must arrive, intact; only the batch in flight when the server
// stopped, and the one before it, may arrive twice.
func testSyslogDelivery(t *testing.T, srv *rsyslogtest.Server, url string) {
	log := openLog(t)
	s, err := Parse(url, Options{Hostname: "trellis-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const maxBatch = 20
	d := newDeliverer(t, DelivererConfig{
		Name: url, Sink: s, Log: log, Dir: t.TempDir(),
		MaxBatch: maxBatch, BatchDelay: 5 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	appendEvents(t, log, log, 100)
	startDeliverer(t, d)
	awaitCursor(t, d, 100, 15*time.Second)
	msgs := srv.AwaitMessages(10*time.Second, func(m []rsyslogtest.Message) bool { return len(m) >= 100 })
	counts := checkSyslogMessages(t, log, msgs)
	if len(msgs) != 100 || len(counts) != 100 {
		t.Fatalf("backlog: %d messages for %d distinct indexes, want 100 of each", len(msgs), len(counts))
	}

	// The server goes away while events keep coming.
	stopAppending := make(chan struct{})
	appending := make(chan struct{})
	go func() {
		defer close(appending)
		for {
			select {
			case <-stopAppending:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if _, err := log.Append(testEvent(int(log.LastIndex()) + 1)); err != nil {
				t.Errorf("append: %v", err)
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	srv.Stop()
	downFrom, failed := log.LastIndex(), d.Stats().FailedAttempts
	downAt := time.Now()
	for d.Stats().FailedAttempts < failed+3 || time.Since(downAt) < 300*time.Millisecond {
		if time.Since(downAt) > 15*time.Second {
			t.Fatalf("no failed deliveries while the server was down (stats %+v)", d.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	downTo := log.LastIndex()
	srv.Restart()
	time.Sleep(150 * time.Millisecond)
	close(stopAppending)
	<-appending
	total := log.LastIndex()
	if downTo-downFrom < 20 || total-downTo < 10 {
		t.Fatalf("appended %d events while the server was down and %d after, want more", downTo-downFrom, total-downTo)
	}

	awaitCursor(t, d, total, 30*time.Second)
	msgs = srv.AwaitMessages(10*time.Second, func(m []rsyslogtest.Message) bool { return distinctIndexes(m) >= int(total) })
	counts = checkSyslogMessages(t, log, msgs)
	var missing, dups []uint64
	for i := uint64(1); i <= total; i++ {
		switch n := counts[i]; {
		case n == 0:
			missing = append(missing, i)
		case n > 2:
			t.Errorf("index %d arrived %d times", i, n)
		case n == 2:
			dups = append(dups, i)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d events lost: %v", len(missing), total, missing)
	}
	// At most the batch in flight when the server stopped, and the one
	// confirmed before it if the server reset the connection.
	if len(dups) > 0 && dups[len(dups)-1]-dups[0] >= 2*maxBatch {
		t.Errorf("duplicates %v span more than two batches of %d", dups, maxBatch)
	}
	if _, ok := counts[refusedIndex]; ok {
		t.Errorf("a batch the sink reported as failed reached the server")
	}
	t.Logf("%d events, %d while the server was down; %d failed attempts; %d sent twice %v",
		total, downTo-downFrom, d.Stats().FailedAttempts, len(dups), dups)
}

func distinctIndexes(msgs []rsyslogtest.Message) int {
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.SD[sdID]["index"]] = true
	}
	return len(seen)
}

// checkSyslogMessages checks every message against the log record its
// index names and returns how often each index arrived.
func checkSyslogMessages(t *testing.T, log *eventlog.Log, msgs []rsyslogtest.Message) map[uint64]int {
	t.Helper()
	counts := map[uint64]int{}
	bad := 0
	for _, m := range msgs {
		sd := m.SD[sdID]
		index, err := strconv.ParseUint(sd["index"], 10, 64)
		if err != nil {
			t.Errorf("message without an index: %+v", m)
			continue
		}
		counts[index]++
		if index == refusedIndex || bad > 3 {
			continue
		}
		recs, err := log.Read(index, 1)
		if err != nil || len(recs) != 1 {
			t.Errorf("index %d: not in the log (%v)", index, err)
			bad++
			continue
		}
		r := recs[0]
		e := r.Event
		pri := "85"
		if e.Kind == "authz.deny" || e.Kind == "authz.audit_would_deny" {
			pri = "84"
		}
		ts := e.Time.AsTime().UTC().Format("2006-01-02T15:04:05.000000Z")
		wantAttrs := e.Attributes
		if m.PRI != pri || m.Hostname != "trellis-test" || m.App != "trellis" || m.ProcID != "-" || m.MsgID != e.Kind ||
			!strings.HasPrefix(m.Raw, "<"+pri+">1 "+ts+" trellis-test trellis - "+e.Kind+" [") ||
			!strings.HasPrefix(m.Msg, e.Kind+" "+e.Method+" "+e.Path) ||
			!reflect.DeepEqual(sd, wantSD(r)) || !reflect.DeepEqual(m.SD[sdAttrID], wantAttrs) {
			t.Errorf("index %d: rsyslog received\n %+v\nwant structured data\n %v\n %v", index, m, wantSD(r), wantAttrs)
			bad++
		}
	}
	return counts
}

// wantSD is the trellis@32473 element a record must arrive with, as
// rsyslog's mmpstrucdata parses it.
func wantSD(r telemetry.Record) map[string]string {
	e := r.Event
	m := map[string]string{
		"index": strconv.FormatUint(r.Index, 10),
		"seq":   strconv.FormatUint(e.Seq, 10),
		"kind":  e.Kind,
	}
	for k, v := range map[string]string{
		"reporter": e.Reporter, "instance": e.Instance, "source_id": e.SourceId, "source_service": e.SourceService,
		"source_namespace": e.SourceNamespace, "destination_id": e.DestinationId,
		"destination_service": e.DestinationService, "destination_namespace": e.DestinationNamespace,
		"protocol": e.Protocol, "method": e.Method, "path": e.Path, "decision": e.Decision,
		"reason": e.Reason, "trace_id": e.TraceId,
	} {
		if v != "" {
			m[k] = v
		}
	}
	if e.ResponseCode != 0 {
		m["response_code"] = strconv.Itoa(int(e.ResponseCode))
	}
	if e.Policy != "" {
		m["policy"], m["rule"] = e.Policy, strconv.Itoa(int(e.Rule))
	}
	if e.DurationMicros != 0 {
		m["duration_micros"] = strconv.FormatUint(e.DurationMicros, 10)
	}
	return m
}

// TestSyslogResendAfterReset: a server that stops reading, then closes the
// connection with a confirmed batch unread (so its TCP stack resets it),
// gets that batch again on the next connection; a server that closed
// cleanly, having read everything, does not.
func TestSyslogResendAfterReset(t *testing.T) {
	for _, tc := range []struct {
		name      string
		readFirst bool // the server reads batch 2 before closing
		want      []uint64
	}{
		{"reset with batch 2 unread", false, []uint64{2, 3}},
		{"clean close", true, []uint64{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			s, err := Parse("syslog+tcp://"+l.Addr().String(), Options{SyslogSettle: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			send := func(i int) {
				t.Helper()
				if err := s.Send(context.Background(), []telemetry.Record{{Index: uint64(i), Event: testEvent(i)}}); err != nil {
					t.Fatalf("batch %d: %v", i, err)
				}
			}

			send(1)
			c1, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			r1 := bufio.NewReader(c1)
			if got := readFrames(t, r1, 1); !reflect.DeepEqual(got, []uint64{1}) {
				t.Fatalf("first connection: got %v, want [1]", got)
			}
			send(2) // confirmed: acknowledged and not closed within the settle time
			if tc.readFirst {
				readFrames(t, r1, 1)
			}
			c1.Close()
			time.Sleep(50 * time.Millisecond) // for the FIN or RST to arrive

			send(3)
			s.Close()
			c2, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			if got := readFrames(t, bufio.NewReader(c2), -1); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("second connection: got indexes %v, want %v", got, tc.want)
			}
		})
	}
}

var indexParam = regexp.MustCompile(`\[trellis@32473 index="(\d+)"`)

// readFrames reads n octet-counted frames (all of them until EOF when n is
// negative) and returns their indexes.
func readFrames(t *testing.T, r *bufio.Reader, n int) []uint64 {
	t.Helper()
	var idx []uint64
	for ; n != 0; n-- {
		l, err := r.ReadString(' ')
		if err == io.EOF && n < 0 && l == "" {
			break
		}
		if err != nil {
			t.Fatalf("frame length: %v", err)
		}
		size, err := strconv.Atoi(strings.TrimSuffix(l, " "))
		if err != nil {
			t.Fatalf("frame length %q: %v", l, err)
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(r, msg); err != nil {
			t.Fatalf("frame of %d bytes: %v", size, err)
		}
		m := indexParam.FindSubmatch(msg)
		if m == nil {
			t.Fatalf("frame without an index: %s", msg)
		}
		i, _ := strconv.ParseUint(string(m[1]), 10, 64)
		idx = append(idx, i)
	}
	return idx
}
