package eventlog

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DirName is the log's directory under a process's data dir.
const DirName = "events"

const (
	segmentExt = ".seg"
	// segmentNameLen is the length of a segment file name without the
	// extension: a uint64 in decimal, zero-padded.
	segmentNameLen = 20

	headerSize = 8 // length + crc
	indexSize  = 8 // in the payload, before the event
	hashSize   = sha256.Size
	minPayload = indexSize + hashSize
	// maxPayload bounds a frame so that a damaged length field cannot make
	// a reader allocate gigabytes. Events are far smaller: the proxy sends
	// them in gRPC messages of at most a few MiB.
	maxPayload = 16 << 20
	// MaxEventBytes is the largest encoded event Append accepts.
	MaxEventBytes = maxPayload - minPayload

	// sectorSize is the unit a torn write is detected in: a write that did
	// not reach the disk reads back as whole sectors of zeros.
	sectorSize = 512
	// minZeroRun is the shortest run of zeros (from a frame's start to the
	// end of its first sector) taken as a sector that was not written: the
	// first 16 bytes of a frame hold its CRC and index, never all zero,
	// while a shorter run may be the zero high bytes of the length.
	minZeroRun = headerSize + indexSize
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// frameSize is the size on disk of a frame holding an event of n bytes.
func frameSize(n int) int { return headerSize + indexSize + n + hashSize }

// chainer computes record hashes, reusing one digest.
type chainer struct{ h hash.Hash }

// next is the hash of the record with this index and event bytes
// following a record whose hash is prev.
func (c *chainer) next(prev *[hashSize]byte, index uint64, event []byte) [hashSize]byte {
	if c.h == nil {
		c.h = sha256.New()
	}
	c.h.Reset()
	c.h.Write(prev[:])
	var ib [indexSize]byte
	binary.BigEndian.PutUint64(ib[:], index)
	c.h.Write(ib[:])
	c.h.Write(event)
	var sum [hashSize]byte
	c.h.Sum(sum[:0])
	return sum
}

// appendFrame appends the frame of a record to buf.
func appendFrame(buf []byte, index uint64, event []byte, hash *[hashSize]byte) []byte {
	start := len(buf)
	payload := indexSize + len(event) + hashSize
	buf = binary.BigEndian.AppendUint32(buf, uint32(payload))
	buf = append(buf, 0, 0, 0, 0) // crc, set below
	buf = binary.BigEndian.AppendUint64(buf, index)
	buf = append(buf, event...)
	buf = append(buf, hash[:]...)
	crc := crc32.Update(crc32.Checksum(buf[start:start+4], crcTable), crcTable, buf[start+headerSize:])
	binary.BigEndian.PutUint32(buf[start+4:], crc)
	return buf
}

// segmentName is the file name of the segment whose first record has index
// first.
func segmentName(first uint64) string {
	return fmt.Sprintf("%0*d%s", segmentNameLen, first, segmentExt)
}

// segmentFile is a segment file found in a log directory.
type segmentFile struct {
	first uint64
	name  string
}

// listSegments returns the segment files in dir, by first index. Files
// without the segment extension are ignored; a .seg file whose name is not
// an index is an error.
func listSegments(dir string) ([]segmentFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segmentFile
	for _, e := range entries {
		name := e.Name()
		base, ok := strings.CutSuffix(name, segmentExt)
		if !ok || e.IsDir() {
			continue
		}
		first, err := strconv.ParseUint(base, 10, 64)
		if err != nil || len(base) != segmentNameLen || first == 0 {
			return nil, fmt.Errorf("%s: not a segment name (want %s)", filepath.Join(dir, name), segmentName(1))
		}
		segs = append(segs, segmentFile{first: first, name: name})
	}
	slices.SortFunc(segs, func(a, b segmentFile) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	return segs, nil
}

// frame is one decoded frame. event aliases the scanner's buffer and is
// valid until the next call to next.
type frame struct {
	off   int64
	index uint64
	event []byte
	hash  [hashSize]byte
	size  int64 // on disk, header included
}

// badFrame describes a frame that cannot be decoded.
type badFrame struct {
	off    int64
	reason string
	// torn is true when the damage looks like a write interrupted by a
	// crash: the frame runs past the end of the file, or holds a sector of
	// zeros.
	torn bool
}

func (b *badFrame) Error() string { return fmt.Sprintf("offset %d: %s", b.off, b.reason) }

// scanner reads the frames of a segment in order, up to end.
type scanner struct {
	f   *os.File
	r   *bufio.Reader
	off int64 // of the next frame
	end int64 // bytes past end are not read
	buf []byte
}

func newScanner(f *os.File, off, end int64) *scanner {
	s := &scanner{f: f, off: off, end: end}
	s.r = bufio.NewReaderSize(io.NewSectionReader(f, off, end-off), 128<<10)
	return s
}

// next decodes the frame at s.off. It returns io.EOF at the end of the
// segment, a *badFrame for a damaged frame, or an I/O error.
func (s *scanner) next() (frame, error) {
	fr := frame{off: s.off}
	if s.off == s.end {
		return fr, io.EOF
	}
	var hdr [headerSize]byte
	if n, err := io.ReadFull(s.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return fr, &badFrame{off: s.off, reason: fmt.Sprintf("truncated frame: %d of %d header bytes", n, headerSize), torn: true}
		}
		return fr, err
	}
	length := int64(binary.BigEndian.Uint32(hdr[:4]))
	if length < minPayload || length > maxPayload {
		return fr, s.bad(fmt.Sprintf("bad frame length %d", length), s.end)
	}
	frameEnd := s.off + headerSize + length
	if frameEnd > s.end {
		return fr, &badFrame{off: s.off, reason: fmt.Sprintf("truncated frame: %d of %d bytes", s.end-s.off, headerSize+length), torn: true}
	}
	if int64(cap(s.buf)) < length {
		s.buf = make([]byte, length)
	}
	p := s.buf[:length]
	if _, err := io.ReadFull(s.r, p); err != nil {
		return fr, err
	}
	crc := crc32.Update(crc32.Checksum(hdr[:4], crcTable), crcTable, p)
	if crc != binary.BigEndian.Uint32(hdr[4:]) {
		return fr, s.bad("bad CRC", frameEnd)
	}
	fr.index = binary.BigEndian.Uint64(p[:indexSize])
	fr.event = p[indexSize : length-hashSize]
	copy(fr.hash[:], p[length-hashSize:])
	fr.size = headerSize + length
	s.off = frameEnd
	return fr, nil
}

// bad describes the damaged but complete frame at s.off, which ends at
// frameEnd (the end of the segment when its length is wrong). It is torn
// when it holds a sector that was never written.
func (s *scanner) bad(reason string, frameEnd int64) error {
	return &badFrame{off: s.off, reason: reason, torn: s.zeroSector(s.off, frameEnd)}
}

// zeroSector reports whether a sector of the file that overlaps the frame
// [from, to) reads as zeros from from (or its start) to its end or the end
// of the segment.
func (s *scanner) zeroSector(from, to int64) bool {
	buf := make([]byte, sectorSize)
	for start := from; start < to; start = (start/sectorSize + 1) * sectorSize {
		stop := min((start/sectorSize+1)*sectorSize, s.end)
		if stop-start < minZeroRun {
			continue
		}
		b := buf[:stop-start]
		if _, err := s.f.ReadAt(b, start); err != nil {
			return false
		}
		if !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) {
			return true
		}
	}
	return false
}
