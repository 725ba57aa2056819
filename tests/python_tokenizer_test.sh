#!/usr/bin/env bash
# overlord.Tokenizer (client/python) against overlord_tokenize on demo
# documents; see tests/python/tokenizer_test.py.
set -euo pipefail
source tests/e2e_lib.sh

export PYTHONPATH="$PWD/client/python"
data=$(demo_data_dir)
timeout 300 /usr/bin/python3 tests/python/tokenizer_test.py \
  --tokenize "$PWD/tools/overlord_tokenize" --data "$data"
