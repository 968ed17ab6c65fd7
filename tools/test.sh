#!/usr/bin/env bash
# Run the whole test suite: install the kit with its dev extras into .venv (pinned by constraints-ci.txt),
# check that the library matches the notebooks, execute every notebook in quick mode, then run pytest
# and the nbval output checks.
#
# Needs TRANSFER_KIT_DATA pointing at the course datasets (hymenoptera_data/, fsdd/,
# sentiment_labelled_sentences/); tests that need them fail with a message when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${TRANSFER_KIT_VENV:-.venv}
if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -c constraints-ci.txt -e ".[dev]"
export PATH="$PWD/$VENV/bin:$PATH"
export TOKENIZERS_PARALLELISM=false
export MPLBACKEND=Agg

if [[ -z ${TRANSFER_KIT_DATA:-} ]]; then
    echo "WARNING: TRANSFER_KIT_DATA is not set; tests that need the course datasets will fail." >&2
fi

echo "== library matches notebooks (nbdev-export)"
nbdev-export
if ! git diff --quiet -- transfer_kit; then
    git --no-pager diff --stat -- transfer_kit
    echo "transfer_kit/ differs from what the notebooks export: run nbdev-export and commit." >&2
    exit 1
fi

echo "== notebooks in quick mode (nbdev-test)"
start=$(date +%s)
nbdev-test --n-workers 2 --timing --do-print
nbdev-test index.ipynb --do-print
echo "notebooks took $(( $(date +%s) - start )) s"

echo "== pytest and nbval output checks"
python -m pytest tests -q -p no:cacheprovider
python tools/run_nbval.py nbs/api/[0-9]*.ipynb index.ipynb -- -q
