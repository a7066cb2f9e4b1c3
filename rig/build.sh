#!/usr/bin/env bash
# Build the test control plane's and the real node's binaries from upstream Go modules.
#
#   rig/build.sh            build whatever is missing from the cache
#   rig/build.sh --check    only verify rig/*/go.mod agree with versions.env
#   rig/build.sh --sync     rewrite the pins in rig/*/go.mod from versions.env
#                           and re-resolve them (needs the module proxy)
#   rig/build.sh --print-bin-dir
#                           print the cache directory binaries go to
#
# Everything comes from the Go module proxy (no git clones, no downloaded
# release binaries). Versions are pinned in rig/versions.env only; the go.mod
# files must agree with it and this script refuses to build if they do not.
#
# Binaries that share a module directory are built by one `go build` (they share
# most of the work); each reports its real version (-ldflags -X, see LDFLAGS).
#
# Output: ${SIMIANKUBE_CACHE:-~/.cache/simiankube}/bin/<K8S_VERSION>/ (CNI plugins in cni/)
set -euo pipefail

RIG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$RIG_DIR/versions.env"

CACHE_ROOT="${SIMIANKUBE_CACHE:-$HOME/.cache/simiankube}"
BIN_DIR="$CACHE_ROOT/bin/$K8S_VERSION"

# The staging modules (k8s.io/api, apimachinery, client-go, ...) are read
# from the pinned k8s.io/kubernetes go.mod: those it requires at v0.0.0 and
# replaces with ./staging/src/... (fetched through the module proxy).
staging_modules() {
  local gomod
  gomod="$(cd "$RIG_DIR/kubernetes" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | awk -F'"' '$2=="GoMod"{print $4}')" || die "cannot download k8s.io/kubernetes@$K8S_VERSION"
  [[ -f $gomod ]] || die "no go.mod for k8s.io/kubernetes@$K8S_VERSION"
  awk '$2=="=>" && $3 ~ /^\.\/staging\// {replaced[$1]=1}
       $2=="v0.0.0" {required[$1]=1}
       END {for (m in replaced) if (m in required) print m}' "$gomod" | sort
}

# binary name | module dir under rig/ | Go package | pinned version
# Each binary gets a stamp file <name>.version holding "<package>@<version>";
# a binary whose stamp differs from the pin is rebuilt. Module directories are
# built in this order (CoreDNS first: the coredns image is made from it).
BINARIES=(
  "coredns|coredns|github.com/coredns/coredns|$COREDNS_VERSION"
  "etcd|etcd|go.etcd.io/etcd/server/v3|$ETCD_VERSION"
  "kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|$K8S_VERSION"
  "kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|$K8S_VERSION"
  "kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|$K8S_VERSION"
  "kubectl|kubernetes|k8s.io/kubernetes/cmd/kubectl|$K8S_VERSION"
  "kubelet|kubernetes|k8s.io/kubernetes/cmd/kubelet|$K8S_VERSION"
  "kube-proxy|kubernetes|k8s.io/kubernetes/cmd/kube-proxy|$K8S_VERSION"
  "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|$KWOK_VERSION"
  "helm|helm|helm.sh/helm/v4/cmd/helm|$HELM_VERSION"
  "containerd|containerd|github.com/containerd/containerd/v2/cmd/containerd|$CONTAINERD_VERSION"
  "containerd-shim-runc-v2|containerd|github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2|$CONTAINERD_VERSION"
  "ctr|containerd|github.com/containerd/containerd/v2/cmd/ctr|$CONTAINERD_VERSION"
  "cni/bridge|cni|github.com/containernetworking/plugins/plugins/main/bridge|$CNI_PLUGINS_VERSION"
  "cni/host-local|cni|github.com/containernetworking/plugins/plugins/ipam/host-local|$CNI_PLUGINS_VERSION"
  "cni/loopback|cni|github.com/containernetworking/plugins/plugins/main/loopback|$CNI_PLUGINS_VERSION"
  "cni/portmap|cni|github.com/containernetworking/plugins/plugins/meta/portmap|$CNI_PLUGINS_VERSION"
  "kube-router|kube-router|github.com/cloudnativelabs/kube-router/v2/cmd/kube-router|$KUBE_ROUTER_VERSION"
  "crictl|cri-tools|sigs.k8s.io/cri-tools/cmd/crictl|$CRICTL_VERSION"
)

# Version stamps per module directory (what `<binary> --version` and
# `kubectl version` report; unstamped Kubernetes binaries say
# v0.0.0-master+$Format:%H$, which kubectl cannot parse).
k8s_minor=${K8S_VERSION#v*.}; k8s_minor=${k8s_minor%%.*}
k8s_major=${K8S_VERSION#v}; k8s_major=${k8s_major%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$k8s_major"
  k8s_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
declare -A LDFLAGS=(
  [kubernetes]="$k8s_ldflags"
  [containerd]="-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  [cni]="-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION"
  [kube-router]="-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
  [cri-tools]="-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
)
# containerd without the storage drivers that need cgo or kernel modules.
declare -A TAGS=([containerd]="no_btrfs no_devmapper no_zfs no_aufs")

# kwok has no built-in lifecycle stages when run on its own (kwokctl passes
# them); these are kwokctl's defaults, taken from the pinned kwok module.
KWOK_STAGES=(
  kustomize/stage/node/fast/node-initialize.yaml
  kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  kustomize/stage/pod/fast/pod-ready.yaml
  kustomize/stage/pod/fast/pod-complete.yaml
  kustomize/stage/pod/fast/pod-delete.yaml
)

# module dir | main module path | pinned version
PINS=(
  "kubernetes|k8s.io/kubernetes|$K8S_VERSION"
  "etcd|go.etcd.io/etcd/server/v3|$ETCD_VERSION"
  "kwok|sigs.k8s.io/kwok|$KWOK_VERSION"
  "helm|helm.sh/helm/v4|$HELM_VERSION"
  "coredns|github.com/coredns/coredns|$COREDNS_VERSION"
  "containerd|github.com/containerd/containerd/v2|$CONTAINERD_VERSION"
  "cni|github.com/containernetworking/plugins|$CNI_PLUGINS_VERSION"
  "kube-router|github.com/cloudnativelabs/kube-router/v2|$KUBE_ROUTER_VERSION"
  "cri-tools|sigs.k8s.io/cri-tools|$CRICTL_VERSION"
)

log() { printf '[rig/build] %s\n' "$*" >&2; }
die() { printf '[rig/build] ERROR: %s\n' "$*" >&2; exit 1; }

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--mod=mod}"
# Never let the go command fetch another toolchain behind our back.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# go.mod lines of the form "<module> <version>" in require or replace blocks.
required_version() { # gomod module
  awk -v m="$2" '($1==m && $2 ~ /^v/){print $2; exit} ($1=="require" && $2==m){print $3; exit}' "$1"
}
replaced_version() { # gomod module
  awk -v m="$2" '($1==m && $2=="=>"){print $4; exit} ($1=="replace" && $2==m && $3=="=>"){print $5; exit}' "$1"
}

check_pins() {
  local bad=0 entry dir mod ver got gomod m
  for entry in "${PINS[@]}"; do
    IFS='|' read -r dir mod ver <<<"$entry"
    gomod="$RIG_DIR/$dir/go.mod"
    [[ -f $gomod ]] || { log "missing $gomod"; bad=1; continue; }
    got="$(required_version "$gomod" "$mod")"
    if [[ $got != "$ver" ]]; then
      log "$dir/go.mod requires $mod ${got:-<none>}, versions.env says $ver"
      bad=1
    fi
  done
  gomod="$RIG_DIR/kubernetes/go.mod"
  local staging
  staging="$(staging_modules)"
  [[ -n $staging ]] || { log "found no staging modules in k8s.io/kubernetes@$K8S_VERSION"; bad=1; }
  for m in $staging; do
    got="$(replaced_version "$gomod" "$m")"
    if [[ $got != "$K8S_STAGING_VERSION" ]]; then
      log "kubernetes/go.mod replaces $m with ${got:-<nothing>}, versions.env says $K8S_STAGING_VERSION"
      bad=1
    fi
  done
  return $bad
}

sync_pins() {
  local entry dir mod ver m
  for entry in "${PINS[@]}"; do
    IFS='|' read -r dir mod ver <<<"$entry"
    log "sync $dir: $mod@$ver"
    (
      cd "$RIG_DIR/$dir"
      if [[ $dir == kubernetes ]]; then
        for m in $(staging_modules); do
          go mod edit -replace="$m=$m@$K8S_STAGING_VERSION"
        done
      fi
      go mod edit -require="$mod@$ver"
      go mod tidy
    )
  done
}

is_current() { # name pkg version
  local name=$1 stamp="$2@$3"
  [[ -x $BIN_DIR/$name && "$(cat "$BIN_DIR/$name.version" 2>/dev/null)" == "$stamp" ]] || return 1
  # Kubernetes binaries built before they were version-stamped: relink (cheap).
  if [[ $2 == k8s.io/kubernetes/* ]]; then
    local -a ask=(--version)
    [[ $name == kubectl ]] && ask=(version --client)
    "$BIN_DIR/$name" "${ask[@]}" 2>/dev/null | grep -qF "$3" || return 1
  fi
}

build_dir() { # module-dir: build its stale binaries with one `go build`
  local dir=$1 entry name d pkg version start tmp
  local -a names=() pkgs=() versions=()
  for entry in "${BINARIES[@]}"; do
    IFS='|' read -r name d pkg version <<<"$entry"
    [[ $d == "$dir" ]] || continue
    if is_current "$name" "$pkg" "$version"; then
      log "$name: cached ($BIN_DIR/$name, $pkg@$version)"
    else
      names+=("$name"); pkgs+=("$pkg"); versions+=("$version")
    fi
  done
  [[ ${#names[@]} -gt 0 ]] || return 0
  log "${names[*]}: building from rig/$dir ..."
  start=$(date +%s)
  tmp="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
  local -a out=(-o "$tmp/")
  # one package: name the file (a package path ending in /vN names the binary after vN)
  [[ ${#pkgs[@]} -eq 1 ]] && out=(-o "$tmp/$(basename "${names[0]}")")
  if ! (cd "$RIG_DIR/$dir" && nice -n 10 go build -trimpath -tags "${TAGS[$dir]:-}" \
      -ldflags="-s -w ${LDFLAGS[$dir]:-}" "${out[@]}" "${pkgs[@]}"); then
    rm -rf "$tmp"
    die "${names[*]}: go build failed (see output above)"
  fi
  local i
  for i in "${!names[@]}"; do
    mkdir -p "$(dirname "$BIN_DIR/${names[$i]}")"
    mv -f "$tmp/$(basename "${names[$i]}")" "$BIN_DIR/${names[$i]}"
    echo "${pkgs[$i]}@${versions[$i]}" >"$BIN_DIR/${names[$i]}.version"
  done
  rm -rf "$tmp"
  log "${names[*]}: built in $(($(date +%s) - start))s"
}

write_kwok_stages() {
  local out="$BIN_DIR/kwok-stages.yaml" stamp="sigs.k8s.io/kwok@$KWOK_VERSION" moddir f
  if [[ -f $out && "$(cat "$out.version" 2>/dev/null)" == "$stamp" ]]; then
    log "kwok-stages.yaml: cached"
    return 0
  fi
  moddir="$(cd "$RIG_DIR/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" \
    || die "cannot locate the sigs.k8s.io/kwok module"
  {
    echo "# kwok lifecycle stages from $stamp (kwokctl's defaults)"
    for f in "${KWOK_STAGES[@]}"; do
      [[ -f $moddir/$f ]] || die "kwok module lacks $f"
      echo "---"
      cat "$moddir/$f"
    done
  } >"$out.tmp"
  mv -f "$out.tmp" "$out"
  echo "$stamp" >"$out.version"
  log "kwok-stages.yaml: written from $stamp"
}

main() {
  case "${1:-}" in
    -h|--help) awk 'NR>1 && /^#/{sub(/^# ?/, ""); print; next} NR>1{exit}' "${BASH_SOURCE[0]}"; exit 0 ;;
    --print-bin-dir) echo "$BIN_DIR"; exit 0 ;;
    --sync) command -v go >/dev/null || die "go not found in PATH"; sync_pins; check_pins || die "pins still disagree after sync"; exit 0 ;;
    --check) check_pins || die "rig/*/go.mod disagree with rig/versions.env (run rig/build.sh --sync)"; log "pins agree with versions.env"; exit 0 ;;
    "") ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  command -v go >/dev/null || die "go not found in PATH (need Go >= 1.26)"
  check_pins || die "rig/*/go.mod disagree with rig/versions.env (run rig/build.sh --sync)"
  mkdir -p "$BIN_DIR"
  # One build at a time per cache (parallel test sessions may all ask for one).
  exec 9>"$CACHE_ROOT/build.lock"
  if ! flock -n 9; then
    log "another rig build holds $CACHE_ROOT/build.lock; waiting for it ..."
    flock 9
  fi
  log "Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION," \
    "containerd $CONTAINERD_VERSION, CNI plugins $CNI_PLUGINS_VERSION, kube-router $KUBE_ROUTER_VERSION," \
    "CoreDNS $COREDNS_VERSION, crictl $CRICTL_VERSION -> $BIN_DIR"
  local entry name dir total_start
  local -A done_dirs=()
  total_start=$(date +%s)
  for entry in "${BINARIES[@]}"; do
    IFS='|' read -r name dir _ <<<"$entry"
    [[ -n ${done_dirs[$dir]:-} ]] && continue
    done_dirs[$dir]=1
    build_dir "$dir"
  done
  write_kwok_stages
  log "all binaries ready in $(( $(date +%s) - total_start ))s: $BIN_DIR"
}

main "$@"
