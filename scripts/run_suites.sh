#!/bin/sh
# run_suites.sh: runs test suites and sums their "N passed, N failed" lines.
# Each argument is name=command.  A suite that crashes or prints no summary
# counts as one failure.  Ends with "total: N passed, N failed"; exits 1 on
# any failure.
set -u
passed=0 failed=0 report=""
for arg in "$@"; do
  name=${arg%%=*} cmd=${arg#*=}
  out=$(mktemp)
  echo "-- $name: $cmd"
  sh -c "$cmd" >"$out" 2>&1
  rc=$?
  cat "$out"
  line=$(grep -E '(^|: )[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
  rm -f "$out"
  if [ -z "$line" ]; then
    p=0 f=1
    echo "-- $name: no summary line (exit status $rc): counted as 1 failure"
  else
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    p=$(echo "$line" | sed -E 's/^(.*[^0-9])?([0-9]+) passed.*/\2/')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
      f=1
      echo "-- $name: exit status $rc with no failed test: counted as 1 failure"
    fi
  fi
  passed=$((passed + p)) failed=$((failed + f))
  report="$report
  $name: $p passed, $f failed"
done
echo "-- summary:$report"
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
