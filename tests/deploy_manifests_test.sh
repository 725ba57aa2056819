#!/usr/bin/env bash
# Checks the files under deploy/ against the built binaries' --help output;
# see deploy_manifests_test.py. Needs Debian's /usr/bin/python3 with
# python3-yaml, systemd-analyze (package systemd) and OVERLORD_DATA_DIR.
set -euo pipefail
export OVERLORDD=$PWD/actors/overlordd
export OVERLORDCTL=$PWD/tools/overlordctl
export OVERLORD_PULL=$PWD/tools/overlord_pull
export DEPLOY_DIR=$PWD/deploy
exec /usr/bin/python3 tests/deploy_manifests_test.py
