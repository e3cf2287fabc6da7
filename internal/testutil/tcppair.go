package testutil

import (
	"net"
	"testing"
)

// TCPPair returns both ends of a loopback TCP connection accepted on l (a
// new loopback listener, closed afterwards, when l is nil); the test owns
// both ends, closed at cleanup.
func TCPPair(t testing.TB, l net.Listener) (client, server net.Conn) {
	t.Helper()
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	}
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		ch <- accepted{c, err}
	}()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		client.Close()
		t.Fatal(a.err)
	}
	t.Cleanup(func() { client.Close(); a.c.Close() })
	return client, a.c
}
