# Shared by scripts/serve and scripts/test: make .venv if missing and install
# the project into it (editable) with the extras named in $1.
#
# `_venv.sh --numpy1` (after .venv has the test extras) also makes .venv-np1:
# a venv of the same Python whose own site-packages holds only numpy<2, and
# which then sees .venv's site-packages (a .pth file) for everything else. One
# small wheel instead of a second copy of the test dependencies; numpy 1.x
# shadows .venv's 2.x because a venv's own site-packages comes first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
if [ "${1:-}" = "--numpy1" ]; then
  np1="$root/.venv-np1"
  np1_stamp="$np1/.tritonlite-numpy1"
  if [ ! -f "$np1_stamp" ]; then
    rm -rf "$np1"
    "$venv/bin/python" -m venv "$np1"
    "$np1/bin/python" -m pip install -q "numpy<2"
    site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
    printf 'import site; site.addsitedir(%s)\n' "'$(site_of "$venv/bin/python")'" \
      > "$(site_of "$np1/bin/python")/zz_tritonlite_main_venv.pth"
    touch "$np1_stamp"
  fi
  return 0 2>/dev/null || exit 0
fi
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
# Bytecode for the project's own modules. The editable install leaves them as
# sources, and where PYTHONDONTWRITEBYTECODE is set nothing caches them: every
# server process and every worker would compile them again at each start
# (~0.15 s of CPU for the frontend, docs/performance.md "Footprint").
# compileall rewrites only what changed; a stale .pyc is never used (mtime check).
"$venv/bin/python" -m compileall -q "$root/tritonlite" "$root/workers" "$root/shm" "$root/protos" >/dev/null
