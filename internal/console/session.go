package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/adminauth"
)

// session is one logged-in browser.
type session struct {
	id        string
	csrf      string
	principal adminauth.Principal
	expires   time.Time
}

// sessions maps session ids to sessions. Safe for concurrent use.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	now func() time.Time
	ttl time.Duration
}

func randomHex() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("console: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// create starts a session for p.
func (s *sessions) create(p adminauth.Principal) *session {
	ss := &session{id: randomHex(), csrf: randomHex(), principal: p, expires: s.now().Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, o := range s.m {
		if !now.Before(o.expires) {
			delete(s.m, id)
		}
	}
	s.m[ss.id] = ss
	return ss
}

// get returns the live session id names; expired reports one that was
// there but has expired (and is now gone).
func (s *sessions) get(id string) (ss *session, expired bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss = s.m[id]
	if ss == nil {
		return nil, false
	}
	if !s.now().Before(ss.expires) {
		delete(s.m, id)
		return nil, true
	}
	return ss, false
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// csrfOK compares a submitted CSRF token with the session's in constant
// time.
func (ss *session) csrfOK(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(ss.csrf)) == 1
}
