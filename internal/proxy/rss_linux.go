//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// trimText drops the process's page-table entries for the executable's
// read-only segments (code and constants), once startup is over. The
// kernel maps file pages around every page a fault touches (fault-around,
// 64 KiB), so package initialization, flag parsing, the join and the
// first config leave some 16 MB of the binary resident that the data
// path never touches again. After MADV_DONTNEED those pages are still in
// the page cache (shared with every other trellis process); only what
// runs again is mapped again, on its next touch. Writable segments are
// never touched. It returns the bytes of mappings it advised.
func trimText() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	var total int64
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// 00400000-00b2e000 r-xp 00000000 fd:01 1234 /usr/bin/trellis
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[5] != exe || strings.ContainsAny(f[1], "w") || !strings.HasSuffix(f[1], "p") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED); e != 0 {
			return total, e
		}
		total += int64(end - start)
	}
	return total, sc.Err()
}
