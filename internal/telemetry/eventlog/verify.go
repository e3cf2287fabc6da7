package eventlog

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
)

// Report is what Verify found.
type Report struct {
	// Records is the number of intact records: all of them when Verify
	// returns nil, those before the first bad one otherwise.
	Records uint64
	// Segments is the number of segment files.
	Segments int
	// LastHash is the hash of the last intact record (zero when none).
	LastHash [32]byte
	// TornBytes is the size of a torn tail at the end of the last segment:
	// a record whose write a crash interrupted, never acknowledged, which
	// the next Open drops. It is not tampering.
	TornBytes int64
}

// LastHashHex is LastHash in lowercase hex.
func (r Report) LastHashHex() string { return hex.EncodeToString(r.LastHash[:]) }

// TamperError names the first record of a log that is not as written.
// Records after it cannot be trusted either.
type TamperError struct {
	// Index is the index the bad record should have.
	Index uint64
	// Segment is the segment file's name, without the directory.
	Segment string
	// Offset is the record's byte offset in the segment.
	Offset int64
	// Reason says what is wrong.
	Reason string
}

func (e *TamperError) Error() string {
	return fmt.Sprintf("record %d (segment %s, offset %d): %s", e.Index, e.Segment, e.Offset, e.Reason)
}

func indexReason(got, want uint64) string {
	return fmt.Sprintf("found record %d where record %d belongs: records were dropped, duplicated or reordered", got, want)
}

// Verify reads every segment of the log in dir and recomputes the hash
// chain from record 1. It returns nil only if the log is intact (a torn
// tail, see Report.TornBytes, is not damage); otherwise a *TamperError
// naming the first bad record, or another error when the log cannot be
// read (one wrapping fs.ErrNotExist when dir does not exist or holds no
// segment). Verify takes
// no lock: it may run while a collector appends, and then checks the
// records durable when it reaches them.
func Verify(dir string) (Report, error) { return verify(dir, unbounded) }

// Verify checks the open log as the package's Verify does, through the
// records durable when it is called (LastIndex); records appended meanwhile
// are not read. Knowing where the log ends, it also reports records cut off
// its end (missing files or a shortened last segment) as a *TamperError,
// and there is no torn tail to tolerate. It is safe to call while appends
// go on; it reads the files, so it takes as long as reading the whole log.
func (l *Log) Verify() (Report, error) { return verify(l.dir, l.LastIndex()) }

// unbounded is verify's through for a log whose end is not known.
const unbounded = math.MaxUint64

// verify checks the records of the log in dir up to index through, or all
// of them when through is unbounded.
func verify(dir string, through uint64) (Report, error) {
	var rep Report
	if _, err := os.Stat(dir); err != nil {
		return rep, fmt.Errorf("eventlog: verify: %w", err)
	}
	files, err := listSegments(dir)
	if err != nil {
		return rep, fmt.Errorf("eventlog: verify: %w", err)
	}
	if len(files) == 0 {
		return rep, fmt.Errorf("eventlog: verify %s: no segment files (%s, ...): %w", dir, segmentName(1), fs.ErrNotExist)
	}
	rep.Segments = len(files)
	next := uint64(1)
	for i, sf := range files {
		if next > through {
			break
		}
		if sf.first != next {
			reason := fmt.Sprintf("missing records %d to %d: no segment holds them (was %s deleted?)", next, sf.first-1, segmentName(next))
			if sf.first < next {
				reason = fmt.Sprintf("segment starts at record %d, which the segment before it already holds", sf.first)
			}
			return rep, &TamperError{Index: next, Segment: sf.name, Offset: 0, Reason: reason}
		}
		if err := verifySegment(dir, sf, i == len(files)-1, through, &next, &rep); err != nil {
			return rep, err
		}
	}
	if through != unbounded && next <= through {
		last := files[len(files)-1]
		var end int64
		if fi, err := os.Stat(filepath.Join(dir, last.name)); err == nil {
			end = fi.Size()
		}
		return rep, &TamperError{Index: next, Segment: last.name, Offset: end,
			Reason: fmt.Sprintf("the log ends after record %d, but records up to %d were written: records were cut off its end", next-1, through)}
	}
	return rep, nil
}

// verifySegment checks the records of one segment up to index through,
// continuing the chain in rep from record next.
func verifySegment(dir string, sf segmentFile, last bool, through uint64, next *uint64, rep *Report) error {
	f, err := os.Open(filepath.Join(dir, sf.name))
	if err != nil {
		return fmt.Errorf("eventlog: verify: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("eventlog: verify: %w", err)
	}
	sc := newScanner(f, 0, fi.Size())
	var chain chainer
	for *next <= through {
		fr, err := sc.next()
		if err == io.EOF {
			return nil
		}
		var bad *badFrame
		if errors.As(err, &bad) {
			// Below a known end every record is durable: nothing is torn.
			if last && bad.torn && through == unbounded {
				rep.TornBytes = fi.Size() - bad.off
				return nil
			}
			return &TamperError{Index: *next, Segment: sf.name, Offset: bad.off, Reason: bad.reason}
		}
		if err != nil {
			return fmt.Errorf("eventlog: verify: read %s: %w", sf.name, err)
		}
		if fr.index != *next {
			return &TamperError{Index: *next, Segment: sf.name, Offset: fr.off, Reason: indexReason(fr.index, *next)}
		}
		if chain.next(&rep.LastHash, fr.index, fr.event) != fr.hash {
			return &TamperError{Index: *next, Segment: sf.name, Offset: fr.off,
				Reason: "hash mismatch: the record was changed, or the hash of the record before it was"}
		}
		rep.LastHash = fr.hash
		rep.Records++
		*next++
	}
	return nil
}
