package eventlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry"
)

// Read returns up to max durable records with Index >= from, in order
// (from 0 reads from the start). It checks each record's CRC and index and
// returns a *TamperError for a damaged one; it does not check the hash
// chain (Verify does). The records and their events belong to the caller.
func (l *Log) Read(from uint64, max int) ([]telemetry.Record, error) {
	if from == 0 {
		from = 1
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	last := l.last.Load()
	if max <= 0 || from > last {
		l.mu.Unlock()
		return nil, nil
	}
	limit := last
	if uint64(max)-1 < last-from {
		limit = from + uint64(max) - 1
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].first > from }) - 1
	type view struct {
		seg *segment
		end int64
	}
	var views []view
	for _, s := range l.segs[i:] {
		if s.first > limit {
			break
		}
		views = append(views, view{s, s.end})
	}
	l.mu.Unlock()

	recs := make([]telemetry.Record, 0, limit-from+1)
	next := from
	for j, v := range views {
		var (
			end int64
			err error
		)
		if recs, end, err = v.seg.read(next, limit, v.end, recs); err != nil {
			return nil, err
		}
		next = from + uint64(len(recs))
		if next > limit {
			break
		}
		// The segment ended early: the next one must start where it did.
		if j+1 == len(views) || views[j+1].seg.first != next {
			return nil, &TamperError{Index: next, Segment: filepath.Base(v.seg.path), Offset: end,
				Reason: fmt.Sprintf("segment ends before record %d and no segment starts with it", next)}
		}
	}
	return recs, nil
}

// read appends the records from..limit held by the segment (which ends at
// end, or at its file size if end < 0) to recs. It also returns the end.
func (s *segment) read(from, limit uint64, end int64, recs []telemetry.Record) (_ []telemetry.Record, _ int64, err error) {
	f, err := os.Open(s.path)
	if err != nil {
		return recs, end, fmt.Errorf("eventlog: read: %w", err)
	}
	defer f.Close()
	if end < 0 {
		fi, err := f.Stat()
		if err != nil {
			return recs, end, fmt.Errorf("eventlog: read: %w", err)
		}
		end = fi.Size()
	}
	start, err := s.locate(f, from)
	if err != nil {
		return recs, end, err
	}
	name := filepath.Base(s.path)
	sc := newScanner(f, start.off, end)
	for want := start.index; want <= limit; want++ {
		fr, err := sc.next()
		if err == io.EOF {
			break
		}
		var bad *badFrame
		if errors.As(err, &bad) {
			return recs, end, &TamperError{Index: want, Segment: name, Offset: bad.off, Reason: bad.reason}
		}
		if err != nil {
			return recs, end, fmt.Errorf("eventlog: read %s: %w", s.path, err)
		}
		if fr.index != want {
			return recs, end, &TamperError{Index: want, Segment: name, Offset: fr.off, Reason: indexReason(fr.index, want)}
		}
		if want < from {
			continue
		}
		ev := new(pb.Event)
		if err := proto.Unmarshal(fr.event, ev); err != nil {
			return recs, end, &TamperError{Index: want, Segment: name, Offset: fr.off, Reason: fmt.Sprintf("event does not decode: %v", err)}
		}
		recs = append(recs, telemetry.Record{Index: fr.index, Event: ev, Hash: fr.hash})
	}
	return recs, end, nil
}

// locate returns the sparse entry at or before index, building the sparse
// index of a segment Open did not scan on first use.
func (s *segment) locate(f *os.File, index uint64) (sparseEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.built {
		// Damage stops the scan: the records before it stay readable, and
		// reading the damaged one reports it.
		st, err := scanSegment(f, segmentFile{first: s.first, name: filepath.Base(s.path)}, false)
		var te *TamperError
		if err != nil && !errors.As(err, &te) {
			return sparseEntry{}, fmt.Errorf("eventlog: read: %w", err)
		}
		s.sparse, s.built = st.sparse, true
	}
	i := sort.Search(len(s.sparse), func(i int) bool { return s.sparse[i].index > index }) - 1
	if i < 0 {
		return sparseEntry{s.first, 0}, nil
	}
	return s.sparse[i], nil
}
