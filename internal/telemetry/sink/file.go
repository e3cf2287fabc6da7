package sink

import (
	"context"
	"fmt"
	"os"

	"github.com/trellismesh/trellis/internal/telemetry"
)

// fileSink appends JSON lines to a file and fsyncs each batch.
type fileSink struct {
	path string
	f    *os.File
	buf  []byte
}

func (s *fileSink) String() string { return "file://" + s.path }

func (s *fileSink) Send(ctx context.Context, recs []telemetry.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.open(); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	for _, r := range recs {
		s.buf = appendJSON(s.buf, r)
		s.buf = append(s.buf, '\n')
	}
	if _, err := s.f.Write(s.buf); err != nil {
		s.Close()
		return fmt.Errorf("file sink: write %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		s.Close()
		return fmt.Errorf("file sink: fsync %s: %w", s.path, err)
	}
	return nil
}

// open opens the file unless the open one is still the file at path: after
// logrotate moved or removed it, the next batch goes to a new file.
func (s *fileSink) open() error {
	if s.f != nil {
		cur, err1 := os.Stat(s.path)
		open, err2 := s.f.Stat()
		if err1 == nil && err2 == nil && os.SameFile(cur, open) {
			return nil
		}
		s.Close()
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if err := endPartialLine(f); err != nil {
		f.Close()
		return fmt.Errorf("file sink: %s: %w", s.path, err)
	}
	s.f = f
	return nil
}

// endPartialLine ends f with a newline if it does not end with one. A
// line without one can only be cut short by a crash while writing a batch,
// which was not confirmed and will be written again whole: the new lines
// must not be glued to it. The fragment itself stays (this sink never
// deletes what it wrote); readers skip a line that is not valid JSON.
func endPartialLine(f *os.File) error {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return err
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, fi.Size()-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	if _, err := f.Write([]byte{'\n'}); err != nil {
		return err
	}
	return f.Sync()
}

func (s *fileSink) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
