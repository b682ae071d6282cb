#!/bin/sh
# `npm test [-- vitest args]`: runs vitest, then prints a plain "tests: N passed, N failed" line.
report=node_modules/.cache/vitest-report.json
rm -f "$report"
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
status=$?
node scripts/test-summary.mjs "$report"
exit $status
