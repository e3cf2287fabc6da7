package eventlog

import (
	"sync"
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

func TestConcurrentAppendsShareFsyncs(t *testing.T) {
	l, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const goroutines, appends = 32, 20
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range appends {
				if _, err := l.Append(&pb.Event{Kind: "authz.deny", Path: "/admin"}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := l.LastIndex(); got != goroutines*appends {
		t.Fatalf("LastIndex: got %d, want %d", got, goroutines*appends)
	}
	// With 32 appenders queuing behind each fsync, batches average far
	// more than two appends.
	if syncs := l.syncs.Load(); syncs > goroutines*appends/2 {
		t.Errorf("%d appends took %d fsyncs, want them to share fsyncs", goroutines*appends, syncs)
	}
	t.Logf("%d appends in %d fsyncs", goroutines*appends, l.syncs.Load())
}
