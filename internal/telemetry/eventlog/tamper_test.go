package eventlog_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
)

// tamperLog writes a closed log of 40 records in segments of about five.
func tamperLog(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	l, err := eventlog.Open(dir, eventlog.Options{SegmentBytes: 2000})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 40; i += 4 {
		if _, err := l.Append(testEvents(i, 4)...); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := eventlog.Verify(dir); err != nil {
		t.Fatalf("Verify before tampering: %v", err)
	}
	return dir
}

func TestVerifyCatchesTampering(t *testing.T) {
	// Record 12 is in the middle of a segment that is neither the first
	// nor the last.
	const target = 12
	tests := []struct {
		name      string
		tamper    func(t *testing.T, dir string)
		wantIndex uint64
		wantIn    string // in the reason
	}{
		{
			name: "flip a byte of an event",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, target)
				editFile(t, seg, func(b []byte) []byte { b[f.off+30] ^= 0x01; return b })
			},
			wantIndex: target, wantIn: "bad CRC",
		},
		{
			name: "flip a byte of an event and fix the CRC",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, target)
				editFile(t, seg, func(b []byte) []byte {
					b[f.off+30] ^= 0x01
					fixCRC(b, f.off)
					return b
				})
			},
			wantIndex: target, wantIn: "hash mismatch",
		},
		{
			// The forger rewrites the record's hash too; the next record
			// no longer chains to it.
			name: "edit an event and fix its hash and CRC",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, target)
				_, prev := findRecord(t, dir, target-1)
				prevSeg, _ := findRecord(t, dir, target-1)
				prevData, err := os.ReadFile(prevSeg)
				if err != nil {
					t.Fatal(err)
				}
				prevHash := append([]byte(nil), storedHash(prevData, prev.off)...)
				editFile(t, seg, func(b []byte) []byte {
					i := strings.Index(string(b[f.off:f.off+f.size]), "deny-admin")
					copy(b[f.off+int64(i):], "allow-all!")
					fixHash(b, f.off, prevHash)
					fixCRC(b, f.off)
					return b
				})
			},
			wantIndex: target + 1, wantIn: "hash mismatch",
		},
		{
			name: "change a record's index and fix the CRC",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, target)
				editFile(t, seg, func(b []byte) []byte {
					b[f.off+15]++
					fixCRC(b, f.off)
					return b
				})
			},
			wantIndex: target, wantIn: "found record 13 where record 12 belongs",
		},
		{
			name: "drop a record",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, target)
				editFile(t, seg, func(b []byte) []byte {
					return append(b[:f.off:f.off], b[f.off+f.size:]...)
				})
			},
			wantIndex: target, wantIn: "found record 13 where record 12 belongs",
		},
		{
			name: "swap two records",
			tamper: func(t *testing.T, dir string) {
				seg, a := findRecord(t, dir, target)
				seg2, b := findRecord(t, dir, target+1)
				if seg2 != seg {
					t.Fatalf("records %d and %d are in different segments", target, target+1)
				}
				editFile(t, seg, func(d []byte) []byte {
					out := append([]byte(nil), d[:a.off]...)
					out = append(out, d[b.off:b.off+b.size]...)
					out = append(out, d[a.off:a.off+a.size]...)
					return append(out, d[b.off+b.size:]...)
				})
			},
			wantIndex: target, wantIn: "found record 13 where record 12 belongs",
		},
		{
			name: "delete a middle segment",
			tamper: func(t *testing.T, dir string) {
				seg, _ := findRecord(t, dir, target)
				if err := os.Remove(seg); err != nil {
					t.Fatal(err)
				}
			},
			// The segment holding record 12 starts at record 11.
			wantIndex: 11, wantIn: "missing records 11 to 15",
		},
		{
			name: "copy a segment under a later name",
			tamper: func(t *testing.T, dir string) {
				data, err := os.ReadFile(filepath.Join(dir, "00000000000000000006.seg"))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "00000000000000000008.seg"), data, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantIndex: 11, wantIn: "segment starts at record 8, which the segment before it already holds",
		},
		{
			name: "rename a segment",
			tamper: func(t *testing.T, dir string) {
				if err := os.Rename(filepath.Join(dir, "00000000000000000011.seg"), filepath.Join(dir, "00000000000000000012.seg")); err != nil {
					t.Fatal(err)
				}
			},
			wantIndex: 11, wantIn: "missing records 11 to 11",
		},
		{
			name: "delete the first segment",
			tamper: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "00000000000000000001.seg")); err != nil {
					t.Fatal(err)
				}
			},
			wantIndex: 1, wantIn: "missing records 1 to",
		},
		{
			name: "truncate a middle segment in a record",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, target)
				if err := os.Truncate(seg, f.off+f.size/2); err != nil {
					t.Fatal(err)
				}
			},
			wantIndex: target, wantIn: "truncated frame",
		},
		{
			name: "truncate a middle segment between records",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, target)
				if err := os.Truncate(seg, f.off); err != nil {
					t.Fatal(err)
				}
			},
			wantIndex: target, wantIn: "missing records 12 to 15",
		},
		{
			name: "zero a middle segment's tail",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, target)
				editFile(t, seg, func(b []byte) []byte {
					clear(b[f.off:])
					return b
				})
			},
			wantIndex: target, wantIn: "bad frame length 0",
		},
		{
			name: "flip a byte in the last segment",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, 38)
				editFile(t, seg, func(b []byte) []byte { b[f.off+100] ^= 0x80; return b })
			},
			wantIndex: 38, wantIn: "bad CRC",
		},
		{
			name: "flip a byte in the last record",
			tamper: func(t *testing.T, dir string) {
				seg, f := findRecord(t, dir, 40)
				editFile(t, seg, func(b []byte) []byte { b[f.off+f.size-40] ^= 0x80; return b })
			},
			wantIndex: 40, wantIn: "bad CRC",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tamperLog(t)
			tt.tamper(t, dir)
			te := mustTamper(t, dir)
			if te.Index != tt.wantIndex || !strings.Contains(te.Reason, tt.wantIn) {
				t.Errorf("got %v, want record %d: ...%s...", te, tt.wantIndex, tt.wantIn)
			}
		})
	}
}

func TestTamperErrorNamesSegmentAndOffset(t *testing.T) {
	dir := tamperLog(t)
	seg, f := findRecord(t, dir, 12)
	editFile(t, seg, func(b []byte) []byte { b[f.off+30] ^= 0x01; return b })
	rep, err := eventlog.Verify(dir)
	var te *eventlog.TamperError
	if !errors.As(err, &te) {
		t.Fatalf("got %v, want a TamperError", err)
	}
	want := eventlog.TamperError{Index: 12, Segment: filepath.Base(seg), Offset: f.off, Reason: "bad CRC"}
	if *te != want {
		t.Errorf("got %+v, want %+v", *te, want)
	}
	if rep.Records != 11 {
		t.Errorf("report: got %d intact records, want 11", rep.Records)
	}
	if got, wantMsg := te.Error(), "record 12 (segment "+filepath.Base(seg)+", offset "; !strings.HasPrefix(got, wantMsg) {
		t.Errorf("message: got %q, want it to start with %q", got, wantMsg)
	}
}

func TestReadAndOpenRefuseDamage(t *testing.T) {
	dir := tamperLog(t)
	// Damage in a middle segment: Open works (it checks the last one) but
	// Read of the damaged record fails.
	seg, f := findRecord(t, dir, 12)
	editFile(t, seg, func(b []byte) []byte { b[f.off+30] ^= 0x01; return b })
	l := openLog(t, dir, 2000)
	if recs, err := l.Read(11, 1); err != nil || len(recs) != 1 {
		t.Fatalf("Read(11, 1): got %d records, %v", len(recs), err)
	}
	var te *eventlog.TamperError
	if _, err := l.Read(10, 5); !errors.As(err, &te) || te.Index != 12 {
		t.Errorf("Read over a damaged record: got %v, want a TamperError for record 12", err)
	}
	l.Close()

	// Damage in the last segment that is not a torn write: Open refuses.
	seg, f = findRecord(t, dir, 38)
	editFile(t, seg, func(b []byte) []byte { b[f.off+30] ^= 0x01; return b })
	if l, err := eventlog.Open(dir, eventlog.Options{SegmentBytes: 2000}); !errors.As(err, &te) || te.Index != 38 || !strings.Contains(err.Error(), "audit verify") {
		if l != nil {
			l.Close()
		}
		t.Errorf("Open of a damaged last segment: got %v, want a TamperError for record 38 that says to run audit verify", err)
	}
}

func TestTornTail(t *testing.T) {
	tests := []struct {
		name string
		// tear damages the last record (40) of the last segment as a crash
		// during its write would.
		tear func(t *testing.T, path string, f frameAt)
	}{
		{"cut in the payload", func(t *testing.T, path string, f frameAt) {
			if err := os.Truncate(path, f.off+f.size/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"cut in the header", func(t *testing.T, path string, f frameAt) {
			if err := os.Truncate(path, f.off+3); err != nil {
				t.Fatal(err)
			}
		}},
		{"size extended, data not written", func(t *testing.T, path string, f frameAt) {
			// The frame's first sector reached the disk; the rest reads
			// as zeros.
			editFile(t, path, func(b []byte) []byte {
				clear(b[(f.off/512+1)*512:])
				return b
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := eventlog.Open(dir, eventlog.Options{SegmentBytes: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 40; i += 4 {
				if _, err := l.Append(testEvents(i, 4)...); err != nil {
					t.Fatal(err)
				}
			}
			recs, err := l.Read(39, 1)
			if err != nil {
				t.Fatal(err)
			}
			hash39 := recs[0].Hash
			l.Close()
			path, f := findRecord(t, dir, 40)
			if (f.off/512+1)*512 >= f.off+f.size {
				t.Fatalf("record 40 does not span two sectors; pick another record")
			}
			tt.tear(t, path, f)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			torn := fi.Size() - f.off

			rep, err := eventlog.Verify(dir)
			if err != nil {
				t.Fatalf("Verify of a torn tail: %v, want it intact", err)
			}
			if rep.Records != 39 || rep.TornBytes != torn || rep.LastHash != hash39 {
				t.Errorf("Verify: got %+v, want 39 records ending in %x and %d torn bytes", rep, hash39, torn)
			}

			logger, logs := newLogger(t)
			l, err = eventlog.Open(dir, eventlog.Options{SegmentBytes: 1 << 20, Logger: logger})
			if err != nil {
				t.Fatalf("Open after a torn write: %v", err)
			}
			defer l.Close()
			if !strings.Contains(logs.String(), "torn") {
				t.Errorf("Open logged %q, want a warning about the torn record", logs.String())
			}
			if got := l.LastIndex(); got != 39 {
				t.Fatalf("LastIndex after recovery: got %d, want 39", got)
			}
			if fi, _ := os.Stat(path); fi.Size() != f.off {
				t.Errorf("segment size after recovery: got %d, want %d (only the torn frame dropped)", fi.Size(), f.off)
			}
			if got := mustAppend(t, l, testEvent(40)); got != 40 {
				t.Fatalf("append after recovery: got index %d, want 40", got)
			}
			recs, err = l.Read(1, 100)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, recs, 1, testEvents(1, 40))
			if rep, err := eventlog.Verify(dir); err != nil || rep.Records != 40 || rep.TornBytes != 0 {
				t.Errorf("Verify after recovery: got %+v, %v; want 40 intact records", rep, err)
			}
		})
	}
}

func TestTornFirstRecordOfSegment(t *testing.T) {
	// A crash while writing the first record of a new segment leaves a
	// segment with nothing but a torn frame: the chain continues from the
	// segment before it.
	dir := t.TempDir()
	l := openLog(t, dir, 2000)
	var last uint64
	for len(segments(t, dir)) < 3 {
		last = mustAppend(t, l, testEvent(int(last)+1))
	}
	l.Close()
	segs := segments(t, dir)
	path := segs[len(segs)-1]
	frames := parseFrames(t, path)
	if len(frames) != 1 || frames[0].index != last {
		t.Fatalf("last segment holds %v, want record %d alone", frames, last)
	}
	if err := os.Truncate(path, frames[0].size-10); err != nil {
		t.Fatal(err)
	}
	if rep, err := eventlog.Verify(dir); err != nil || rep.Records != last-1 {
		t.Fatalf("Verify: got %+v, %v; want %d records", rep, err, last-1)
	}
	l = openLog(t, dir, 2000)
	if got := l.LastIndex(); got != last-1 {
		t.Fatalf("LastIndex: got %d, want %d", got, last-1)
	}
	mustAppend(t, l, testEvents(int(last), 3)...)
	if rep, err := eventlog.Verify(dir); err != nil || rep.Records != last+2 {
		t.Fatalf("Verify after appending: got %+v, %v; want %d records", rep, err, last+2)
	}
}

func TestVerifyMissing(t *testing.T) {
	_, err := eventlog.Verify(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Verify of a missing dir: got %v, want fs.ErrNotExist", err)
	}
	_, err = eventlog.Verify(t.TempDir())
	var te *eventlog.TamperError
	if !errors.Is(err, fs.ErrNotExist) || errors.As(err, &te) || !strings.Contains(err.Error(), "no segment files") {
		t.Errorf("Verify of an empty dir: got %v, want a no segment files error wrapping fs.ErrNotExist", err)
	}
}

func TestSegmentNames(t *testing.T) {
	dir := tamperLog(t)
	// Other files are not the log's business.
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, err := eventlog.Verify(dir); err != nil || rep.Records != 40 {
		t.Fatalf("Verify with a stray file: got %+v, %v; want 40 records", rep, err)
	}
	l := openLog(t, dir, 2000)
	l.Close()
	// A .seg file that is not named after an index is an error.
	if err := os.WriteFile(filepath.Join(dir, "12.seg"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := eventlog.Verify(dir); err == nil || !strings.Contains(err.Error(), "12.seg: not a segment name") {
		t.Errorf("Verify with a badly named segment: got %v", err)
	}
	if l, err := eventlog.Open(dir, eventlog.Options{}); err == nil || !strings.Contains(err.Error(), "12.seg: not a segment name") {
		if l != nil {
			l.Close()
		}
		t.Errorf("Open with a badly named segment: got %v", err)
	}
}
