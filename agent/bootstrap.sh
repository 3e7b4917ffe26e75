# Sourced by agent/demo and tests/run: installs apt packages that are missing, then a venv holding the agent
# with its locked dependencies. Sets VENV. Works as root or through sudo on Debian 12 (bookworm) and 13 (trixie).
# shellcheck shell=bash

fieldstation_bootstrap() {
  local sudo="" missing=() p
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
  echo "== installing the agent and its locked dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade 'pip>=25.1'
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c agent/requirements.lock -e 'agent[all]' \
    --group agent/pyproject.toml:dev
}
