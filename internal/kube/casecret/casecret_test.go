package casecret_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/kube/casecret"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

var td = spiffeid.RequireTrustDomainFromString("trellis.test")

var newCA = testutil.NewSharedFiles(td)

// Eight replicas starting together on a real API server end with one CA:
// exactly one created it, every data dir loads the same root and
// intermediate, the key files are 0600, and a replica started later gets
// the same CA too.
func TestReplicasAgreeOnOneCA(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.Namespace(t, "trellis-system", nil)
	const n = 8
	dirs := make([]string, n+1)
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		dirs[i] = filepath.Join(t.TempDir(), "data")
		wg.Go(func() {
			<-start
			created[i], errs[i] = casecret.Ensure(ctx, c.Client, "trellis-system", "trellis-ca", dirs[i], newCA)
		})
	}
	close(start)
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if created[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Errorf("%d replicas say they created the CA, want 1", creators)
	}
	dirs[n] = filepath.Join(t.TempDir(), "data")
	if again, err := casecret.Ensure(ctx, c.Client, "trellis-system", "trellis-ca", dirs[n], newCA); err != nil || again {
		t.Fatalf("a later replica: created=%v err=%v, want the existing CA", again, err)
	}
	var root, inter, token string
	for i, d := range dirs {
		tok, err := os.ReadFile(filepath.Join(d, casecret.AdminTokenFile))
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		if i == 0 {
			token = string(tok)
		} else if string(tok) != token {
			t.Errorf("replica %d has another admin token", i)
		}
		ca, made, err := meshca.LoadOrCreate(d, td, meshca.Options{})
		if err != nil || made {
			t.Fatalf("replica %d loads its data dir: made=%v err=%v", i, made, err)
		}
		r, in := string(ca.ActiveRoot().Raw), string(ca.Intermediates()[0].Raw)
		if i == 0 {
			root, inter = r, in
		} else if r != root || in != inter {
			t.Errorf("replica %d has another CA", i)
		}
		for _, key := range []string{"ca/root.key", "ca/intermediate.key", casecret.AdminTokenFile} {
			fi, err := os.Stat(filepath.Join(d, key))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("replica %d: %s: %v mode %v, want 0600", i, key, err, fi.Mode().Perm())
			}
		}
	}
	s, err := c.Client.CoreV1().Secrets("trellis-system").Get(ctx, "trellis-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Labels[casecret.LabelManagedBy] != "trellis" || len(s.Data) != 5 {
		t.Errorf("secret labels %v, %d keys, want managed-by trellis, the four CA files and the admin token", s.Labels, len(s.Data))
	}
}
