// Package console is the web console the control plane serves at /ui on
// its admin API listener: server-rendered pages (html/template, a small
// stylesheet and a little vanilla JavaScript, all embedded) over the
// same admin API handlers the CLI calls, run in process with the
// session's principal, so the console shows what the CLI shows and is
// refused what the CLI would be refused.
//
// A session is a random id in an HttpOnly, SameSite=Strict cookie
// (Secure over TLS) mapping, server side, to the principal of the admin
// token given at login; the token itself is never kept. Every POST
// carries the session's CSRF token. docs/console.md describes it.
//
// Imported by the control plane only.
package console
