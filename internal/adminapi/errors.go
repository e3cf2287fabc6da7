package adminapi

import "errors"

// Error classes of resource operations, shared by the control plane's
// stores and the resource writers it delegates to; the admin API answers
// them with 404, 409 and 400.
var (
	ErrNotFound  = errors.New("not found")
	ErrConflict  = errors.New("conflict")
	ErrForbidden = errors.New("not allowed")
)

// ObjectError is an apply's failure at one object of the request: Index
// is its position, Resource its name for people ("AuthorizationPolicy
// shop/x"). Applied says whether objects before it were applied anyway (a
// writer without transactions); the response then says which.
type ObjectError struct {
	Index    int
	Resource string
	Err      error
	Applied  []ApplyResult
}

func (e *ObjectError) Error() string { return e.Resource + ": " + e.Err.Error() }
func (e *ObjectError) Unwrap() error { return e.Err }
