package telemetry

import (
	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// Record is one entry of the collector's durable event log.
type Record struct {
	// Index is the record's position in the log, from 1, without gaps.
	Index uint64
	// Event is the stored event. Readers must not modify it.
	Event *pb.Event
	// Hash chains the record to the previous one: SHA-256 over the previous
	// record's Hash, the index and the event's deterministic encoding.
	Hash [32]byte
}

// LogReader is what sinks read from. Implementations are safe for
// concurrent use.
type LogReader interface {
	// Read returns up to max records with Index >= from, in order; fewer
	// (or none) when the log ends sooner.
	Read(from uint64, max int) ([]Record, error)
	// LastIndex is the index of the newest durable record (0 when empty).
	LastIndex() uint64
	// Wait returns a channel that is closed once a record with Index >
	// after is durable (at once if one already is).
	Wait(after uint64) <-chan struct{}
}

// Appender is what the collector writes to. Append makes every event durable
// (fsync) before it returns, numbering them consecutively; it returns the
// index of the last one.
type Appender interface {
	Append(events ...*pb.Event) (last uint64, err error)
}
