#!/usr/bin/env bash
# Everything `make run` / `make test` need on a fresh Debian machine, checked
# offline first and installed only when missing:
#
#  * the pinned Rust toolchain (rust-toolchain.toml) with both bare-metal
#    targets and llvm-tools (llvm-objcopy makes the arm64 `Image`).  A machine
#    may already have a toolchain of that name without the targets (for
#    example a link to `stable`), and rustup's automatic installation may be
#    switched off (RUSTUP_AUTO_INSTALL=0), so nothing would install them on
#    first use: we look in the active sysroot and call rustup ourselves;
#  * QEMU for both architectures, the host C compiler with the static C
#    library, and Debian's aarch64 cross compiler with its C library (the
#    `libc` suite builds tests/c/libc-tests.c for both guests).
#
# `--no-install-recommends`: a plain QEMU install fails on some machines
# because of a qemu-utils version conflict.  Exit status 1 with a message
# naming what could not be installed.
set -u
cd "$(dirname "$0")/.."

channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
targets="x86_64-unknown-none aarch64-unknown-none"
problems=""

sysroot() { rustc --print sysroot 2>/dev/null; }

# What the active toolchain lacks (empty when complete).
rust_missing() {
    local root m=""
    root=$(sysroot) || { echo "toolchain"; return; }
    for t in $targets; do
        [ -d "$root/lib/rustlib/$t/lib" ] || m="$m $t"
    done
    ls "$root"/lib/rustlib/*/bin/llvm-objcopy >/dev/null 2>&1 || m="$m llvm-tools"
    echo "$m"
}

missing=$(rust_missing)
if [ -n "$missing" ]; then
    if ! command -v rustup >/dev/null; then
        problems="$problems; Rust $channel lacks:$missing and there is no rustup (install rustup from https://rustup.rs)"
    else
        echo "deps: Rust $channel lacks:$missing; installing"
        # Reads rust-toolchain.toml: the channel, its targets and components.
        rustup toolchain install >/dev/null 2>&1 || true
        missing=$(rust_missing)
        if [ -n "$missing" ]; then
            # A toolchain that already existed (or a linked one) is not
            # completed by `toolchain install`: add the pieces by name.
            rustup target add --toolchain "$channel" $targets >/dev/null 2>&1 || true
            rustup component add --toolchain "$channel" llvm-tools rust-src >/dev/null 2>&1 || true
            missing=$(rust_missing)
        fi
        [ -z "$missing" ] || problems="$problems; Rust $channel still lacks:$missing (try: rustup target add --toolchain $channel $targets; rustup component add --toolchain $channel llvm-tools)"
    fi
fi

# Debian packages, each named by what must exist afterwards.
pkgs=""
need() { [ -e "$2" ] || command -v "$2" >/dev/null 2>&1 || pkgs="$pkgs $1"; }
need qemu-system-x86 qemu-system-x86_64
need qemu-system-arm qemu-system-aarch64
need gcc cc
if [ "$(uname -m)" = x86_64 ]; then
    need libc6-dev /usr/lib/x86_64-linux-gnu/libc.a
    need gcc-aarch64-linux-gnu aarch64-linux-gnu-gcc
    need libc6-dev-arm64-cross /usr/aarch64-linux-gnu/lib/libc.a
fi
if [ -n "$pkgs" ]; then
    echo "deps: installing$pkgs"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    if ! { $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $pkgs; } >/tmp/mthp-deps-apt.log 2>&1; then
        problems="$problems; apt-get could not install$pkgs (log: /tmp/mthp-deps-apt.log)"
    fi
fi

if [ -n "$problems" ]; then
    echo "deps: FAILED${problems}" >&2
    exit 1
fi
