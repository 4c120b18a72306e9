# Shared by scripts/serve and scripts/test: make .venv if missing and install
# the project into it (editable) with the extras named in $1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
extras="${1:-}"
stamp="$venv/.tritonlite-installed${extras:+-$extras}"
# Reinstall when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q -e "$root${extras:+[$extras]}"
  touch "$stamp"
fi
