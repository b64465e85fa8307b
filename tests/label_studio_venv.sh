#!/usr/bin/env bash
# Create (once) the separate virtual environment that runs a real Label Studio server
# for tests/training/test_label_studio.py, and print the path to export as FIC_LABEL_STUDIO_VENV.
#
#   export FIC_LABEL_STUDIO_VENV="$(bash tests/label_studio_venv.sh)"
#   python -m pytest -m labelstudio
#
# Label Studio pins older numpy and pyarrow and pulls about 120 packages (Django, boto3, ...),
# so it cannot share the project's environment. The venv lives outside the checkout and is
# reused when it already holds the wanted version, so a second run takes a second.
set -euo pipefail

VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
VENV="${1:-${FIC_LABEL_STUDIO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/future-industry-classifier/label-studio-$VERSION}}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('label-studio') != '$VERSION')" 2>/dev/null; then
  echo "$VENV"
  exit 0
fi

echo "creating the Label Studio $VERSION venv in $VENV (a few minutes, once)" >&2
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "label-studio==$VERSION" >&2
echo "$VENV"
