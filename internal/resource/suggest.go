package resource

import (
	"fmt"
	"strings"
)

// suggestion returns ` (did you mean "x"?)` for the candidate closest to
// name, or "" if none is close enough to be a likely typo.
func suggestion(name string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(name), strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	if bestDist < 0 || bestDist > maxTypoDistance(name) {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// maxTypoDistance is how many edits still look like a typo of a word as
// long as name: one for short words, up to three for long ones.
func maxTypoDistance(name string) int {
	switch n := len(name); {
	case n <= 3:
		return 1
	case n <= 8:
		return 2
	default:
		return 3
	}
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 256 || len(b) > 256 {
		// Nobody mistypes a field name this long; don't spend time on it.
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
