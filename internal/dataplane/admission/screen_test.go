package admission

import (
	"net/http"
	"testing"
)

func TestHTTPViewStripsCallerXFCC(t *testing.T) {
	h := http.Header{}
	h["X-Forwarded-Client-Cert"] = []string{"By=x;URI=forged"}
	h["X_forwarded_client_cert"] = []string{"By=x;URI=forged"}
	h["x_Forwarded_Client_Cert"] = []string{"forged"}
	h["Connection"] = []string{"keep-alive, X-Forwarded-Client-Cert", "x-forwarded-client-cert"}
	h["X-Other"] = []string{"kept"}
	if rf := (HTTPView{&http.Request{Header: h}}).Filter(nil); rf != nil {
		t.Fatalf("refused: %s", rf.Msg)
	}
	for k := range h {
		if k != "Connection" && k != "X-Other" {
			t.Errorf("header %q survived", k)
		}
	}
	if got := h["Connection"]; len(got) != 1 || got[0] != "keep-alive" {
		t.Errorf("Connection = %q, want [keep-alive] (tokens naming the client-cert header removed)", got)
	}
	h = http.Header{"Connection": {"X-Forwarded-Client-Cert"}}
	(HTTPView{&http.Request{Header: h}}).Filter(nil)
	if _, ok := h["Connection"]; ok {
		t.Errorf("a Connection header naming only the client-cert header must go: %q", h["Connection"])
	}
}

func TestCheckMethod(t *testing.T) {
	for m, refused := range map[string]bool{"GET": false, "get": true, "Get": true, "pOst": true, "delete": true, "PURGE": false, "purge": false, "M-SEARCH": false} {
		if got := checkMethod(m) != nil; got != refused {
			t.Errorf("checkMethod(%q) refused = %v, want %v", m, got, refused)
		}
	}
}

func TestCheckFieldName(t *testing.T) {
	for name, refused := range map[string]bool{
		"Transfer_Encoding": true, "transfer_encoding": true, "TRANSFER_ENCODING": true, "Content_Length": true,
		"Connection": false, "Connect_ion": false, "Keep_Alive": true, "TE": false, "Trailer": false, "Upgrade": false,
		"Proxy_Authorization": true, "proxy_connection": true, "Proxy_Anything": true, "X_Custom": false, "Content-Length": false,
	} {
		if got := checkFieldName(name) != nil; got != refused {
			t.Errorf("checkFieldName(%q) refused = %v, want %v", name, got, refused)
		}
	}
}
