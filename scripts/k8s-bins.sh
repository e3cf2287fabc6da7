#!/usr/bin/env bash
# k8s-bins.sh builds kube-apiserver, kubectl, etcd and helm from the Go
# module proxy at pinned versions and caches them outside the repository,
# keyed by version:
#
#   $TRELLIS_K8S_CACHE (default $HOME/.cache/trellis/k8s)/v$K8S_VERSION/kube-apiserver
#   $TRELLIS_K8S_CACHE/v$K8S_VERSION/kubectl      (the walkthrough test in test/e2e)
#   $TRELLIS_K8S_CACHE/etcd-v$ETCD_VERSION/etcd
#   $TRELLIS_K8S_CACHE/helm-v$HELM_VERSION/helm   (renders deploy/helm/trellis in its golden test)
#   $TRELLIS_K8S_CACHE/h2spec-v$H2SPEC_VERSION/h2spec   (HTTP/2 conformance of the proxy's relay)
#
# The Kubernetes-mode tests (internal/testutil/kubetest) run them on
# loopback. A cold build of all four took 8 minutes on 2 cores (about 2.4 GB
# of memory at its peak, 4 GB of module and build cache); with the binaries
# cached this exits at once. It prints the cache directory.
#
# Why a throwaway module: `go install k8s.io/kubernetes/cmd/...@vX` is
# refused because k8s.io/kubernetes replaces its k8s.io/* staging modules
# (required at v0.0.0) with local paths. The module written here replaces
# each of them with the published v0.$MINOR.$PATCH release instead.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.7.3}
HELM_VERSION=${HELM_VERSION:-4.3.2}
CACHE=${TRELLIS_K8S_CACHE:-$HOME/.cache/trellis/k8s}
GO=${GO:-go}
k8s_dir=$CACHE/v$K8S_VERSION
etcd_dir=$CACHE/etcd-v$ETCD_VERSION
helm_dir=$CACHE/helm-v$HELM_VERSION
H2SPEC_VERSION=${H2SPEC_VERSION:-2.2.1}
h2spec_dir=$CACHE/h2spec-v$H2SPEC_VERSION
staging=v0.${K8S_VERSION#1.}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # one build at a time; a second caller waits and then finds the binaries

# build_k8s CMD builds k8s.io/kubernetes/cmd/CMD into $k8s_dir.
build_k8s() {
	local cmd=$1 work
	work=$(mktemp -d)
	trap 'rm -rf "$work"' RETURN
	echo "k8s-bins: building $cmd v$K8S_VERSION (kube-apiserver about 8 minutes cold; kubectl about 2 more)" >&2
	local gomod
	gomod=$(cd "$work" && $GO mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
	[ -f "$gomod" ] || { echo "k8s-bins: no go.mod for k8s.io/kubernetes@v$K8S_VERSION" >&2; exit 1; }
	{
		echo "module trellis.local/k8sbuild"
		echo
		echo "go 1.26.0"
		echo
		echo "godebug default=go1.26"
		echo
		# Every k8s.io module kubernetes requires at v0.0.0 is one of its
		# staging modules; the two samples are not served by the proxy.
		awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// {print $1}' "$gomod" |
			grep -vx -e k8s.io/sample-cli-plugin -e k8s.io/sample-controller |
			sort -u | sed "s|.*|replace & => & $staging|"
	} >"$work/go.mod"
	(
		cd "$work"
		$GO get -tool "k8s.io/kubernetes/cmd/$cmd@v$K8S_VERSION" >&2
		local date ld="" pkg
		date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
		for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ld="$ld -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
			ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
		done
		mkdir -p "$k8s_dir"
		CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w $ld" -o "$k8s_dir/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
	)
	mv "$k8s_dir/$cmd.tmp" "$k8s_dir/$cmd"
}

# h2spec runs its HTTP/2 conformance cases against the proxy's HTTP/2
# relay (internal/dataplane/h2spec_test.go); it is not Kubernetes, but
# it is a test binary built the same way.
build_h2spec() {
	echo "k8s-bins: building h2spec v$H2SPEC_VERSION (seconds)" >&2
	mkdir -p "$h2spec_dir.tmp"
	(cd "$h2spec_dir.tmp" && GOBIN="$h2spec_dir.tmp" CGO_ENABLED=0 $GO install -trimpath -ldflags "-s -w" "github.com/summerwind/h2spec/cmd/h2spec@v$H2SPEC_VERSION+incompatible" >&2)
	rm -rf "$h2spec_dir"
	mv "$h2spec_dir.tmp" "$h2spec_dir"
}

build_helm() {
	echo "k8s-bins: building helm v$HELM_VERSION (about 2 minutes cold)" >&2
	mkdir -p "$helm_dir.tmp"
	(cd "$helm_dir.tmp" && GOBIN="$helm_dir.tmp" CGO_ENABLED=0 $GO install -trimpath -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@v$HELM_VERSION" >&2)
	rm -rf "$helm_dir"
	mv "$helm_dir.tmp" "$helm_dir"
}

build_etcd() {
	local work
	work=$(mktemp -d)
	trap 'rm -rf "$work"' RETURN
	echo "k8s-bins: building etcd v$ETCD_VERSION (about 2 minutes cold)" >&2
	cat >"$work/go.mod" <<EOF
module trellis.local/etcdbuild

go 1.26.0
EOF
	cat >"$work/main.go" <<'EOF'
// Command etcd is the upstream etcd server, built from its module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
	(
		cd "$work"
		$GO get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
		$GO mod tidy >&2
		mkdir -p "$etcd_dir.tmp"
		CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w" -o "$etcd_dir.tmp/etcd" . >&2
	)
	rm -rf "$etcd_dir"
	mv "$etcd_dir.tmp" "$etcd_dir"
}

[ -x "$etcd_dir/etcd" ] || build_etcd
[ -x "$k8s_dir/kube-apiserver" ] || build_k8s kube-apiserver
[ -x "$helm_dir/helm" ] || build_helm
[ -x "$h2spec_dir/h2spec" ] || build_h2spec
[ -x "$k8s_dir/kubectl" ] || build_k8s kubectl
echo "$CACHE"
