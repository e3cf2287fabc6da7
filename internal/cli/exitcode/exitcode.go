// Package exitcode is the exit codes of the trellis command and the errors
// that carry them. The commands of internal/cli and of its subpackages
// (internal/cli/policycmd) return these errors; cli.Main exits with their
// code. Only the command line imports it.
package exitcode

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// The exit codes of every command; a command may add its own (trellis
// check's, trellis diff's).
const (
	OK       = 0
	User     = 1 // bad input; the message says what to fix
	Internal = 2 // server unreachable or internal error
)

// Error carries an exit code with the message.
type Error struct {
	Code int
	Err  error
	// Quiet: the command's output already says it all (trellis diff
	// found differences); Main prints no error line.
	Quiet bool
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// UserError is an error of exit code User, formatted as fmt.Errorf does.
func UserError(format string, args ...any) error {
	return &Error{Code: User, Err: fmt.Errorf(format, args...)}
}

// Of picks the exit code of err. Errors from commands are classified by
// RunE; anything else comes from cobra's own parsing (unknown command, bad
// arguments) and is the user's.
func Of(err error) int {
	var ee *Error
	switch {
	case err == nil:
		return OK
	case errors.As(err, &ee):
		return ee.Code
	default:
		return User
	}
}

// RunE wraps a command body so its errors carry an exit code: bad input
// and 4xx answers are the user's (1); an unreachable server, 5xx answers and
// anything unexpected are 2.
func RunE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		var ee *Error
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ee):
			return err
		case adminapi.IsUserError(err):
			return &Error{Code: User, Err: err}
		default:
			return &Error{Code: Internal, Err: err}
		}
	}
}

// NoArgs rejects positional arguments as a user error.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return UserError("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
