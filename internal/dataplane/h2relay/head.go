package h2relay

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// head is a decoded header block: a HEADERS frame and its CONTINUATION
// frames, decoded with the connection's HPACK decoder. It is the relay's
// form of x/net's MetaHeadersFrame (Framer.ReadMetaHeaders), with the
// same checks, but one per connection and reused: x/net allocates the
// frame, its field slice and its decoding closure for every block, four
// blocks per gRPC call on each proxy. Its Fields are valid until the
// reader decodes the next block; whatever keeps them longer copies them.
type head struct {
	*http2.HeadersFrame
	// Fields are the decoded fields in order, pseudo-header fields first.
	Fields []hpack.HeaderField
	// Truncated: the list went over MaxHeaderListSize; the fields past the
	// limit were dropped.
	Truncated bool

	// Decoding state (readHead).
	headersLeft, trailersLeft uint32
	sawRegular                bool
	invalid                   bool
}

// PseudoValue returns the value of the pseudo-header field name (without
// its colon), or "".
func (h *head) PseudoValue(name string) string {
	for _, f := range h.Fields {
		if !f.IsPseudo() {
			break
		}
		if f.Name[1:] == name {
			return f.Value
		}
	}
	return ""
}

// RegularFields are the fields after the pseudo-header ones.
func (h *head) RegularFields() []hpack.HeaderField {
	for i, f := range h.Fields {
		if !f.IsPseudo() {
			return h.Fields[i:]
		}
	}
	return nil
}

// errBadPseudo is a header block with an unknown, repeated or mixed
// request and response pseudo-header field.
var errBadPseudo = errors.New("h2relay: bad pseudo-header fields")

// checkPseudos is x/net's MetaHeadersFrame check: known pseudo-header
// names, none twice, not request and response ones mixed.
func (h *head) checkPseudos() error {
	var isRequest, isResponse bool
	for i, f := range h.Fields {
		if !f.IsPseudo() {
			break
		}
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			isRequest = true
		case ":status":
			isResponse = true
		default:
			return errBadPseudo
		}
		for _, g := range h.Fields[:i] {
			if f.Name == g.Name {
				return errBadPseudo
			}
		}
	}
	if isRequest && isResponse {
		return errBadPseudo
	}
	return nil
}

// emit takes one decoded field (the HPACK decoder's emit function).
func (c *Conn) emit(f hpack.HeaderField) {
	h := &c.hd
	switch {
	case !httpguts.ValidHeaderFieldValue(f.Value):
		h.invalid = true
	case f.IsPseudo():
		h.invalid = h.sawRegular
	default:
		h.sawRegular = true
		h.invalid = !validFieldName(f.Name)
	}
	if h.invalid {
		c.hdec.SetEmitEnabled(false)
		return
	}
	left, size := &h.headersLeft, f.Size()
	if f.Name == "trailer" {
		// x/net's accounting: each name the field announces costs its
		// share of the value and a field's overhead.
		n := uint32(strings.Count(f.Value, ",") + 1)
		left, size = &h.trailersLeft, uint32(len(f.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *left {
		c.hdec.SetEmitEnabled(false)
		h.Truncated = true
		h.headersLeft, h.trailersLeft = 0, 0
		return
	}
	*left -= size
	h.Fields = append(h.Fields, f)
}

// validFieldName is HTTP/2's rule for a field name on the wire: a token,
// in lowercase.
func validFieldName(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !httpguts.IsTokenRune(r) || ('A' <= r && r <= 'Z') {
			return false
		}
	}
	return true
}

// readHead decodes the header block that hf begins, reading its
// CONTINUATION frames (the Framer has checked that nothing comes between
// them). Errors are those of x/net's ReadMetaHeaders: a ConnectionError
// when the block cannot be decoded or is far over the size limit, a
// StreamError when a field or the pseudo-header fields are malformed.
func (c *Conn) readHead(hf *http2.HeadersFrame) (*head, error) {
	h := &c.hd
	clear(h.Fields)
	if cap(h.Fields) > 256 {
		h.Fields = nil // a rare long list is not kept for good
	}
	*h = head{
		HeadersFrame: hf,
		Fields:       h.Fields[:0],
		headersLeft:  c.cfg.MaxHeaderListSize,
		trailersLeft: c.cfg.MaxHeaderListSize,
	}
	c.hdec.SetEmitEnabled(true)
	var hc interface {
		HeaderBlockFragment() []byte
		HeadersEnded() bool
	} = hf
	for {
		frag := hc.HeaderBlockFragment()
		// A fragment of more than twice what the list may still take, or
		// any CONTINUATION once a field was malformed, ends the
		// connection rather than be decoded and thrown away.
		if int64(len(frag)) > 2*int64(h.headersLeft+h.trailersLeft) || h.invalid {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := c.hdec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if hc.HeadersEnded() {
			break
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		hc = f.(*http2.ContinuationFrame) // the Framer checks the order
	}
	if err := c.hdec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if h.invalid || h.checkPseudos() != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol}
	}
	return h, nil
}
