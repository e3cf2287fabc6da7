// Package eventlog is the collector's durable event log: append-only,
// split into segment files, every record hash-chained to the one before it
// so that editing, dropping or reordering records is detectable by Verify.
//
// Only the collector opens a Log (it implements telemetry.Appender and
// telemetry.LogReader); sinks read it through telemetry.LogReader, and the
// CLI calls Verify. A directory holds one log, used by one process at a time.
//
// # Layout
//
// The log lives in one directory (DirName under a process's data dir). Each
// segment file is named after the index of its first record, zero-padded to
// 20 digits: 00000000000000000001.seg, 00000000000000004097.seg, ... A new
// segment starts when the current one would grow past Options.SegmentBytes.
//
// A segment is a sequence of frames, all integers big-endian:
//
//	length  uint32    payload length
//	crc     uint32    CRC-32C (Castagnoli) of the length field and the payload
//	payload index uint64 | event | hash [32]byte
//
// where event is the deterministic protobuf encoding of the pb.Event and
//
//	hash = SHA-256(previous record's hash || index || event)
//
// The previous hash of record 1 is 32 zero bytes. Indexes start at 1 and
// grow by one across segments.
//
// # Crash recovery and tampering
//
// Append returns only after the records are fsynced. A crash during a write
// can leave a torn final frame in the last segment: cut short by the end of
// the file, or holding a 512-byte sector that is all zeros (a sector that
// never reached the disk). Open truncates such a tail with a warning, and
// Verify reports its size in Report.TornBytes rather than as tampering: it
// was never acknowledged. Any other damage (a bad CRC, a hash that does not
// chain, an index out of sequence, a truncated frame before the last
// segment, a missing segment) is reported by Verify as a *TamperError naming
// the first bad record, and makes Open fail rather than append to a damaged
// log.
//
// The chain proves that the records up to the last one are as written. It
// cannot prove that records were not cut off the end: compare LastIndex and
// the last hash with a copy held elsewhere (the SIEM) for that.
//
// It must not depend on the collector, the sinks, the roles or the store:
// it is a file format.
package eventlog
