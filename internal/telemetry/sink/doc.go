// Package sink delivers the collector's event log to SIEMs, at least once.
//
// A Sink is one destination, made from an --audit-sink URL by Parse:
//
//	syslog+tcp://HOST:PORT   RFC 5424 over TCP, RFC 6587 octet counting
//	syslog+tls://HOST:PORT   the same over TLS (RFC 5425); query parameters
//	                         ca=CA.pem (roots to trust; default: the system's),
//	                         servername=NAME (default: HOST),
//	                         cert=CERT.pem&key=KEY.pem (client certificate),
//	                         facility=NAME (both syslog forms; default authpriv)
//	file:///ABS/PATH.jsonl   JSON lines, appended and fsynced per batch
//	http(s)://...            batched JSON POST of {"events":[...]}
//
// A Deliverer feeds one Sink from a telemetry.LogReader. It keeps a cursor
// (the index of the last record the sink confirmed) in a file of its own,
// sends batches in log order, retries a failed batch with backoff until it
// is confirmed, and only then moves the cursor. Only the collector's wiring
// imports this package.
//
// # At least once
//
// The cursor is written (atomically, fsynced) after the sink confirmed a
// batch, so a crash between the two sends that batch again after a
// restart, and a batch whose confirmation was lost (a timeout, a dropped
// connection) is sent again too: a destination may see a record twice, and
// sees it at least once as far as its protocol lets the sender know (see
// below). Each record carries its log index (index in JSON, index in
// the syslog structured data); consumers that want exactly once drop
// indexes they have already seen.
//
// What "confirmed" means depends on the protocol:
//   - file: the lines are written and fsynced.
//   - http(s): the server answered 2xx. Any other answer, redirects
//     included, is a failure and the batch is retried.
//   - syslog: plain syslog has no acknowledgement. A batch counts as
//     delivered once the server's TCP stack has acknowledged every byte and
//     the connection is still open Options.SyslogSettle later; a server that
//     closes or resets the connection meanwhile (a restart, a refused client
//     certificate) makes the batch fail. Before each batch the connection's
//     TCP state is checked and the sink re-dials if the server went away.
//     A server that closes a connection with data unread makes its TCP
//     stack reset it; when the sink sees a reset, it also sends the batch it
//     last confirmed on that connection again, in case the server had
//     stopped reading before it. So a server restart duplicates at most
//     two batches. What remains possible: a server that stops reading and
//     stays open long enough for two batches to be confirmed, or crashes
//     after reading a batch but before storing it, loses that batch; so
//     does a collector restart that coincides with either. No plain-syslog
//     client can do better; the file and HTTP sinks have no such gap.
//
// # JSON form
//
// The file and HTTP sinks write each record as one flat JSON object with
// every field always present, named as in telemetry.proto's Event, plus the
// log index:
//
//	{"index":42,"seq":7,"time":"2026-01-02T03:04:05.123456789Z",
//	 "kind":"authz.deny","reporter":"spiffe://td/ns/shop/sa/web",
//	 "instance":"3f9c0a1b2c3d4e5f", ...,
//	 "response_code":403,"decision":"deny","policy":"shop/deny-admin",
//	 "rule":0,"reason":"...","trace_id":"","duration_micros":0,
//	 "attributes":{}}
//
// Numbers are JSON numbers (not the strings protojson uses for 64-bit
// integers), time is RFC 3339 in UTC with nanoseconds (null when unset), and
// attributes is an object with keys sorted.
//
// # Syslog form
//
// Each record is one RFC 5424 message:
//
//	<PRI>1 TIMESTAMP HOSTNAME trellis - KIND [trellis@32473 index="42" seq="7" kind="authz.deny" ...][trellis-attr@32473 key="value"] TEXT
//
// PRI is facility*8+severity: severity warning (4) for denials and audit-mode
// would-deny events, notice (5) otherwise. The trellis@32473 element carries
// index, seq and kind always, and the other Event fields (by their proto
// names) when set; rule is present when policy is. Attributes go in a second
// element, trellis-attr@32473, with names cut to what RFC 5424 allows. 32473
// is the enterprise number RFC 5612 reserves for documentation. Values are
// escaped as RFC 5424 requires (backslash before '"', '\' and ']'), and long
// values are shortened so that a message fits in Options.SyslogMaxMessage
// (the log and the other sinks keep them whole). TEXT is a one-line summary
// for people.
package sink
