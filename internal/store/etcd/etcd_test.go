package etcd_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/etcd"
	"github.com/trellismesh/trellis/internal/store/storetest"
	"github.com/trellismesh/trellis/internal/testutil/etcdtest"
)

// TestConformance runs the store contract on fresh clusters of three
// members and of one, a cluster per case: the contract's revisions start
// at 0 in an empty store, and etcd's are cluster-wide.
//
// Only WatchCompacted's cluster compacts (all but its last 64 revisions,
// every 50 ms): etcd catches up a watch that starts in the past in its
// sync loop, up to 100 ms later, and a compaction past the watch's start
// in that window cancels it (the channel closes; the caller relists).
// WatchWhileWriting writes its 200 revisions within that window, and
// WatchCompacted needs history gone within 200 revisions, so one
// compaction setting cannot serve both.
func TestConformance(t *testing.T) {
	for _, members := range []int{3, 1} {
		t.Run(fmt.Sprintf("members=%d", members), func(t *testing.T) {
			etcdtest.Require(t)
			storetest.Run(t, func(t *testing.T) store.Store {
				c := etcdtest.Start(t, members)
				if strings.HasSuffix(t.Name(), "/WatchCompacted") {
					c.AutoCompact(64, 50*time.Millisecond)
				}
				return open(t, c, "")
			})
		})
	}
}

// open opens a store on c with prefix ("": the default), closed when the
// test ends.
func open(t *testing.T, c *etcdtest.Cluster, prefix string) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(t.Context(), etcd.Config{Endpoints: c.Endpoints(), Prefix: prefix, TLS: c.ClientTLS()})
	if err != nil {
		t.Fatalf("etcd.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
