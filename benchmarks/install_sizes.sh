#!/usr/bin/env bash
# Installed size of each README install line, in fresh venvs, from the public index alone
# (--isolated ignores this machine's pip configuration). Prints one line per extra.
set -u
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for extra in ${EXTRAS:-cuda cuda,serve sign build}; do
  python3 -m venv "$work/$extra"
  start=$(date +%s)
  "$work/$extra/bin/pip" install --isolated -q -c constraints.txt ".[$extra]" >"$work/$extra.log" 2>&1
  rc=$?
  site=$("$work/$extra/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "[$extra] rc=$rc $(( $(date +%s) - start )) s, $(du -sm "$site" | cut -f1) MB"
  rm -rf "${work:?}/$extra"
done
