#!/usr/bin/env bash
# Build the container images the real node runs, without Docker.
#
#   rig/images.sh build [NAME...]   build the images (all, or the NAMEs given), or take
#                                   them from the cache, and print one line per image:
#                                   NAME<TAB>REF<TAB>ARCHIVE
#   rig/images.sh list [NAME...]    print NAME<TAB>REF for every image (or the NAMEs
#                                   given), build nothing
#   rig/images.sh buildah ARGS...   run buildah on the cache's image store (to inspect
#                                   or run an image: `rig/images.sh buildah images`)
#   rig/images.sh --print-cache-dir print the directory images are kept in
#   rig/images.sh -h|--help         this text
#
# Images:
#   nanoservice  ghcr.io/simiankube/nanoservice:<version>  nanoservice/Dockerfile
#   operator     ghcr.io/simiankube/operator:<version>     operator/Dockerfile
#   pause        registry.k8s.io/pause:3.10                rig/pause (static Go program)
#   coredns      registry.k8s.io/coredns/coredns:<COREDNS_VERSION>
#                                                          the static binary rig/build.sh builds
# <version> is the project's version from pyproject.toml (the chart's appVersion).
#
# The project's images are built from their own Dockerfiles, unchanged, with
# buildah (chroot isolation, --pull=never, build context = repository root).
# No registry is reachable, so their base image is a stand-in made here: Debian
# bookworm (+ bookworm-security) minbase with python3 (3.11, the official image's
# minor), pip and venv, `python`/`pip` on PATH and no EXTERNALLY-MANAGED marker,
# stored under the names the Dockerfiles' FROM lines use.
#
# ARCHIVE is an OCI archive `ctr -n k8s.io images import ARCHIVE` loads under REF.
# An image is rebuilt only when its inputs change: the files its Dockerfile
# COPYs, the Dockerfile itself and the base image's id (project images), the
# Go source (pause), the binary (coredns). The base is built once; delete
# <cache>/base.stamp to rebuild it.
#
# Needs (Debian): buildah, mmdebstrap, and go for the pause image.
# Environment: SIMIANKUBE_CACHE (default ~/.cache/simiankube),
#   SIMIANKUBE_IMAGES_DIR (default <cache>/images), SIMIANKUBE_IMAGES_DRIVER
#   (buildah storage driver: vfs (default; mounts nothing) or overlay (less disk)).
# Output: ${SIMIANKUBE_IMAGES_DIR:-~/.cache/simiankube/images}/
set -euo pipefail

RIG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$RIG_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$RIG_DIR/versions.env"

CACHE_DIR="${SIMIANKUBE_IMAGES_DIR:-${SIMIANKUBE_CACHE:-$HOME/.cache/simiankube}/images}"
# vfs mounts nothing on the host; overlay mounts its store and each working
# container while it builds, and leaves them if interrupted (the real node's
# teardown checks that the host's mounts are as they were). vfs costs disk and
# about twice the build time.
DRIVER="${SIMIANKUBE_IMAGES_DRIVER:-vfs}"
ARCHIVE_DIR="$CACHE_DIR/archives"

# The names the project's Dockerfiles build FROM; the stand-in base is stored
# under each of them.
BASE_NAMES=(docker.io/library/python:3.11-slim docker.io/library/python:3.11-slim-bookworm)
# The stand-in base's recipe; a change to it rebuilds the base.
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-pip,python3-venv,ca-certificates
BASE_MIRROR=http://deb.debian.org/debian
BASE_SECURITY="deb http://deb.debian.org/debian-security bookworm-security main"
# Files the slim image does without (documentation, manuals, locales).
BASE_DPKG_EXCLUDES=('/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' '/usr/share/lintian/*')

PAUSE_REF=registry.k8s.io/pause:3.10

log() { printf '[rig/images] %s\n' "$*" >&2; }
die() { printf '[rig/images] ERROR: %s\n' "$*" >&2; exit 1; }

project_version() {
  awk -F'"' '/^version *=/{print $2; exit}' "$REPO_DIR/pyproject.toml"
}

coredns_ref() {
  [[ -n ${COREDNS_VERSION:-} ]] || return 1
  echo "registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
}

# name|ref for every image, in build order.
image_table() {
  local version coredns
  version="$(project_version)"
  echo "nanoservice|ghcr.io/simiankube/nanoservice:$version"
  echo "operator|ghcr.io/simiankube/operator:$version"
  echo "pause|$PAUSE_REF"
  if coredns="$(coredns_ref)"; then echo "coredns|$coredns"; else echo "coredns|"; fi
}

need() { # command debian-package
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: install it (Debian: apt-get install -y $2)"
}

BUILDAH_STORE=(--root "$CACHE_DIR/storage-$DRIVER" --runroot "$CACHE_DIR/run-$DRIVER" --storage-driver "$DRIVER")
bah() { buildah "${BUILDAH_STORE[@]}" "$@"; }

image_id() { { bah images --noheading --no-trunc --format '{{.ID}}' "$1" 2>/dev/null || true; } | head -n1; }

sha() { sha256sum | cut -d' ' -f1; }

# Elapsed seconds since $1 (from `date +%s.%N`), for progress lines.
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}'; }

# --- the stand-in base -------------------------------------------------------

base_recipe() {
  printf '%s\n' "$BASE_SUITE" "$BASE_PACKAGES" "$BASE_MIRROR" "$BASE_SECURITY" "${BASE_DPKG_EXCLUDES[@]}" copyright \
    "${BASE_NAMES[@]}" "links python python3 pip pip3; no EXTERNALLY-MANAGED; LANG=C.UTF-8"
}

build_base() {
  local stamp="$CACHE_DIR/base.stamp" want
  want="$(base_recipe | sha)"
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && [[ -n $(image_id "${BASE_NAMES[0]}") ]]; then
    return 0
  fi
  need mmdebstrap mmdebstrap
  local start rootfs excludes=() pattern container mnt
  start="$(date +%s.%N)"
  log "base: mmdebstrap $BASE_SUITE minbase + $BASE_PACKAGES (a few minutes cold)"
  rootfs="$CACHE_DIR/base-rootfs.tar"
  for pattern in "${BASE_DPKG_EXCLUDES[@]}"; do excludes+=("--dpkgopt=path-exclude=$pattern"); done
  excludes+=("--dpkgopt=path-include=/usr/share/doc/*/copyright")  # the licences stay
  # The official image has python/pip in /usr/local/bin and lets pip install
  # into the system interpreter (no PEP 668 marker): the Dockerfiles rely on both.
  # The hooks run in mmdebstrap's shell with the rootfs as $1.
  # shellcheck disable=SC2016
  mmdebstrap --variant=minbase --include="$BASE_PACKAGES" \
    "${excludes[@]}" \
    --customize-hook='for n in python python3; do ln -sf /usr/bin/python3 "$1/usr/local/bin/$n"; done' \
    --customize-hook='for n in pip pip3; do ln -sf /usr/bin/pip3 "$1/usr/local/bin/$n"; done' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
    "$BASE_SUITE" "$rootfs" "$BASE_MIRROR" "$BASE_SECURITY" >"$CACHE_DIR/base.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/base.log" >&2; die "mmdebstrap failed (log: $CACHE_DIR/base.log; it needs the Debian mirror $BASE_MIRROR)"; }
  log "base: rootfs done in $(since "$start") s ($(du -m "$rootfs" | cut -f1) MB); importing"
  container="$(bah from scratch)"
  mnt="$(bah mount "$container")"
  tar -C "$mnt" -xf "$rootfs"
  bah umount "$container" >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.description="simiankube's stand-in for python:3.11-slim (Debian $BASE_SUITE packages)" \
    "$container"
  bah commit --quiet --rm "$container" "${BASE_NAMES[0]}" >/dev/null
  local name
  for name in "${BASE_NAMES[@]:1}"; do bah tag "${BASE_NAMES[0]}" "$name"; done
  rm -f "$rootfs"
  echo "$want" >"$stamp"
  log "base: built in $(since "$start") s: ${BASE_NAMES[*]}"
}

# --- inputs of each image ----------------------------------------------------

# The build-context paths a Dockerfile reads: what COPY/ADD copies and what a
# RUN bind-mounts from the context (--from=<stage> and from=<stage> excluded).
dockerfile_sources() {
  awk 'toupper($1)=="COPY" || toupper($1)=="ADD" {
         from=0; n=0
         for (i=2; i<=NF; i++) { if ($i ~ /^--from=/) from=1; else if ($i !~ /^--/) a[++n]=$i }
         if (!from) for (i=1; i<n; i++) print a[i]
       }
       { for (i=1; i<=NF; i++) if ($i ~ /^--mount=/ && $i ~ /type=bind/ && $i !~ /from=/) {
           k=split(substr($i, 9), kv, ",")
           for (j=1; j<=k; j++) if (kv[j] ~ /^(source|src)=/) { sub(/^[a-z]+=/, "", kv[j]); print kv[j] }
       } }' "$1" | sort -u
}

# A hash of the files under the given context paths (names and contents),
# skipping what Python leaves behind and .dockerignore also leaves out.
hash_paths() {
  (cd "$REPO_DIR" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
    | sort -z | xargs -0 sha256sum) | sha
}

inputs_of() { # name
  case $1 in
    nanoservice|operator)
      local dockerfile="$1/Dockerfile" sources
      mapfile -t sources < <(dockerfile_sources "$REPO_DIR/$dockerfile")
      { hash_paths "$dockerfile" .dockerignore "${sources[@]}"; image_id "${BASE_NAMES[0]}"; } | sha ;;
    pause) { hash_paths rig/pause; go version; } | sha ;;
    coredns) sha256sum <"$(coredns_binary)" | cut -d' ' -f1 ;;
  esac
}

coredns_binary() { echo "$("$RIG_DIR/build.sh" --print-bin-dir)/coredns"; }

# --- builders ----------------------------------------------------------------

build_project_image() { # name ref
  build_base
  local out
  # The registries' proxy CA is trusted by the host only: RUN steps (pip) need its certificates.
  if ! out="$(cd "$REPO_DIR" && bah build --isolation chroot --pull=never --layers=false --force-rm \
      -v /etc/ssl/certs:/etc/ssl/certs:ro -f "$1/Dockerfile" -t "$2" . 2>&1)"; then
    printf '%s\n' "$out" | tail -n 30 >&2
    die "buildah build of $1/Dockerfile failed (the stand-in base is stored as: ${BASE_NAMES[*]})"
  fi
  # The image this one replaced, now untagged: a vfs store would grow by a full copy per rebuild.
  bah rmi --prune >/dev/null
}

# An image holding one static binary as its entrypoint. USER empty: the pod
# decides (CoreDNS binds port 53, which needs root or NET_BIND_SERVICE).
build_binary_image() { # ref binary entrypoint-path user
  local container
  container="$(bah from scratch)"
  bah copy --quiet --chmod 0755 "$container" "$2" "$3" >/dev/null
  bah config --entrypoint "[\"$3\"]" ${4:+--user "$4"} "$container"
  bah commit --quiet --rm "$container" "$1" >/dev/null
}

build_pause() {
  need go golang-go
  local bin="$CACHE_DIR/pause"
  (cd "$RIG_DIR/pause" && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -ldflags='-s -w' -o "$bin" .) \
    || die "go build of rig/pause failed"
  build_binary_image "$PAUSE_REF" "$bin" /pause 65535:65535
}

build_coredns() { # ref
  build_binary_image "$1" "$(coredns_binary)" /coredns ""
}

# Why NAME cannot be built now (empty: it can).
missing_input() { # name ref
  [[ $1 == coredns ]] || return 0
  if [[ -z $2 ]]; then echo "COREDNS_VERSION is not set in rig/versions.env"
  elif [[ ! -x $(coredns_binary) ]]; then echo "$(coredns_binary) is not built yet (rig/build.sh)"
  fi
}

# Build NAME (or take it from the cache) and print its line.
image() { # name ref
  local name=$1 ref=$2 archive="$ARCHIVE_DIR/$1.tar" stamp="$ARCHIVE_DIR/$1.inputs" want start
  [[ $name == nanoservice || $name == operator ]] && build_base
  want="$(inputs_of "$name")"
  if [[ -f $archive && -f $stamp && $(cat "$stamp") == "$want" && -n $(image_id "$ref") ]]; then
    log "$name: cached ($ref)"
  else
    start="$(date +%s.%N)"
    log "$name: building $ref"
    case $name in
      nanoservice|operator) build_project_image "$name" "$ref" ;;
      pause) build_pause ;;
      coredns) build_coredns "$ref" ;;
    esac
    rm -f "$archive" "$stamp"
    bah push --quiet "$ref" "oci-archive:$archive.tmp:$ref" >/dev/null
    mv "$archive.tmp" "$archive"
    echo "$want" >"$stamp"
    log "$name: built in $(since "$start") s, archive $(du -m "$archive" | cut -f1) MB"
  fi
  printf '%s\t%s\t%s\n' "$name" "$ref" "$archive"
}

cmd_list() {
  local table name ref wanted
  table="$(image_table)"
  for wanted in "$@"; do
    [[ $'\n'$table == *$'\n'"$wanted|"* ]] || die "unknown image: $wanted (images: $(cut -d'|' -f1 <<<"$table" | xargs))"
  done
  while IFS='|' read -r name ref; do
    if (($# == 0)) || [[ " $* " == *" $name "* ]]; then printf '%s\t%s\n' "$name" "$ref"; fi
  done <<<"$table"
}

cmd_build() {
  need buildah buildah
  mkdir -p "$ARCHIVE_DIR"
  local -A refs=()
  local order=() name ref
  while IFS='|' read -r name ref; do refs[$name]=$ref; order+=("$name"); done < <(image_table)
  local wanted=("$@")
  ((${#wanted[@]})) || wanted=("${order[@]}")
  for name in "${wanted[@]}"; do
    [[ -v refs[$name] ]] || die "unknown image: $name (images: ${order[*]})"
  done
  exec 9>"$CACHE_DIR/build.lock"
  flock -n 9 || { log "another rig/images.sh holds $CACHE_DIR/build.lock; waiting"; flock 9; }
  local skipped=() reason
  for name in "${wanted[@]}"; do
    reason="$(missing_input "$name" "${refs[$name]}")"
    if [[ -n $reason ]]; then
      log "$name: skipped, $reason"
      skipped+=("$name")
    else
      image "$name" "${refs[$name]}"
    fi
  done
  ((${#skipped[@]} == 0)) || log "not built: ${skipped[*]} (see above)"
}

main() {
  mkdir -p "$CACHE_DIR"
  case ${1:-} in
    build) shift; cmd_build "$@" ;;
    list) shift; cmd_list "$@" ;;
    buildah) shift; need buildah buildah; exec buildah "${BUILDAH_STORE[@]}" "$@" ;;
    --print-cache-dir) echo "$CACHE_DIR" ;;
    -h|--help) awk 'NR>1 && /^#/{sub(/^# ?/, ""); print; next} NR>1{exit}' "${BASH_SOURCE[0]}" ;;
    "") die "no command given (try --help)" ;;
    *) die "unknown command: $1 (try --help)" ;;
  esac
}

main "$@"; exit  # on one line: bash stops reading here, so editing this file never breaks a running build
