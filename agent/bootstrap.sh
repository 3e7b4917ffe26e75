# Sourced by agent/demo and tests/run: installs apt packages that are missing, then a venv holding the agent
# with its locked dependencies. Sets VENV. Works as root or through sudo on Debian 12 (bookworm) and 13 (trixie).
#   fieldstation_bootstrap APT-PACKAGE...          every extra (agent[all]) and the dev group: what the tests run
#   fieldstation_bootstrap --demo APT-PACKAGE...   the agent and its core dependencies only: what the demo runs
# pip runs only when the venv's stamp (sha256 of requirements.lock and pyproject.toml, and what was installed)
# differs: a second start with the same lock costs no pip work. The editable install follows src/ by itself;
# removing the stamp ($VENV/.fieldstation-installed) forces a pip run.
# shellcheck shell=bash

fieldstation_bootstrap() {
  local mode=test sudo="" missing=() p
  if [ "${1:-}" = --demo ]; then
    mode=demo
    shift
  fi
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  for p in python3 python3-venv "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  PYTHON=${PYTHON:-python3}
  local version
  version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  VENV=${FIELDSTATION_VENV:-.venv-$version}
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV with $PYTHON ($version)"
    "$PYTHON" -m venv "$VENV"
  fi

  local lock stamp="$VENV/.fieldstation-installed" installed=""
  lock=$(cat agent/requirements.lock agent/pyproject.toml | sha256sum | cut -d' ' -f1)
  [ -r "$stamp" ] && installed=$(cat "$stamp")
  # A test install holds everything the demo runs; a demo install lacks the extras and the dev tools.
  if [ "$installed" = "$lock test" ] || [ "$installed" = "$lock $mode" ]; then
    echo "== $VENV is up to date with agent/requirements.lock: no pip work"
    return 0
  fi
  rm -f "$stamp"  # a pip run that fails half-way leaves no stamp behind, so the next start tries again
  if [ "$mode" = demo ]; then
    echo "== installing the agent and its core dependencies (agent/requirements.lock) into $VENV (once)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c agent/requirements.lock -e agent
  else
    echo "== installing the agent, every extra and the dev tools (agent/requirements.lock) into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade 'pip>=25.1'  # --group needs 25.1
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c agent/requirements.lock -e 'agent[all]' \
      --group agent/pyproject.toml:dev
  fi
  echo "$lock $mode" >"$stamp"
}
