package controlplane

import (
	"path/filepath"
	"testing"

	"github.com/trellismesh/trellis/internal/store/bolt"
)

// A zero VIPRange means the default, which is valid.
func TestConfigDefaultVIPRange(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := Config{DataDir: "x", Store: st}
	cfg.setDefaults()
	if cfg.VIPRange != DefaultVIPRange || cfg.validate() != nil {
		t.Errorf("zero VIPRange: got %s (%v), want the default %s", cfg.VIPRange, cfg.validate(), DefaultVIPRange)
	}
}
