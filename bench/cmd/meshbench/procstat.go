package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux this runs on.
const clockTicks = 100

// processTree is pid and its descendants (nginx's master and workers).
func processTree(pid int) []int {
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pids[i], pids[i]))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				pids = append(pids, c)
			}
		}
	}
	return pids
}

// cpuSeconds is utime+stime of pid (all its threads), in seconds.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	// Fields 14 and 15 of stat; f[0] is field 3.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return float64(ut+st) / clockTicks, nil
}

// rssMB is VmRSS and RssAnon (private heap and stacks, no file-backed
// pages) of pid in MB.
func rssMB(pid int) (rss, anon float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, rest, _ := strings.Cut(line, ":")
		if key != "VmRSS" && key != "RssAnon" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[0], 64)
		if key == "VmRSS" {
			rss = kb / 1024
		} else {
			anon = kb / 1024
		}
	}
	return rss, anon
}

// treeCPU sums cpuSeconds over the trees of pids.
func treeCPU(pids []int) float64 {
	var sum float64
	for _, p := range pids {
		for _, q := range processTree(p) {
			s, _ := cpuSeconds(q)
			sum += s
		}
	}
	return sum
}

// treeRSS sums VmRSS and RssAnon over pid's tree. For nginx (master plus
// worker) the file-backed pages they share (binary, libraries: ~7 MB) are
// counted twice in VmRSS; RssAnon is not inflated that way.
func treeRSS(pid int) (rss, anon float64) {
	for _, q := range processTree(pid) {
		r, a := rssMB(q)
		rss += r
		anon += a
	}
	return rss, anon
}
