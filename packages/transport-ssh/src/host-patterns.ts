/**
 * OpenSSH host-pattern matching, shared by known_hosts and ssh_config: `*` and `?` wildcards,
 * `!` negation, comma lists, case-insensitive.
 */

/** True when `text` matches the glob `pattern` (only `*` and `?` are special, as in OpenSSH). */
export function wildcardMatch(text: string, pattern: string): boolean {
  // Iterative glob with single-star backtracking: linear in practice, no regex injection worries.
  let t = 0;
  let p = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    const pc = pattern[p];
    if (pc === '*') {
      starP = p++;
      starT = t;
    } else if (pc !== undefined && (pc === '?' || pc === text[t])) {
      p++;
      t++;
    } else if (starP >= 0) {
      p = starP + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (pattern[p] === '*') p++;
  return p === pattern.length;
}

/** Result of matching a name against a pattern list: a `!` pattern that matches wins outright. */
export type PatternListMatch = 'match' | 'no-match' | 'negated';

/**
 * Matches `name` against a comma-separated pattern list the way OpenSSH's `match_pattern_list`
 * does: a matching negated entry makes the whole list fail, whatever else matched. Host names in
 * known_hosts compare case-insensitively; ssh_config `Host` lines do not (ssh checks them against
 * the name exactly as typed), hence `caseInsensitive`.
 */
export function matchPatternList(name: string, list: string, caseInsensitive = true): PatternListMatch {
  const lowered = caseInsensitive ? name.toLowerCase() : name;
  let positive = false;
  for (const raw of list.split(',')) {
    const negated = raw.startsWith('!');
    const bare = negated ? raw.slice(1) : raw;
    const pattern = caseInsensitive ? bare.toLowerCase() : bare;
    if (pattern === '' || !wildcardMatch(lowered, pattern)) continue;
    if (negated) return 'negated';
    positive = true;
  }
  return positive ? 'match' : 'no-match';
}
