// Package etcd implements store.Store on an etcd v3 cluster
// (go.etcd.io/etcd/client/v3), so that the control plane's state survives
// the loss of a machine. Open connects (with client TLS when configured);
// Close releases the connection and closes every watch.
//
// # Key layout
//
// Every key is stored at Config.Prefix + key (default "/trellis", so the
// control plane's "/meta/trust-domain" is etcd's
// "/trellis/meta/trust-domain"), and List and Watch prefixes map the same
// way; keys come back without it. Several stores can share one cluster
// under different prefixes, as long as no prefix is a prefix of another
// ("/trellis/prod" and "/trellis/staging", not "/trellis" and
// "/trellis-staging").
//
// # How the contract maps onto etcd
//
//   - Revisions are etcd's own, shifted by one: an etcd cluster starts at
//     revision 1 with no keys, which is the contract's revision 0, and the
//     first write is 1. So a store revision r is etcd revision r+1 (what
//     etcdctl shows as mod_revision is one more than a resourceVersion).
//   - etcd's revision is cluster-wide: every transaction that writes, under
//     any prefix, moves it by one. On a cluster shared with other prefixes
//     or other users, a store therefore sees gaps between its revisions, and
//     Revision of a store with no keys of its own is not 0. Revisions still
//     only grow, and every op of a transaction shares one.
//   - Txn is one etcd transaction: IfModRevision 0 compares the key's
//     CreateRevision with 0 (it must not exist), an exact revision compares
//     its ModRevision, store.AnyRevision adds no comparison. A failed
//     comparison writes nothing and is store.ErrConflict (the message names
//     the key and the revision it had). A transaction with no effective
//     writes (deletes of missing keys) consumes no revision in etcd either;
//     one with no ops does not reach etcd and returns the current revision.
//     etcd refuses more than --max-txn-ops (default 128) ops per
//     transaction and requests over --max-request-bytes (default 1.5 MiB):
//     such a Txn fails whole with store.ErrTooLarge.
//   - Watch asks etcd for the events after fromRevision (WithRev, WithPrefix,
//     WithPrevKV, so a delete event carries the deleted value, with
//     ModRevision the deleting revision; should etcd have compacted the
//     revision before it, the value is missing). History older than the
//     cluster's last compaction is store.ErrCompacted, checked before the
//     watch starts; a compaction reported later, a cancellation by etcd, or
//     a watcher whose channel buffer (Config.WatchBuffer) is full closes the
//     channel, and the caller lists again and watches from the list's
//     revision. etcd catches up a watch that starts in the past in a loop
//     that runs every 100 ms, so a compaction right after Watch returns can
//     still close it that way.
//   - This backend never compacts: run etcd with --auto-compaction-mode and
//     --auto-compaction-retention (for example periodic, 1h), or history, and
//     the database, grow without bound. A Kubernetes API server sharing the
//     cluster compacts it every 5 minutes on its own.
//
// # Failures
//
// Every call is bounded by its context's deadline, or Config.RequestTimeout
// (5 s) when it has none, and asks for a member that has a leader, so a
// cluster that lost its quorum fails calls within a few seconds instead of
// hanging. Errors of an unreachable cluster, a lost quorum or a timeout wrap
// store.ErrUnavailable and say that the etcd quorum is unreachable. A Txn
// that fails that way may still have been applied: etcd cannot tell, so
// read again before retrying anything that is not a conditional write.
// A write in flight when the leader dies waits out the timeout and fails
// that way (applied or not, as above); writes after the election, a second
// or two later, succeed. Reads without a leader fail sooner, after the etcd
// client's own retries (about 1.3 s).
//
// When one member of three dies, the client library moves calls and
// watches to the others: a watch on the dead member is re-established from
// its last revision without the caller seeing it. A watch on a member that
// has had no leader for three election timeouts is cancelled by etcd (the
// watch requires a leader), and its channel closes: the caller lists again,
// as after any closed watch.
//
// Only main-side wiring (the command line) imports this package; it must not
// depend on the control plane's server, the proxy or the data plane,
// nothing above the store contract (internal/store).
package etcd
