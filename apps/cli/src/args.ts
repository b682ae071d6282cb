import { parseArgs } from 'node:util';
import { usageError } from './io.js';

type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

/** Options every verb takes. */
export const COMMON_OPTIONS = {
  'state-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies OptionSpec;

export interface Parsed<V> {
  values: V;
  positionals: string[];
  /** Everything after the first `--`, untouched (the command to run). */
  rest: string[] | undefined;
}

/**
 * util.parseArgs in strict mode, with `--` split off first so a command's own flags
 * (`rjob start -- ls -la`) are never taken for ours; a bad flag becomes a usage error.
 */
export function parse<const O extends OptionSpec>(
  argv: readonly string[],
  options: O,
): Parsed<{ [K in keyof (O & typeof COMMON_OPTIONS)]?: unknown }> {
  const dashDash = argv.indexOf('--');
  const own = dashDash >= 0 ? argv.slice(0, dashDash) : [...argv];
  const rest = dashDash >= 0 ? argv.slice(dashDash + 1) : undefined;
  try {
    const { values, positionals } = parseArgs({
      args: own,
      options: { ...COMMON_OPTIONS, ...options },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Parsed<Record<string, unknown>>['values'], positionals, rest } as never;
  } catch (error) {
    const message = error instanceof Error ? error.message.split('\n')[0]! : String(error);
    throw usageError(message.replace(/\. To specify a positional argument.*$/, ''));
  }
}

/**
 * {@link parse} for verbs that run a command (`rjob start`): the first word that is not one of the
 * verb's own options (or an option's value) starts the command, as if `--` stood before it, so
 * `rjob start sleep 5` and `rjob start -n b make -j4` need no `--`. An explicit `--` still works.
 */
export function parseCommand<const O extends OptionSpec>(
  argv: readonly string[],
  options: O,
): ReturnType<typeof parse<O>> {
  const all: OptionSpec = { ...COMMON_OPTIONS, ...options };
  const takesValue = (token: string): boolean => {
    if (token.startsWith('--')) return !token.includes('=') && all[token.slice(2)]?.type === 'string';
    // `-n NAME`; `-nNAME` carries its value.
    if (token.length !== 2) return false;
    return Object.values(all).some((spec) => spec.short === token[1] && spec.type === 'string');
  };
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === '--') break;
    if (token.startsWith('-') && token !== '-') {
      if (takesValue(token)) i++;
      continue;
    }
    return parse([...argv.slice(0, i), '--', ...argv.slice(i)], options);
  }
  return parse(argv, options);
}

export function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

export function strs(value: unknown): string[] {
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return typeof value === 'string' ? [value] : [];
}

export function bool(value: unknown): boolean {
  return value === true;
}

/** `--timeout 30` (seconds, as Wait-Job) or with a unit: `500ms`, `2m`. */
export function durationMs(value: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!match) throw usageError(`${flag} takes a duration such as 30, 30s, 500ms or 2m, not ${value}`);
  const n = Number(match[1]);
  const unit = match[2] ?? 's';
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!;
  return Math.round(n * factor);
}

export function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw usageError(`${flag} takes a positive whole number, not ${value}`);
  return n;
}

/** Job selectors as typed: numbers are ids, anything else a name. */
export function selectors(positionals: readonly string[]): Array<number | string> {
  return positionals.map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}
