package eventlog_test

import (
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
)

// TestLogVerify: an open log verifies through its last durable record and,
// knowing where it ends, catches what the offline Verify cannot: records
// cut off its end.
func TestLogVerify(t *testing.T) {
	tests := []struct {
		name        string
		tamper      func(t *testing.T, dir string)
		wantRecords uint64 // intact records
		wantIndex   uint64 // of the TamperError; 0 for none
		wantIn      string // in the reason
	}{
		{"intact", func(*testing.T, string) {}, 40, 0, ""},
		{"flipped byte", func(t *testing.T, dir string) {
			seg, f := findRecord(t, dir, 12)
			editFile(t, seg, func(b []byte) []byte { b[f.off+30] ^= 0x01; return b })
		}, 11, 12, "bad CRC"},
		{"last record cut off", func(t *testing.T, dir string) {
			seg, f := findRecord(t, dir, 40)
			editFile(t, seg, func(b []byte) []byte { return b[:f.off] })
		}, 39, 40, "cut off its end"},
		{"last record half cut off", func(t *testing.T, dir string) {
			seg, f := findRecord(t, dir, 40)
			editFile(t, seg, func(b []byte) []byte { return b[:f.off+f.size/2] })
		}, 39, 40, ""},
		{"last segment deleted", func(t *testing.T, dir string) {
			segs := segments(t, dir)
			if err := os.Remove(segs[len(segs)-1]); err != nil {
				t.Fatal(err)
			}
		}, 0, 0, "cut off its end"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, 2000)
			for i := 1; i <= 40; i += 4 {
				mustAppend(t, l, testEvents(i, 4)...)
			}
			tc.tamper(t, dir)
			rep, err := l.Verify()
			te, isTamper := errors.AsType[*eventlog.TamperError](err)
			switch {
			case tc.wantIndex == 0 && tc.wantIn == "":
				if err != nil || rep.Records != tc.wantRecords || rep.TornBytes != 0 {
					t.Errorf("got %+v, %v; want %d records, no error", rep, err, tc.wantRecords)
				}
			case !isTamper:
				t.Errorf("got %+v, %v; want a TamperError", rep, err)
			case tc.wantIndex != 0 && (te.Index != tc.wantIndex || rep.Records != tc.wantRecords):
				t.Errorf("got record %d after %d intact; want record %d after %d", te.Index, rep.Records, tc.wantIndex, tc.wantRecords)
			case !strings.Contains(te.Reason, tc.wantIn):
				t.Errorf("got reason %q, want it to contain %q", te.Reason, tc.wantIn)
			}
		})
	}
}

// TestLogVerifyWhileAppending: records appended during a Verify are not
// read, so a half-written one is never taken for damage or a torn tail.
func TestLogVerifyWhileAppending(t *testing.T) {
	l := openLog(t, t.TempDir(), 4000)
	mustAppend(t, l, testEvents(1, 4)...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 5; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := l.Append(testEvent(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for range 50 {
		before := l.LastIndex()
		rep, err := l.Verify()
		if err != nil || rep.Records < before || rep.TornBytes != 0 {
			t.Fatalf("got %+v, %v; want at least %d records, no error, no torn tail", rep, err, before)
		}
	}
}
