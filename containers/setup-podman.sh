#!/usr/bin/env bash
# Podman on a Debian machine with no image registry (README "Run the full stack"): installs the engine,
# configures it for this kernel, and imports Debian base images built with mmdebstrap.
# Idempotent: each step is skipped when already done. Needs root (apt-get, /etc/containers).
#   containers/setup-podman.sh            # engine, containers.conf, localhost/debian-base:{bookworm,trixie}
# The rootfs tarballs are cached in BASE_CACHE (default /var/cache/shop-containers) so a fresh
# clone on the same machine imports in seconds; a fresh machine builds them (~20 s each).
set -euo pipefail
BASE_CACHE=${BASE_CACHE:-/var/cache/shop-containers}
SUITES=${SUITES:-"bookworm trixie"}

packages=()
for pair in podman:podman runc:runc iptables:iptables mmdebstrap:mmdebstrap; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || packages+=("${pair#*:}")
done
[[ -x /usr/lib/podman/netavark ]] || packages+=(netavark)
[[ -x /usr/lib/podman/aardvark-dns ]] || packages+=(aardvark-dns)
if ((${#packages[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# crun fails on this kernel's hybrid cgroups; Podman's default ulimits exceed the allowed maximum;
# netavark gives containers on one network each other's names (aardvark-dns).
conf=/etc/containers/containers.conf
if ! grep -qs '^# shop: podman settings' "$conf"; then
  mkdir -p /etc/containers
  cat >>"$conf" <<'CONF'
# shop: podman settings (containers/setup-podman.sh)
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
CONF
fi

# Base images without a registry: a minimal Debian root filesystem, imported.
# The machine's own certificate authorities (an egress proxy's, say) are trusted inside too, so pip
# reaches PyPI from a build as it does from the host; the tarball's name follows them.
hooks=(--customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" > "$1/etc/pip.conf"')
# Small images: no manuals, translations or docs (but the licences), in the base and in every
# package a build installs on it (the options stay in /etc/dpkg/dpkg.cfg.d).
slim=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/info/*')
local_cas=$(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | sort)
if [[ -n $local_cas ]]; then
  hooks+=(--customize-hook='copy-in /usr/local/share/ca-certificates /usr/local/share'
    --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null')
fi
cas=$( (printf '%s\n' "${slim[@]}" "${hooks[@]}"; printf '%s' "$local_cas" | xargs -r cat) | sha256sum | cut -c1-12)
mkdir -p "$BASE_CACHE"
for suite in $SUITES; do
  image=localhost/debian-base:$suite
  podman image exists "$image" && continue
  tarball=$BASE_CACHE/debian-$suite-minbase-$cas.tar
  if [[ ! -s $tarball ]]; then
    mmdebstrap --quiet --format=tar --variant=minbase --include=ca-certificates "${slim[@]}" "${hooks[@]}" \
      "$suite" "$tarball.part" http://deb.debian.org/debian
    mv "$tarball.part" "$tarball"
  fi
  podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
  echo "imported $image"
done
