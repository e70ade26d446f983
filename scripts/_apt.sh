# Sourced by install_chromium.sh and install_compose.sh: install Debian packages with apt-get
# where it can run (as root, or through sudo without a password); elsewhere say so and go on.
#
# apt_install TAG WHY PACKAGE...
#   TAG   the calling script's name, for messages
#   WHY   what happens without the packages (said when apt-get cannot run here)
# Always returns 0: a machine without apt-get still runs the rest of the test suite, and the
# tests that need the packages skip (apt_can_run in tests/report/test_report_browser.py is
# the same rule as apt_can_run here).

apt_can_run() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [ "$(id -u)" -eq 0 ] && return 0
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null
}

apt_install() {
  local tag=$1 why=$2
  shift 2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[$tag] skipped: apt-get is not available on this machine, so the Debian" \
         "package(s) $* cannot be installed; $why" >&2
    return 0
  fi
  if ! apt_can_run; then
    echo "[$tag] skipped: installing $* with apt-get needs root or sudo without a" \
         "password; $why" >&2
    return 0
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "[$tag] installing the Debian package(s) $* (apt-get)"
  local log
  log=$(mktemp)
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends "$@"; } >"$log" 2>&1; then
    echo "[$tag] apt-get could not install $*; its last lines:" >&2
    tail -n 5 "$log" >&2
  fi
  rm -f "$log"
  return 0
}
