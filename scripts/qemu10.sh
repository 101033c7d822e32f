#!/usr/bin/env bash
# QEMU 10 (Debian bookworm-backports) for the TLB-model plugin only
# (docs/tlb-model.md).  The system QEMU 7.2 stays what `make test` uses: its
# plugin API cannot read guest registers or memory, which a page-table walk
# needs.  Nothing is installed system-wide: a private apt configuration that
# knows only bookworm-backports downloads the .debs, `dpkg -x` unpacks them
# into $QEMU10_DIR (default target/qemu10). The plugin needs no C header:
# the `qemu-plugin` crate carries its own bindings.  Idempotent; checked offline
# first.  Prints the directory on success.
set -eu
cd "$(dirname "$0")/.."
dir=${QEMU10_DIR:-$PWD/target/qemu10}
pkgs="qemu-system-x86 qemu-system-arm qemu-system-common qemu-system-data"

ok() {
    [ -x "$dir/root/usr/bin/qemu-system-x86_64" ] &&
        [ -x "$dir/root/usr/bin/qemu-system-aarch64" ]
}
if ok; then echo "$dir"; exit 0; fi

mkdir -p "$dir"/apt/lists/partial "$dir"/apt/cache/archives/partial "$dir"/debs "$dir"/root
cat >"$dir/apt/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
SRC
opts=(-o Dir::Etc::SourceList="$dir/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o Dir::State::Lists="$dir/apt/lists" -o Dir::Cache="$dir/apt/cache"
      -o APT::Default-Release=bookworm-backports -o Debug::NoLocking=1)
apt-get "${opts[@]}" update >/dev/null
(cd "$dir/debs" && for p in $pkgs; do
    ls ./"${p}"_*.deb >/dev/null 2>&1 || apt-get "${opts[@]}" download "$p/bookworm-backports" >/dev/null
done)
for d in "$dir"/debs/*.deb; do dpkg -x "$d" "$dir/root"; done

ok || { echo "qemu10: incomplete in $dir" >&2; exit 1; }
echo "$dir"
