// Prints one plain closing line ("tests: N passed, N failed, N skipped") from vitest's JSON report,
// so any reader of the log sees the count without knowing vitest's own format.
import { readFileSync } from 'node:fs';

const file = process.argv[2] ?? 'node_modules/.cache/vitest-report.json';
try {
  const report = JSON.parse(readFileSync(file, 'utf8'));
  const skipped = report.numPendingTests + report.numTodoTests;
  console.log(`tests: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${skipped} skipped`);
} catch (error) {
  console.log(`tests: no report (${error.message})`);
}
