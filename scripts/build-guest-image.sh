#!/usr/bin/env bash
# Builds the Linux guest image for nuvem-vmm tests from Debian packages, without installing
# anything on the host: Debian's stock 6.1 kernel (linux-image-amd64 via `apt-get download` +
# `dpkg-deb -x`) and a busybox-static initramfs whose /init prints a GUEST-UP marker and then
# reboots (or powers off with nuvem.exit=poweroff on the kernel command line).
#
# usage: scripts/build-guest-image.sh [OUTDIR]      (default: build/guest-image; never in git)
# Output: OUTDIR/vmlinuz (bzImage), OUTDIR/vmlinux (uncompressed ELF, for PVH entry),
#         OUTDIR/initramfs.cpio (uncompressed newc), OUTDIR/config, OUTDIR/VERSION.
# Needs: apt-get (network), dpkg-deb, python3, busybox-static (/bin/busybox).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${NUVEM_GUEST_IMAGE_DIR:-$here/build/guest-image}}
mkdir -p "$out"
out=$(cd "$out" && pwd)

busybox=${BUSYBOX:-/bin/busybox}
if [ "$("$busybox" echo busybox-ok 2>/dev/null)" != busybox-ok ]; then
    echo "build-guest-image: $busybox is not busybox (install busybox-static)" >&2
    exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
    echo "build-guest-image: $busybox is dynamically linked (install busybox-static)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -s "$out/vmlinuz" ] || [ "${FORCE:-0}" = 1 ]; then
    # linux-image-amd64 is a metapackage: download the versioned image it depends on.
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        echo "build-guest-image: cannot resolve linux-image-amd64 (run apt-get update?)" >&2
        exit 1
    fi
    echo "build-guest-image: downloading $pkg"
    (cd "$work" && { apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed'; true; })
    debs=("$work"/*.deb)
    deb=${debs[0]}
    [ -f "$deb" ] || { echo "build-guest-image: apt-get download $pkg failed" >&2; exit 1; }
    mkdir "$work/root"
    dpkg-deb -x "$deb" "$work/root"
    kimgs=("$work"/root/boot/vmlinuz-*)
    kimg=${kimgs[0]}
    cp "$kimg" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
    cp "$work"/root/boot/config-* "$out/config"
    basename "$kimg" | sed 's/^vmlinuz-//' > "$out/VERSION"
    rm -f "$out/vmlinux"
fi

if [ ! -s "$out/vmlinux" ]; then
    # The uncompressed kernel carries the PVH entry note; unwrap it the way the kernel's
    # scripts/extract-vmlinux does: find the compressed payload and decompress it.
    python3 - "$out/vmlinuz" "$out/vmlinux" <<'EOF'
import gzip, lzma, sys, zlib
data = open(sys.argv[1], "rb").read()
def try_xz(off):
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    return d.decompress(data[off:])
def try_gzip(off):
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return d.decompress(data[off:])
for magic, fn in ((b"\xfd7zXZ\x00", try_xz), (b"\x1f\x8b\x08", try_gzip)):
    off = data.find(magic)
    while off >= 0:
        try:
            out = fn(off)
            if out[:4] == b"\x7fELF":
                open(sys.argv[2] + ".tmp", "wb").write(out)
                import os
                os.rename(sys.argv[2] + ".tmp", sys.argv[2])
                sys.exit(0)
        except (lzma.LZMAError, zlib.error, EOFError):
            pass
        off = data.find(magic, off + 1)
sys.exit("build-guest-image: no compressed ELF payload found in " + sys.argv[1])
EOF
fi

# initramfs: uncompressed newc cpio written here (no cpio tool, no root needed for /dev nodes).
python3 - "$busybox" "$out/initramfs.cpio" <<'EOF'
import os, sys, time
busybox, dest = sys.argv[1], sys.argv[2]
init = b"""#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
up=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
cpus=$(/bin/busybox grep -c ^processor /proc/cpuinfo)
mem=$(/bin/busybox grep MemTotal /proc/meminfo | /bin/busybox tr -s ' ')
echo "GUEST-UP uptime=$up cpus=$cpus $mem"
case " $(/bin/busybox cat /proc/cmdline) " in
*" nuvem.exit=poweroff "*) /bin/busybox poweroff -f ;;
*" nuvem.exit=shell "*) exec /bin/busybox sh ;;
*) /bin/busybox reboot -f ;;
esac
"""
entries = []  # (name, mode, data, rdev)
for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc"):
    entries.append((d, 0o040755, b"", (0, 0)))
entries.append(("dev/console", 0o020600, b"", (5, 1)))
entries.append(("dev/ttyS0", 0o020600, b"", (4, 64)))
entries.append(("bin/busybox", 0o100755, open(busybox, "rb").read(), (0, 0)))
entries.append(("bin/sh", 0o120777, b"busybox", (0, 0)))
entries.append(("init", 0o100755, init, (0, 0)))
now = int(time.time())
buf = bytearray()
def pad4():
    while len(buf) % 4:
        buf.append(0)
for ino, (name, mode, data, (maj, mnr)) in enumerate(entries + [("TRAILER!!!", 0, b"", (0, 0))], 1):
    nb = name.encode() + b"\0"
    hdr = "070701" + "".join("%08x" % v for v in (
        ino, mode, 0, 0, 1, now, len(data), 0, 0, maj, mnr, len(nb), 0))
    buf += hdr.encode() + nb
    pad4()
    buf += data
    pad4()
with open(dest + ".tmp", "wb") as f:
    f.write(buf)
os.rename(dest + ".tmp", dest)
EOF

echo "build-guest-image: $(cat "$out/VERSION" 2>/dev/null) in $out:"
ls -la "$out"
