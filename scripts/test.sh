#!/usr/bin/env bash
# The one test command of ucma-rs (README "Test"): installs what the tests need when it is
# missing, then runs formatting, lints, every test (unit, integration, conformance,
# property, fuzz-corpus smoke, interop with real peers) and the doc build.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive as real peers (openssl s_server/s_client, two Kamailio
# front ends with TLS and presence modules, SIPp). Installed only when missing.
packages=()
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v kamailio >/dev/null 2>&1 || packages+=(kamailio)
dpkg -s kamailio-tls-modules >/dev/null 2>&1 || packages+=(kamailio-tls-modules)
dpkg -s kamailio-presence-modules >/dev/null 2>&1 || packages+=(kamailio-presence-modules)
command -v sipp >/dev/null 2>&1 || packages+=(sip-tester)
if ((${#packages[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: need root to install: ${packages[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}"
fi

# Toolchain components for the checks.
if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

set -x
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The examples as a user builds them (`target/debug/examples/NAME`): tests/examples_interop.rs
# runs these binaries. Built here, they share this build's dependencies; without them that
# test builds its own copy of the workspace in a second target directory.
cargo build --workspace --examples
cargo test --workspace --all-targets
cargo test --workspace --doc
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
