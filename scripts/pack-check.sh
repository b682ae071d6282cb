#!/usr/bin/env bash
# Packs every public package and checks the tarballs the way a user meets them: contents, publint,
# attw (esm-only), an install into a fresh project with npm 11 and npm 10, an import of every entry
# under plain node, a program using every package type-checked by strict tsc (node16 and bundler
# resolution, skipLibCheck off), the installed `rjob` bin running a local job, and @rjob/core
# installed next to vitest 3. Needs the registry (npx, typescript, vitest 3). Run from anywhere:
#   sh scripts/pack-check.sh        (CI: .ci/run)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/rjob-pack.XXXXXX")
state="$work/state"
# The installed bin's code cache stays in the work directory, not in ~/.cache.
export XDG_CACHE_HOME="$work/cache"
cleanup() {
  # The installed rjob started an agent daemon for the local job: stop it before removing its state.
  if [ -x "$work/app-npm11/node_modules/.bin/rjob" ]; then
    RJOB_STATE_DIR="$state" "$work/app-npm11/node_modules/.bin/rjob" agent stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

packages=(packages/core packages/job-thread packages/job-process packages/agent packages/transport-ssh packages/transport-ws apps/cli)

echo "== pack (prepack builds each package)"
mkdir -p "$work/tarballs"
for dir in "${packages[@]}"; do
  (cd "$root/$dir" && npm pack --silent --pack-destination "$work/tarballs" >/dev/null)
done
tarballs=("$work"/tarballs/*.tgz)
echo "   ${#tarballs[@]} tarballs"

echo "== contents: LICENSE, README, no build leftovers or test files"
for tgz in "${tarballs[@]}"; do
  listing=$(tar -tzf "$tgz")
  for must in package/LICENSE package/README.md package/package.json; do
    grep -qx "$must" <<<"$listing" || { echo "$(basename "$tgz"): missing $must"; exit 1; }
  done
  if bad=$(grep -E '\.tsbuildinfo$|\.test\.ts$|/fixtures/|test-utils\.ts$|^package/scripts/' <<<"$listing"); then
    echo "$(basename "$tgz") carries files users do not need:"; echo "$bad"; exit 1
  fi
done
cli_listing=$(tar -tzf "$work"/tarballs/rjob-[0-9]*.tgz)
grep -qx package/docs/cli.md <<<"$cli_listing" || { echo "rjob: docs/cli.md not shipped"; exit 1; }

echo "== publint and attw (esm-only)"
for dir in "${packages[@]}"; do
  (cd "$root/$dir" && npx -y publint@0.3 --strict --level warning >"$work/publint.log" 2>&1) ||
    { cat "$work/publint.log"; exit 1; }
done
for tgz in "${tarballs[@]}"; do
  npx -y @arethetypeswrong/cli@0.18 --profile esm-only --format ascii "$tgz" >"$work/attw.log" 2>&1 ||
    { cat "$work/attw.log"; exit 1; }
done

# A consumer project: every tarball, typescript and @types/node from the registry.
make_app() { # dir, npm command...
  local dir=$1; shift
  mkdir -p "$dir"
  printf '{ "name": "rjob-consumer", "private": true, "type": "module" }\n' >"$dir/package.json"
  (cd "$dir" && "$@" install --no-audit --no-fund --loglevel=error "${tarballs[@]}" typescript@~5.9 @types/node@^20.19 >/dev/null)
}

check_app() { # dir
  local dir=$1
  echo "   import every entry under plain node"
  (cd "$dir" && node --input-type=module -e "
    for (const name of ['@rjob/core', '@rjob/core/testing', '@rjob/core/runtime', '@rjob/core/protocol',
      '@rjob/core/codec', '@rjob/job-thread',
      '@rjob/job-process', '@rjob/agent', '@rjob/agent/cli', '@rjob/transport-ssh', '@rjob/transport-ssh/testing',
      '@rjob/transport-ws', '@rjob/transport-ws/testing', 'rjob']) {
      const module = await import(name);
      if (Object.keys(module).length === 0) throw new Error(name + ' exports nothing');
    }")
  echo "   strict tsc, skipLibCheck off: node16 and bundler resolution"
  cp "$root/scripts/pack-check/consumer.ts" "$dir/consumer.ts"
  for resolution in node16 bundler; do
    local module=node16
    [ "$resolution" = bundler ] && module=esnext
    (cd "$dir" && npx tsc --noEmit --strict --skipLibCheck false --target es2022 --lib es2023 \
      --module "$module" --moduleResolution "$resolution" --types node consumer.ts)
  done
}

echo "== install with npm $(npm --version)"
make_app "$work/app-npm11" npm
check_app "$work/app-npm11"
echo "   the installed rjob bin runs a local job"
out=$(cd "$work/app-npm11" && RJOB_STATE_DIR="$state" npx rjob invoke -c localhost -- 'echo packed rjob')
[ "$out" = "[localhost] packed rjob" ] || { echo "unexpected output: $out"; exit 1; }

echo "== install with npm 10"
make_app "$work/app-npm10" npx -y npm@10
check_app "$work/app-npm10"

echo "== @rjob/core next to vitest 3"
mkdir -p "$work/vitest3"
printf '{ "name": "vitest3-consumer", "private": true, "type": "module" }\n' >"$work/vitest3/package.json"
(cd "$work/vitest3" && npm install --no-audit --no-fund --loglevel=error vitest@3 >/dev/null &&
  npm install --no-audit --no-fund --loglevel=error "$work"/tarballs/rjob-core-*.tgz >/dev/null &&
  node --input-type=module -e "await import('@rjob/core/testing')")

echo "== pack-check passed"
