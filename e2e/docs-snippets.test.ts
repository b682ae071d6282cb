/**
 * The `ts` code blocks of the README and the plugin guides are programs: this compiles them with
 * strict tsc and runs each with node (tsx, sources through the `@rjob/source` condition), so the
 * docs cannot drift from the API. Signature excerpts that are not programs use `typescript` blocks.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PAGES = ['README.md', 'docs/writing-a-transport.md', 'docs/writing-a-job-type.md'];
// Inside the repository, so the snippets resolve the workspace packages like any module here.
const OUT = join(ROOT, 'e2e', '.snippets');
const run = promisify(execFile);

interface Snippet {
  page: string;
  line: number;
  file: string;
}

async function extract(): Promise<Snippet[]> {
  const snippets: Snippet[] = [];
  for (const page of PAGES) {
    const lines = (await readFile(join(ROOT, page), 'utf8')).split('\n');
    for (let i = 0; i < lines.length; i++) {
      if (lines[i] !== '```ts') continue;
      const end = lines.indexOf('```', i + 1);
      const file = join(OUT, `${page.replace(/[/.]/g, '-')}-${i + 1}.ts`);
      // `export {}` keeps a snippet without imports a module (top-level await, own scope).
      await writeFile(file, `${lines.slice(i + 1, end).join('\n')}\nexport {};\n`);
      snippets.push({ page, line: i + 1, file });
      i = end;
    }
  }
  return snippets;
}

let snippets: Snippet[] = [];

beforeAll(async () => {
  await rm(OUT, { recursive: true, force: true });
  await mkdir(OUT, { recursive: true });
  snippets = await extract();
});
afterAll(() => rm(OUT, { recursive: true, force: true }));

describe('documentation snippets', { timeout: 180_000 }, () => {
  it('every page has snippets, and they compile under strict tsc', async () => {
    for (const page of PAGES) expect(snippets.some((s) => s.page === page)).toBe(true);
    await writeFile(
      join(OUT, 'tsconfig.json'),
      JSON.stringify({
        extends: '../../tsconfig.base.json',
        compilerOptions: { noEmit: true, customConditions: ['@rjob/source'], noUnusedLocals: false },
        include: ['*.ts'],
      }),
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await run(process.execPath, [tsc, '-p', join(OUT, 'tsconfig.json')], { cwd: ROOT }).then(
      () => '',
      (error: { stdout?: string }) => error.stdout ?? String(error),
    );
    expect(result).toBe('');
  });

  it('every snippet runs to completion', async () => {
    const tsx = import.meta.resolve('tsx');
    for (const snippet of snippets) {
      const outcome = await run(
        process.execPath,
        ['--conditions=@rjob/source', '--import', tsx, snippet.file],
        {
          cwd: ROOT,
          timeout: 60_000,
        },
      ).then(
        () => 'ok',
        (error: { stderr?: string }) => `${snippet.page}:${snippet.line} failed: ${error.stderr ?? error}`,
      );
      expect(outcome).toBe('ok');
    }
  });
});
