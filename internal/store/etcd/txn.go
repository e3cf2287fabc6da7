package etcd

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/store"
)

// Txn implements store.Store with one etcd transaction: a comparison per
// conditioned op, the writes when all hold, and otherwise reads of the
// conditioned keys to say which did not. Deleting a missing key changes
// nothing, and a transaction of only such deletes keeps etcd's revision.
func (s *Store) Txn(ctx context.Context, ops ...store.Op) (int64, error) {
	if err := validateOps(ops); err != nil {
		return 0, fmt.Errorf("etcd txn: %w", err)
	}
	if err := s.check(ctx, "etcd txn"); err != nil {
		return 0, err
	}
	if len(ops) == 0 {
		rev, err := s.revision(ctx)
		if err != nil {
			return 0, s.wrap(ctx, "etcd txn", err)
		}
		return rev, nil
	}

	var (
		cmps      []clientv3.Cmp
		writes    []clientv3.Op
		reads     []clientv3.Op
		condition []store.Op // the ops of reads, in order
	)
	for _, op := range ops {
		key := s.cfg.Prefix + op.Key
		switch want := op.IfModRevision; {
		case want == 0:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		case want > 0:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", want+revOffset))
		}
		if op.IfModRevision != store.AnyRevision {
			reads = append(reads, clientv3.OpGet(key, clientv3.WithKeysOnly()))
			condition = append(condition, op)
		}
		if op.Type == store.OpPut {
			writes = append(writes, clientv3.OpPut(key, string(op.Value)))
		} else {
			writes = append(writes, clientv3.OpDelete(key))
		}
	}

	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	resp, err := s.cl.Txn(cctx).If(cmps...).Then(writes...).Else(reads...).Commit()
	if err != nil {
		return 0, s.wrap(ctx, "etcd txn", err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("etcd txn: %s: %w", conflict(condition, resp), store.ErrConflict)
	}
	return resp.Header.Revision - revOffset, nil
}

// conflict says which condition failed, from the reads of the Else branch.
func conflict(ops []store.Op, resp *clientv3.TxnResponse) string {
	for i, op := range ops {
		if i >= len(resp.Responses) {
			break
		}
		kvs := resp.Responses[i].GetResponseRange().GetKvs()
		switch want := op.IfModRevision; {
		case want == 0 && len(kvs) > 0:
			return fmt.Sprintf("key %q exists, want absent", op.Key)
		case want > 0 && len(kvs) == 0:
			return fmt.Sprintf("key %q is absent, want mod revision %d", op.Key, want)
		case want > 0 && kvs[0].ModRevision-revOffset != want:
			return fmt.Sprintf("key %q has mod revision %d, want %d", op.Key, kvs[0].ModRevision-revOffset, want)
		}
	}
	return "a condition did not hold"
}

// validateOps refuses what the contract or etcd does not allow: an empty
// key, an unknown op type, a bad condition, or the same key twice (etcd
// refuses a key written twice in one transaction).
func validateOps(ops []store.Op) error {
	seen := make(map[string]struct{}, len(ops))
	for i, op := range ops {
		if op.Key == "" {
			return fmt.Errorf("op %d: empty key", i)
		}
		if op.Type != store.OpPut && op.Type != store.OpDelete {
			return fmt.Errorf("op %d on key %q: unknown op type %d", i, op.Key, op.Type)
		}
		if op.IfModRevision < store.AnyRevision {
			return fmt.Errorf("op %d on key %q: invalid IfModRevision %d (use store.AnyRevision, 0 or a revision)", i, op.Key, op.IfModRevision)
		}
		if _, dup := seen[op.Key]; dup {
			return fmt.Errorf("op %d: key %q appears more than once in the transaction", i, op.Key)
		}
		seen[op.Key] = struct{}{}
	}
	return nil
}
