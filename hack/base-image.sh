#!/usr/bin/env bash
# Builds the Debian bookworm base image that the Dockerfile starts FROM, out
# of Debian's own packages, for machines that cannot pull from a registry.
# It runs debootstrap --variant=minbase against the mirror that the host's
# apt uses, trims documentation and apt caches, and imports the tree with
# `docker import`. Does nothing when the image already exists; set
# MEMSTRESS_BASE_REBUILD=1 to build it again.
#
#   hack/base-image.sh [IMAGE]      default IMAGE: memstress/debian:bookworm
set -euo pipefail

image=${1:-${BASE_IMAGE:-memstress/debian:bookworm}}
suite=bookworm

log() {
    printf '[base-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# Prints "URI SUITE" for every enabled `deb` source of the host's apt, from
# both the one-line format (*.list) and the deb822 format (*.sources).
host_apt_sources() {
    local files=()
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    shopt -s nullglob
    files+=(/etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    [[ ${#files[@]} -gt 0 ]] || return 0
    awk '
        # One-line format: deb [options] URI SUITE COMPONENT...
        FILENAME ~ /\.list$/ && $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            print $i, $(i + 1)
            next
        }
        # deb822 format: one stanza per paragraph, possibly several URIs
        # and suites each, and Enabled: no switches a stanza off.
        function flush(   u, s, uri_count, suite_count, uri_list, suite_list) {
            if (types ~ /(^| )deb( |$)/ && enabled != "no") {
                uri_count = split(uris, uri_list, " ")
                suite_count = split(suites, suite_list, " ")
                for (u = 1; u <= uri_count; u++)
                    for (s = 1; s <= suite_count; s++)
                        print uri_list[u], suite_list[s]
            }
            types = uris = suites = enabled = ""
        }
        FNR == 1 { flush() }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^#/) next
            field = tolower($1)
            value = $0
            sub(/^[^:]*:[ \t]*/, "", value)
            if (field == "types:") types = value
            else if (field == "uris:") uris = value
            else if (field == "suites:") suites = value
            else if (field == "enabled:") enabled = tolower(value)
        }
        END { flush() }
    ' "${files[@]}"
}

# Prints the first URI that the host's apt uses for the given suite.
host_mirror_for() {
    host_apt_sources | awk -v suite="$1" '$2 == suite { print $1; exit }'
}

# Stops dpkg from installing documentation, manual pages and translations
# into the image, and removes those that debootstrap already unpacked.
# Copyright files stay, because the licenses require shipping them.
trim_rootfs() {
    local root=$1
    cat >"$root/etc/dpkg/dpkg.cfg.d/memstress-slim" <<'EOF'
# Keeps container images small: no docs, manual pages or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/lintian/"*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
        -exec rm -rf {} +

    rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin \
        "$root/var/cache/apt/archives/"*.deb "$root/var/log/"*.log \
        "$root/var/cache/debconf/"*-old "$root/var/lib/dpkg/"*-old
    # The engine supplies these at run time.
    : >"$root/etc/hostname"
    : >"$root/etc/resolv.conf"
}

# Writes the image's apt sources: the host's mirrors for the release, its
# updates and its security suite.
write_apt_sources() {
    local root=$1 mirror=$2 security_mirror=$3
    rm -f "$root/etc/apt/sources.list"
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\n' "$mirror" "$suite" "$suite"
        printf 'Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        if [[ -n "$security_mirror" ]]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\n' "$security_mirror" "$suite"
            printf 'Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        fi
    } >"$root/etc/apt/sources.list.d/debian.sources"
}

rootfs=
cleanup() {
    local mount_point mount_points
    [[ -n "$rootfs" && -d "$rootfs" ]] || return 0
    # debootstrap mounts /proc and /sys inside the tree and may leave them
    # mounted when it fails, so unmount before deleting anything.
    mount_points=$(findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r || true)
    for mount_point in $mount_points; do
        umount -l "$mount_point" || true
    done
    rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

if [[ "${MEMSTRESS_BASE_REBUILD:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    log "$image exists; set MEMSTRESS_BASE_REBUILD=1 to build it again"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root; run this script as root"
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi

mirror=$(host_mirror_for "$suite")
[[ -n "$mirror" ]] || die "the host's apt has no source for $suite in /etc/apt/sources.list or /etc/apt/sources.list.d; set one up, or build on a bookworm host"
security_mirror=$(host_mirror_for "$suite-security")
[[ -n "$security_mirror" ]] || log "note: the host's apt has no $suite-security source, so the image gets none"

# /var/tmp, because debootstrap needs a file system that allows device
# nodes and executables, which a tmpfs /tmp may not.
rootfs=$(mktemp -d /var/tmp/memstress-rootfs.XXXXXX)
log "debootstrap --variant=minbase $suite from $mirror into $rootfs"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2
    die "debootstrap failed; the full log is $rootfs.log"
}
rm -f "$rootfs.log"

write_apt_sources "$rootfs" "$mirror" "$security_mirror"
trim_rootfs "$rootfs"

# NEEDSWORK: the image is not reproducible. debootstrap installs whatever
# package versions the mirror serves today, and the tar stream carries
# today's file times, so two runs give different image IDs and the build
# cache of every image on top starts over.
log "importing the tree as $image"
tar --numeric-owner --xattrs -C "$rootfs" -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $suite from $mirror" \
        - "$image" >/dev/null
log "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
