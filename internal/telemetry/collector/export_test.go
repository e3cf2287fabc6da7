package collector

import "time"

// SetStatsGap changes the shortest interval between two counted stats
// reports of one stream (tests send them back to back).
func SetStatsGap(s *Server, d time.Duration) { s.statsGap.Store(int64(d)) }
