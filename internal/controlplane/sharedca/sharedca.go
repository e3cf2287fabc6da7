// Package sharedca keeps the files control-plane replicas share (the CA
// and its keys, the join tokens' signing key, the admin token:
// internal/cafiles) in the control plane's store, so that several
// replicas on one etcd cluster sign with one CA and answer the same
// tokens. Every value is sealed with AES-256-GCM under a key-encryption
// key every replica is given (--ca-kek-file), with its key as additional
// data: the store never holds a CA key, or any of these files, in the
// clear, and a value cannot be moved to another key.
//
// Layout: /ca/files/PATH holds each sealed file; /ca/version is written
// with every change, and its ModRevision is the version a replica holds.
// A change (a root rotation or retirement) is published by a transaction
// conditioned on the version the replica last took, so of two racing
// changes exactly one stands; /ca/reports/REPLICA holds each replica's
// proxies' certificate reports.
//
// It must not depend on the control plane's server, a store backend, the
// proxy or the data plane.
package sharedca

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/trellismesh/trellis/internal/cafiles"
	"github.com/trellismesh/trellis/internal/store"
)

// Keys in the store.
const (
	filesPrefix   = "/ca/files/"
	versionKey    = "/ca/version"
	reportsPrefix = "/ca/reports/"
)

// KEK is a key-encryption key.
type KEK struct{ aead cipher.AEAD }

// LoadKEK reads a 32-byte key from path (raw, hex or base64), refusing a
// file others may read.
func LoadKEK(path string) (*KEK, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-kek-file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("--ca-kek-file %s: mode %o lets others read the key; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-kek-file: %w", err)
	}
	key, err := decodeKey(b)
	if err != nil {
		return nil, fmt.Errorf("--ca-kek-file %s: %w", path, err)
	}
	return NewKEK(key)
}

func decodeKey(b []byte) ([]byte, error) {
	if len(b) == 32 {
		return b, nil
	}
	s := strings.TrimSpace(string(b))
	if k, err := hex.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	return nil, errors.New("want a 32-byte key: 32 raw bytes, 64 hex digits or base64 (e.g. `head -c 32 /dev/urandom > kek; chmod 600 kek`)")
}

// NewKEK returns the KEK of a 32-byte key.
func NewKEK(key []byte) (*KEK, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("key-encryption key: %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &KEK{aead: aead}, nil
}

func (k *KEK) seal(storeKey string, plain []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	_, _ = rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, plain, []byte(storeKey))
}

func (k *KEK) open(storeKey string, sealed []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("%s: too short to be sealed", storeKey)
	}
	plain, err := k.aead.Open(nil, sealed[:n], sealed[n:], []byte(storeKey))
	if err != nil {
		return nil, fmt.Errorf("%s: cannot be opened with --ca-kek-file (another key than the one the CA was stored with?)", storeKey)
	}
	return plain, nil
}

// Ensure makes dataDir hold the shared files from st, creating them with
// create (which writes a new CA, the admin token and the join tokens' key
// into the directory it is given) when the store has none yet; of replicas
// starting together, exactly one creates them. It reports whether this
// call did.
func Ensure(ctx context.Context, st store.Store, kek *KEK, dataDir string, create func(dir string) error) (bool, error) {
	if ok, _, err := load(ctx, st, kek, dataDir); err != nil || ok {
		return false, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dataDir)), ".ca-new-")
	if err != nil {
		return false, fmt.Errorf("sharedca: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := create(tmp); err != nil {
		return false, fmt.Errorf("sharedca: create the CA: %w", err)
	}
	files, err := cafiles.Pack(tmp)
	if err != nil {
		return false, fmt.Errorf("sharedca: %w", err)
	}
	ops := sealOps(kek, files, nil)
	ops = append(ops, store.Op{Type: store.OpPut, Key: versionKey, Value: []byte("1"), IfModRevision: 0})
	_, err = st.Txn(ctx, ops...)
	switch {
	case errors.Is(err, store.ErrConflict):
		// Another replica stored its CA first: take that one.
		if _, _, err := load(ctx, st, kek, dataDir); err != nil {
			return false, err
		}
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sharedca: store the CA: %w", err)
	}
	if err := cafiles.Materialize(files, dataDir); err != nil {
		return false, fmt.Errorf("sharedca: %w", err)
	}
	return true, nil
}

// load writes the store's files into dataDir, reporting whether there
// were any and the version they are.
func load(ctx context.Context, st store.Store, kek *KEK, dataDir string) (bool, int64, error) {
	files, version, err := read(ctx, st, kek)
	if err != nil || files == nil {
		return false, 0, err
	}
	if err := cafiles.Materialize(files, dataDir); err != nil {
		return false, 0, fmt.Errorf("sharedca: %w", err)
	}
	return true, version, nil
}

// read opens the store's files and their version (the version key's
// ModRevision); nil files when there are none.
func read(ctx context.Context, st store.Store, kek *KEK) (map[string][]byte, int64, error) {
	kvs, _, err := st.List(ctx, "/ca/")
	if err != nil {
		return nil, 0, fmt.Errorf("sharedca: read the CA: %w", err)
	}
	files := map[string][]byte{}
	var version int64
	for _, kv := range kvs {
		switch {
		case kv.Key == versionKey:
			version = kv.ModRevision
		case strings.HasPrefix(kv.Key, filesPrefix):
			plain, err := kek.open(kv.Key, kv.Value)
			if err != nil {
				return nil, 0, fmt.Errorf("sharedca: %w", err)
			}
			files[strings.TrimPrefix(kv.Key, filesPrefix)] = plain
		}
	}
	if version == 0 || len(files) == 0 {
		return nil, 0, nil
	}
	return files, version, nil
}

// sealOps puts every file sealed, and deletes the stored files (old) the
// new set does not have.
func sealOps(kek *KEK, files map[string][]byte, old []string) []store.Op {
	ops := make([]store.Op, 0, len(files)+len(old)+1)
	for rel, b := range files {
		key := filesPrefix + rel
		ops = append(ops, store.Op{Type: store.OpPut, Key: key, Value: kek.seal(key, b), IfModRevision: store.AnyRevision})
	}
	for _, key := range old {
		if _, ok := files[strings.TrimPrefix(key, filesPrefix)]; !ok {
			ops = append(ops, store.Op{Type: store.OpDelete, Key: key, IfModRevision: store.AnyRevision})
		}
	}
	return ops
}
