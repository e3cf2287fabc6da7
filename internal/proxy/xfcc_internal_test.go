package proxy

import (
	"net/http"
	"testing"
)

func TestStripCallerXFCC(t *testing.T) {
	h := http.Header{}
	h["X-Forwarded-Client-Cert"] = []string{"By=x;URI=forged"}
	h["X_forwarded_client_cert"] = []string{"By=x;URI=forged"}
	h["x_Forwarded_Client_Cert"] = []string{"forged"}
	h["Connection"] = []string{"keep-alive, X-Forwarded-Client-Cert", "x-forwarded-client-cert"}
	h["X-Other"] = []string{"kept"}
	stripCallerXFCC(h)
	for k := range h {
		if k != "Connection" && k != "X-Other" {
			t.Errorf("header %q survived", k)
		}
	}
	if got := h["Connection"]; len(got) != 1 || got[0] != "keep-alive" {
		t.Errorf("Connection = %q, want [keep-alive] (tokens naming the client-cert header removed)", got)
	}
	h = http.Header{"Connection": {"X-Forwarded-Client-Cert"}}
	stripCallerXFCC(h)
	if _, ok := h["Connection"]; ok {
		t.Errorf("a Connection header naming only the client-cert header must go: %q", h["Connection"])
	}
}

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "/"},
		{"/items", "/items"},
		{"/items/", "/items/"},
		{"/items/../admin", "/admin"},
		{"//admin", "/admin"},
		{"/./admin/x", "/admin/x"},
		{"/a//b/", "/a/b/"},
		{"/..", "/"},
		{"admin", "/admin"},
		{"/items?/../admin", "/admin"},
	} {
		if got := normalizePath(tc.in); got != tc.want {
			t.Errorf("normalizePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestUpperMethod(t *testing.T) {
	for in, want := range map[string]string{"GET": "GET", "get": "GET", "pOst": "POST", "": ""} {
		if got := upperMethod(in); got != want {
			t.Errorf("upperMethod(%q) = %q, want %q", in, got, want)
		}
	}
}
