#!/usr/bin/env bash
# Mutation score with mutmut (docs/MUTATION.md); a measurement, not part of CI.
#   bash tests/mutation/run.sh MODULE[,MODULE...] TEST_FILE...
#   e.g. bash tests/mutation/run.sh runtime/stop.py tests/runtime/test_stop.py
# mutmut imports the code it mutates by its file path, so the tree is copied, outside the
# checkout, into the package layout (`llmc/runtime/stop.py`) with a [mutmut] section in that
# copy's setup.cfg: only MODULEs are mutated and only the TEST_FILEs run. MUTATION_SECONDS
# bounds the run (default 1800); mutants it did not reach are counted as "not checked".
# Prints killed/total per file and the mutants not killed (`mutmut show NAME` in the copy
# shows one's diff).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
modules=$1; shift
work=${MUTATION_DIR:-/tmp/llmc-mutation}/$(echo "${modules//.py/}" | tr '/*,' '_x+')
rm -rf "$work" && mkdir -p "$work/llmc"
cp -r "$root/llmc_pkg/." "$work/llmc/"
for part in aot kernels artifacts runtime cli; do cp -r "$root/$part" "$work/llmc/$part"; done
cp -r "$root/tests" "$root/examples" "$work/"
find "$work" -name __pycache__ -prune -exec rm -rf {} +
{
  echo "[mutmut]"
  echo "source_paths = llmc"
  echo "only_mutate ="
  tr , '\n' <<< "$modules" | sed 's|^|    llmc/|'
  echo "pytest_add_cli_args = -p no:cacheprovider -q"
  echo "timeout_multiplier = ${MUTATION_TIMEOUT_MULTIPLIER:-6}"
  echo "process_isolation = fork"
  echo "pytest_add_cli_args_test_selection ="
  printf '    %s\n' "$@"
} > "$work/setup.cfg"
# each mutant runs in a fork of the process that ran the tests once; torch's thread pool does not
# survive a fork (the child hangs), so torch runs on one thread
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd "$work"
timeout "${MUTATION_SECONDS:-1800}" mutmut run --max-children "${MUTATION_JOBS:-1}" > mutmut-run.log 2>&1 || true
mutmut results --all true 2>/dev/null > results.txt
python - <<'PY'
import collections, re
counts = collections.defaultdict(collections.Counter)
for line in open("results.txt"):
    name, _, status = line.strip().rpartition(": ")
    counts[re.split(r"\.xǁ|\.x_", name)[0]][status] += 1
for module, c in sorted(counts.items()):
    checked = sum(v for k, v in c.items() if k != "not checked")
    score = f"{100 * c['killed'] / checked:.0f}%" if checked else "-"
    print(f"{module}: {c['killed']} killed of {checked} checked ({score}); "
          + ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != "killed"))
PY
grep -v ": killed$\|: not checked$" results.txt || true
