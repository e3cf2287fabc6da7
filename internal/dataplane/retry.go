package dataplane

import (
	"net/http"
	"strconv"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// maxReplayBody is the largest request body the net/http path buffers to
// send again (Linkerd's limit). The fast path replays only bodies that
// arrived with the head (inlineBody).
const maxReplayBody = 64 << 10

// tries is one outbound request's TrafficPolicy state (docs/traffic-
// retries.md): its deadline and the retries it has left. The zero value,
// for a service without a policy, sets no deadline and never retries.
// It lives on the forwarding goroutine's stack.
type tries struct {
	tp   *meshconfig.TrafficPolicy
	rp   *meshconfig.RetryPolicy
	rt   *route
	left int // retries left
	// replayable: the request may be sent again (its method, or
	// nonIdempotent, and a body that is kept whole or none).
	replayable bool
	// deadline bounds the whole request; tryUntil the current try (zero:
	// none).
	deadline, tryUntil time.Time
}

// start prepares the tries of a request to rt with method, which can be
// replayed when bodyKept. It counts the request in the retry budget.
func (t *tries) start(rt *route, method string, bodyKept bool, now time.Time) {
	tp := rt.traffic
	*t = tries{tp: tp, rp: tp.Retry, rt: rt}
	if tp.Timeout > 0 {
		t.deadline = now.Add(tp.Timeout)
	}
	if rp := tp.Retry; rp != nil {
		t.left = rp.Attempts
		t.replayable = bodyKept && (rp.NonIdempotent || idempotent(method))
		if rt.budget != nil {
			rt.budget.request(now)
		}
	}
}

// shorten applies a caller's own deadline (grpc-timeout) when it is the
// earlier.
func (t *tries) shorten(d time.Time) {
	if t.deadline.IsZero() || d.Before(t.deadline) {
		t.deadline = d
	}
}

// next starts a try: it returns the try's deadline (zero: none).
func (t *tries) next(now time.Time) time.Time {
	t.tryUntil = t.deadline
	if t.rp != nil && t.rp.PerTryTimeout > 0 {
		if d := now.Add(t.rp.PerTryTimeout); t.tryUntil.IsZero() || d.Before(t.tryUntil) {
			t.tryUntil = d
		}
	}
	return t.tryUntil
}

// overdue: the whole request's deadline has passed.
func (t *tries) overdue(now time.Time) bool {
	return !t.deadline.IsZero() && !now.Before(t.deadline)
}

// perTryExpired: the try that timed out at now was cut by the per-try
// timeout, not the request's.
func (t *tries) perTryExpired(now time.Time) bool { return !t.overdue(now) }

// retry decides a retry for cond, taking it from the budget; false: the
// failure is answered.
func (t *tries) retry(cond meshconfig.RetryOn) bool { return t.retryWhen(cond, t.replayable) }

// retryUnsent is retry for a try that sent nothing (its connection could
// not be had): any method may go again.
func (t *tries) retryUnsent() bool { return t.retryWhen(meshconfig.RetryConnectFailure, true) }

func (t *tries) retryWhen(cond meshconfig.RetryOn, replayable bool) bool {
	if t.left == 0 || !replayable || t.rp.On&cond == 0 || t.overdue(time.Now()) {
		return false
	}
	if b := t.rt.budget; b != nil && !b.withdraw(time.Now()) {
		t.rt.dest.RetrySkippedForBudget()
		t.left = 0 // the budget will not recover within this request
		return false
	}
	t.left--
	t.rt.dest.Retry()
	return true
}

// retryStatus decides a retry for a response with code (before any of it
// went to the caller).
func (t *tries) retryStatus(code int) bool {
	if t.left == 0 || code < 500 || code > 599 {
		return false
	}
	return t.retry(statusCondition(code))
}

// retryGRPC decides a retry for a gRPC response with grpc-status code.
func (t *tries) retryGRPC(code int) bool {
	c := grpcCondition(code)
	return c != 0 && t.left > 0 && t.retry(c)
}

// statusCondition is the retry conditions an HTTP status meets.
func statusCondition(code int) meshconfig.RetryOn {
	switch {
	case code == http.StatusBadGateway, code == http.StatusServiceUnavailable, code == http.StatusGatewayTimeout:
		return meshconfig.Retry5xx | meshconfig.RetryGatewayError
	case code >= 500 && code <= 599:
		return meshconfig.Retry5xx
	}
	return 0
}

// timeoutCondition is what a per-try timeout counts as: a 504.
const timeoutCondition = meshconfig.Retry5xx | meshconfig.RetryGatewayError

// grpcCondition is the retry condition a grpc-status meets.
func grpcCondition(code int) meshconfig.RetryOn {
	switch code {
	case 1:
		return meshconfig.RetryCancelled
	case 4:
		return meshconfig.RetryDeadlineExceeded
	case 8:
		return meshconfig.RetryResourceExhausted
	case 13:
		return meshconfig.RetryInternal
	case 14:
		return meshconfig.RetryUnavailable
	}
	return 0
}

// idempotent methods may be sent twice (RFC 9110 9.2.2).
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// timeoutHeader names the TrafficPolicy whose timeout answered a request.
const timeoutHeader = "X-Trellis-Timeout-By"

// timeoutMessage is the body of a timeout's answer.
func (t *tries) timeoutMessage(perTry bool) string {
	if perTry {
		return "trellis: per-try timeout of TrafficPolicy " + t.tp.Ref + " (" + t.rp.PerTryTimeout.String() + ") expired\n"
	}
	if t.tp.Timeout == 0 {
		return "trellis: the caller's deadline expired\n"
	}
	return "trellis: timeout of TrafficPolicy " + t.tp.Ref + " (" + t.tp.Timeout.String() + ") expired\n"
}

// timedOut answers a request whose timeout expired: 504 naming the
// policy.
func (o *Outbound) timedOut(w http.ResponseWriter, t *tries, perTry bool) int {
	kind := metrics.TimeoutRequest
	if perTry {
		kind = metrics.TimeoutPerTry
	}
	t.rt.dest.Timeout(kind)
	if o.logs.allow(t.rt.key + " timeout") {
		o.log.Warn("outbound call timed out", "service", t.rt.key, "policy", t.tp.Ref, "kind", kind)
	}
	w.Header()[timeoutHeader] = []string{t.tp.Ref}
	relay.PlainError(w, http.StatusGatewayTimeout, t.timeoutMessage(perTry))
	return http.StatusGatewayTimeout
}

// grpcTimeout parses a grpc-timeout header ("100m", "2S"); false when
// absent or malformed.
func grpcTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}
