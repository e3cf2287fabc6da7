package adminhttp

import (
	"encoding/json"
	"net/http"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// WriteJSON answers code with v as indented JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError answers code with {"error": err}.
func WriteError(w http.ResponseWriter, code int, err error) {
	WriteJSON(w, code, adminapi.ErrorBody{Error: err.Error()})
}
