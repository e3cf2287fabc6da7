#!/usr/bin/env bash
# Go micro-benchmarks (docs/benchmarks.md, "Go micro-benchmarks").
#
#   bench/gobench.sh run               run them; raw output to stdout and to
#                                      bench/results/go/<short HEAD>.txt
#   bench/gobench.sh compare [OLD] [NEW]
#                                      go tool benchstat of two results files
#
# OLD and NEW are commits (anything git rev-parse takes) or results file
# names without .txt. NEW defaults to HEAD; OLD to the newest results file
# of a commit before NEW. A run from a tree whose Go files or go.mod differ
# from HEAD is saved as <short HEAD>-dirty.txt: it did not measure HEAD.
set -euo pipefail

cd "$(git rev-parse --show-toplevel)"
GO=${GO:-go}
DIR=bench/results/go

# Package, -benchtime, benchmark regexp. -count=6 gives benchstat enough
# runs for a confidence interval; the whole run takes about 3 minutes on the
# 2-core CI machine. BenchmarkConvergence and the other slow benchmarks are
# left out on purpose.
BENCHES=(
	"./internal/dataplane/ 1s ^(BenchmarkDirect|BenchmarkThroughProxies)(Parallel)?$|^BenchmarkTelemetryOverhead$|^BenchmarkTracingOverhead$|^BenchmarkMetricsPerRequest$|^BenchmarkRecordRequest$"
	"./internal/policy/ 1s ^BenchmarkDecide$"
	"./internal/meshca/ 1s ^BenchmarkSignCSR$"
	"./internal/controlplane/snapshot/ 1s ^BenchmarkBuildSnapshot1000Services(PerProxy)?$"
)
COUNT=${COUNT:-6}

run() {
	local name out tmp
	name=$(git rev-parse --short HEAD)
	if ! git diff --quiet HEAD -- '*.go' go.mod go.sum; then
		name+=-dirty
		echo "gobench: the tree differs from HEAD; saving as $name.txt" >&2
	fi
	mkdir -p "$DIR"
	out=$DIR/$name.txt
	tmp=$(mktemp)
	trap 'rm -f "$tmp"' EXIT
	# Not "key: value" lines: benchstat would take them for configuration
	# and put the two sides of a comparison in different tables.
	if ! (
		fail=0
		echo "# gobench: commit $(git rev-parse HEAD)$([[ $name == *-dirty ]] && echo ' plus local changes'), $(date -u +%Y-%m-%dT%H:%M:%SZ), $($GO env GOVERSION), count $COUNT"
		for b in "${BENCHES[@]}"; do
			read -r pkg time re <<<"$b"
			$GO test -run '^$' -bench "$re" -benchtime "$time" -count "$COUNT" -benchmem "$pkg" || fail=1
		done
		exit $fail
	) 2>&1 | tee "$tmp"; then
		echo "gobench: a benchmark failed; $out not written" >&2
		exit 1
	fi
	mv "$tmp" "$out"
	trap - EXIT
	echo "gobench: wrote $out" >&2
}

# resolve prints the results file for a commit or file name.
resolve() {
	if [ -f "$DIR/$1.txt" ]; then
		echo "$DIR/$1.txt"
		return
	fi
	local c
	c=$(git rev-parse --verify -q --short "$1^{commit}") || { echo "gobench: $1 is neither a results file nor a commit" >&2; exit 1; }
	if [ -f "$DIR/$c.txt" ]; then
		echo "$DIR/$c.txt"
	elif [ -f "$DIR/$c-dirty.txt" ]; then
		echo "$DIR/$c-dirty.txt"
	else
		echo "gobench: no $DIR/$c.txt; run make bench-go on $c first" >&2
		exit 1
	fi
}

# previous prints the newest results file, other than $1, of a commit
# before it (for a -dirty file: of its commit or before).
previous() {
	local new=$1 stem from f c
	stem=$(basename "$new" .txt)
	if [[ $stem == *-dirty ]]; then
		from=$(git rev-parse "${stem%-dirty}^{commit}")
	else
		from=$(git rev-parse "$stem^{commit}")^
	fi
	declare -A byCommit=()
	for f in "$DIR"/*.txt; do
		[ -e "$f" ] && [ "$f" != "$new" ] || continue
		stem=$(basename "$f" .txt)
		[[ $stem == *-dirty ]] && continue
		c=$(git rev-parse --verify -q "$stem^{commit}") || continue
		byCommit[$c]=$f
	done
	for c in $(git rev-list "$from" 2>/dev/null); do
		if [ -n "${byCommit[$c]:-}" ]; then
			echo "${byCommit[$c]}"
			return
		fi
	done
	echo "gobench: no results file of a commit before $(basename "$new" .txt) in $DIR; give OLD=" >&2
	exit 1
}

compare() {
	local old new
	new=$(resolve "${2:-HEAD}")
	if [ -n "${1:-}" ]; then
		old=$(resolve "$1")
	else
		old=$(previous "$new")
	fi
	echo "benchstat $old $new" >&2
	# label=file: columns named by commit, not by path.
	$GO tool benchstat "$(basename "$old" .txt)=$old" "$(basename "$new" .txt)=$new"
}

case "${1:-}" in
run) run ;;
compare) compare "${2:-}" "${3:-}" ;;
*)
	echo "usage: $0 run | compare [OLD] [NEW]" >&2
	exit 2
	;;
esac
