package emitter

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/atomicfile"
)

// Spool layout: SpoolDir holds
//
//	lock                    flock(2)ed while an Emitter owns the dir
//	state.json              instance, sequence reservation, acked mark
//	<first seq, 20 digits>.seg
//
// A segment is a run of records with growing seq; no segment's seq range
// overlaps another's, so reading segments in name order reads events in
// seq order. A record is
//
//	length  uint32 LE   (of the payload)
//	crc     uint32 LE   CRC-32C over seq and payload
//	seq     uint64 LE
//	payload             the deterministic-free proto encoding of the Event
//
// A torn or corrupt tail (a crash mid-write) is cut off when the spool is
// opened. A segment is deleted once every seq in it is acknowledged.
const (
	stateFileName = "state.json"
	lockFileName  = "lock"
	segmentExt    = ".seg"
	recordHeader  = 16
	maxRecord     = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// spoolState is state.json.
type spoolState struct {
	Version  int    `json:"version"`
	Instance string `json:"instance"`
	// SeqReserved is above every seq handed out: a restart continues from
	// it, so a crash can skip numbers but never reuse one.
	SeqReserved uint64 `json:"seq_reserved"`
	// Acked is the highest seq the collector acknowledged (possibly stale:
	// a restart then resends a little, which the collector drops).
	Acked uint64 `json:"acked"`
}

type segment struct {
	path        string
	first, last uint64
	records     int
	size        int64
}

// spool is the on-disk FIFO between the memory queue and the sender. Not
// safe for concurrent use (the Emitter serializes it with spoolMu).
type spool struct {
	dir    string
	limit  int64
	segMax int64
	log    *slog.Logger
	lock   *os.File

	segs   []*segment
	size   int64 // bytes in segs
	unread int   // records in segs not yet read

	// The reader is in segs[rseg], past rread records (roff bytes).
	rseg     int
	rread    int
	roff     int64
	rfile    *os.File
	rbuf     *bufio.Reader
	lastRead uint64

	// wfile appends to the last segment; nil means the next write starts
	// a new segment.
	wfile *os.File

	buf []byte
}

// openSpool locks dir (creating it), reads its state and indexes its
// segments, cutting off torn tails and deleting acknowledged segments.
func openSpool(dir string, limit int64, log *slog.Logger) (*spool, spoolState, error) {
	var st spoolState
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, st, fmt.Errorf("spool: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, st, err
	}
	s := &spool{dir: dir, limit: limit, segMax: min(max(limit/8, 64<<10), 8<<20), log: log, lock: lock}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	data, err := os.ReadFile(filepath.Join(dir, stateFileName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, st, fmt.Errorf("spool: %w", err)
	default:
		if err := json.Unmarshal(data, &st); err != nil || st.Version != 1 {
			return nil, st, fmt.Errorf("spool state %s is corrupt (%v): move the spool dir away to start a new one; its unsent events are then lost", filepath.Join(dir, stateFileName), err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, st, fmt.Errorf("spool: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "."+stateFileName+".tmp") {
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		if !strings.HasSuffix(name, segmentExt) {
			continue
		}
		if _, err := strconv.ParseUint(strings.TrimSuffix(name, segmentExt), 10, 64); err != nil {
			continue
		}
		seg, err := s.scan(filepath.Join(dir, name))
		if err != nil {
			return nil, st, err
		}
		if seg == nil {
			continue
		}
		if seg.last <= st.Acked {
			if err := os.Remove(seg.path); err != nil {
				return nil, st, fmt.Errorf("spool: %w", err)
			}
			continue
		}
		s.segs = append(s.segs, seg)
		s.size += seg.size
		s.unread += seg.records
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].first < s.segs[j].first })
	ok = true
	return s, st, nil
}

// scan indexes one segment, truncating it after its last good record; an
// empty segment is removed and nil returned.
func (s *spool) scan(path string) (*segment, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	seg := &segment{path: path}
	r := bufio.NewReaderSize(f, 64<<10)
	var payload []byte
	var bad error
	for {
		seq, p, n, err := readRecord(r, payload)
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil && seq <= seg.last {
			err = fmt.Errorf("seq %d after %d", seq, seg.last)
		}
		if err != nil {
			bad = err
			break
		}
		payload = p
		if seg.records == 0 {
			seg.first = seq
		}
		seg.last = seq
		seg.records++
		seg.size += n
	}
	if bad != nil {
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.log.Warn("spool segment has a torn or corrupt tail (a crash while writing); cutting it off", "segment", path, "kept_records", seg.records, "cut_bytes", fi.Size()-seg.size, "err", bad)
		if err := f.Truncate(seg.size); err != nil {
			return nil, fmt.Errorf("spool: cut %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("spool: cut %s: %w", path, err)
		}
	}
	if seg.records == 0 {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		return nil, nil
	}
	return seg, nil
}

// readRecord reads one record into buf (grown as needed) and returns its
// seq, payload and size on disk. A clean end of input is io.EOF.
func readRecord(r *bufio.Reader, buf []byte) (seq uint64, payload []byte, n int64, err error) {
	var h [recordHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, buf, 0, io.EOF
		}
		return 0, buf, 0, fmt.Errorf("short record header: %w", err)
	}
	length := binary.LittleEndian.Uint32(h[0:4])
	sum := binary.LittleEndian.Uint32(h[4:8])
	seq = binary.LittleEndian.Uint64(h[8:16])
	if length > maxRecord {
		return 0, buf, 0, fmt.Errorf("record length %d is too large", length)
	}
	if cap(buf) < int(length) {
		buf = make([]byte, length)
	}
	buf = buf[:length]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, buf, 0, fmt.Errorf("short record: %w", err)
	}
	crc := crc32.Update(crc32.Checksum(h[8:16], castagnoli), castagnoli, buf)
	if crc != sum {
		return 0, buf, 0, errors.New("record checksum mismatch")
	}
	if seq == 0 {
		return 0, buf, 0, errors.New("record with seq 0")
	}
	return seq, buf, recordHeader + int64(length), nil
}

func appendRecord(dst []byte, ev *pb.Event) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, recordHeader)...)
	dst, err := proto.MarshalOptions{}.MarshalAppend(dst, ev)
	if err != nil {
		return dst[:start], err
	}
	payload := dst[start+recordHeader:]
	if len(payload) > maxRecord {
		return dst[:start], fmt.Errorf("event of %d bytes is larger than the %d allowed", len(payload), maxRecord)
	}
	h := dst[start : start+recordHeader]
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[8:16], ev.GetSeq())
	binary.LittleEndian.PutUint32(h[4:8], crc32.Update(crc32.Checksum(h[8:16], castagnoli), castagnoli, payload))
	return dst, nil
}

// lastSeq is the highest seq in the spool (0 when empty).
func (s *spool) lastSeq() uint64 {
	if len(s.segs) == 0 {
		return 0
	}
	return s.segs[len(s.segs)-1].last
}

// nextUnread is a lower bound of the seq the reader returns next; ok is
// false when nothing is unread.
func (s *spool) nextUnread() (seq uint64, ok bool) {
	if s.unread == 0 {
		return 0, false
	}
	seq = s.lastRead + 1
	if s.rseg < len(s.segs) && s.rread == 0 {
		seq = max(seq, s.segs[s.rseg].first)
	}
	return seq, true
}

// append writes events (in seq order, all above lastSeq) to the end of the
// spool as far as the size limit allows, with one fsync. consumed is how
// many events from the front it handled: written, or dropped because they
// do not encode (bad).
func (s *spool) append(events []*pb.Event) (consumed, bad int, err error) {
	if len(events) == 0 {
		return 0, 0, nil
	}
	// Events the sender took straight from memory may lie between the last
	// segment and these: once the reader has caught up, start a new
	// segment so no segment's range contains seqs of another.
	if s.unread == 0 || (s.wfile != nil && s.segs[len(s.segs)-1].size >= s.segMax) {
		s.closeWriter()
	}
	buf, first, last, written, consumed, bad := s.encode(s.buf[:0], events)
	s.buf = buf[:0]
	if written == 0 {
		return consumed, bad, nil
	}
	created := false
	if s.wfile == nil {
		f, err := os.OpenFile(filepath.Join(s.dir, segmentName(first)), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return 0, 0, fmt.Errorf("spool: %w", err)
		}
		s.wfile = f
		s.segs = append(s.segs, &segment{path: f.Name(), first: first})
		created = true
	}
	seg := s.segs[len(s.segs)-1]
	_, err = s.wfile.Write(buf)
	if err == nil {
		err = s.wfile.Sync()
	}
	if err != nil {
		// Leave the segment as it was so the index stays true.
		_ = s.wfile.Truncate(seg.size)
		if created {
			s.segs = s.segs[:len(s.segs)-1]
			s.closeWriter()
			_ = os.Remove(seg.path)
		}
		return 0, 0, fmt.Errorf("spool: write %s: %w", seg.path, err)
	}
	if created {
		if err := atomicfile.SyncDir(s.dir); err != nil {
			s.log.Warn("spool: cannot sync the spool dir; a power loss may lose the new segment", "err", err)
		}
	}
	seg.last = last
	seg.records += written
	seg.size += int64(len(buf))
	s.size += int64(len(buf))
	s.unread += written
	return consumed, bad, nil
}

// encode appends the records of events to buf while they fit in the size
// limit, skipping (and logging) events that do not encode.
func (s *spool) encode(buf []byte, events []*pb.Event) (out []byte, first, last uint64, written, consumed, bad int) {
	for _, ev := range events {
		before := len(buf)
		var err error
		buf, err = appendRecord(buf, ev)
		if err != nil {
			bad++
			consumed++
			s.log.Error("cannot spool event; dropping it", "seq", ev.GetSeq(), "kind", ev.GetKind(), "err", err)
			continue
		}
		if s.size+int64(len(buf)) > s.limit {
			buf = buf[:before]
			break
		}
		if first == 0 {
			first = ev.GetSeq()
		}
		last = ev.GetSeq()
		written++
		consumed++
	}
	return buf, first, last, written, consumed, bad
}

// writeAside writes events (in seq order) to a segment of their own
// without touching the reader or writer: used on close for events that
// were only in memory, whose seqs may lie below the spool's. It returns
// how many it wrote; the others did not fit or did not encode.
func (s *spool) writeAside(events []*pb.Event) (int, error) {
	buf, first, _, written, _, _ := s.encode(nil, events)
	if written == 0 {
		return 0, nil
	}
	path := filepath.Join(s.dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	_, err = f.Write(buf)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return 0, fmt.Errorf("spool: write %s: %w", path, err)
	}
	s.size += int64(len(buf))
	return written, atomicfile.SyncDir(s.dir)
}

// read returns up to max unread events with seq above acked, in order.
// Records that cannot be read any more (the file was damaged after it was
// written) are skipped and counted in lost.
func (s *spool) read(max int, acked uint64) (evs []*pb.Event, lost int) {
	for len(evs) < max && s.unread > 0 {
		seg := s.segs[s.rseg]
		if s.rread == seg.records {
			s.closeReader()
			s.rseg++
			continue
		}
		if s.rfile == nil {
			f, err := os.Open(seg.path)
			if err == nil {
				_, err = f.Seek(s.roff, io.SeekStart)
			}
			if err != nil {
				lost += s.skipSegment(seg, err)
				continue
			}
			s.rfile, s.rbuf = f, bufio.NewReaderSize(f, 64<<10)
		}
		seq, payload, n, err := readRecord(s.rbuf, s.buf)
		if err != nil {
			lost += s.skipSegment(seg, err)
			continue
		}
		s.buf = payload[:0]
		s.roff += n
		s.rread++
		s.unread--
		if seq <= acked || seq <= s.lastRead {
			continue
		}
		ev := new(pb.Event)
		if err := proto.Unmarshal(payload, ev); err != nil || ev.GetSeq() != seq {
			lost++
			s.log.Error("spooled event does not decode; dropping it", "segment", seg.path, "seq", seq, "err", err)
			continue
		}
		s.lastRead = seq
		evs = append(evs, ev)
	}
	return evs, lost
}

// skipSegment gives up on the rest of seg after a read error.
func (s *spool) skipSegment(seg *segment, err error) int {
	lost := seg.records - s.rread
	s.log.Error("spool segment became unreadable; dropping its unread events", "segment", seg.path, "events", lost, "err", err)
	s.unread -= lost
	s.rread = seg.records
	return lost
}

// compact deletes the segments whose every event is acknowledged and says
// whether it deleted any.
func (s *spool) compact(acked uint64) (removed bool) {
	for len(s.segs) > 0 && s.segs[0].last <= acked {
		seg := s.segs[0]
		if len(s.segs) == 1 {
			s.closeWriter()
		}
		if s.rseg == 0 {
			s.unread -= seg.records - s.rread
			s.closeReader()
		} else {
			s.rseg--
		}
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("spool: cannot delete an acknowledged segment", "segment", seg.path, "err", err)
		}
		s.size -= seg.size
		s.segs = s.segs[1:]
		removed = true
	}
	return removed
}

func (s *spool) saveState(st spoolState) error {
	st.Version = 1
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("spool state: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(s.dir, stateFileName), data, 0o600)
}

func (s *spool) closeReader() {
	if s.rfile != nil {
		s.rfile.Close()
	}
	s.rfile, s.rbuf, s.rread, s.roff = nil, nil, 0, 0
}

func (s *spool) closeWriter() {
	if s.wfile != nil {
		s.wfile.Close()
		s.wfile = nil
	}
}

// close releases files and the dir lock.
func (s *spool) close() {
	s.closeReader()
	s.closeWriter()
	if s.lock != nil {
		unlockDir(s.lock)
		s.lock = nil
	}
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segmentExt) }
