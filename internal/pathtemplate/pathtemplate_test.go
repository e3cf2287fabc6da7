package pathtemplate

import (
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/items", "/items"},
		{"/items/", "/items/"},
		{"/items/42", "/items/{id}"},
		{"/items/42/reviews/7", "/items/{id}/reviews/{id}"},
		{"/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301/cart", "/users/{id}/cart"},
		{"/blobs/9f86d081884c7d65", "/blobs/{id}"},
		{"/blobs/deadbeef", "/blobs/deadbeef"}, // all letters: a word, not an id
		{"/t/01HGW8ZK6Q3T9X2V5N7M4B8C1D", "/t/{id}"},
		{"/v1/items", "/v1/items"}, // short with a digit: a version, kept
		{"/api/v2beta1/x", "/api/v2beta1/x"},
		{"/static/app.js", "/static/app.js"},
		{"/a//b", "/a//b"},
		{"items/1", "/items/{id}"},
		{"/" + strings.Repeat("a/", 20), "/a/a/a/a/a/a/a/a/a/a/a/a/{...}"},
		{"/" + strings.Repeat("x", 200), "/{...}"},
	} {
		if got := Of(tc.in); got != tc.want {
			t.Errorf("Of(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestAppendAllocatesNothing(t *testing.T) {
	buf := make([]byte, 0, MaxLen+16)
	if n := testing.AllocsPerRun(1000, func() { buf = Append(buf[:0], "/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301/items/42") }); n != 0 {
		t.Errorf("Append allocates %v times per call, want 0", n)
	}
}

func FuzzAppend(f *testing.F) {
	for _, s := range []string{"", "/", "/items/42", "/a//b/", "%2F..", strings.Repeat("/ab12", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		out := Of(path)
		if !strings.HasPrefix(out, "/") {
			t.Fatalf("Of(%q) = %q: not absolute", path, out)
		}
		if len(out) > MaxLen+len(Rest)+2 {
			t.Fatalf("Of(%q) is %d bytes, over the limit", path, len(out))
		}
		if strings.Count(out, "/") > MaxSegments+strings.Count(path, "/")+1 && !strings.HasSuffix(out, Rest) {
			t.Fatalf("Of(%q) = %q: too many segments", path, out)
		}
		// Idempotent: a template's template is itself.
		if again := Of(out); again != out {
			t.Fatalf("Of(Of(%q)) = %q, want %q", path, again, out)
		}
	})
}
