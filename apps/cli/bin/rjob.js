#!/usr/bin/env node
// The built CLI: the bundle in dist/bundle (a published install, and a clone after `npm ci`, whose
// `prepare` script builds). Without a build, the TypeScript sources (run-source.js). Only what the
// check needs loads here: this file runs before every command.
const { existsSync } = process.getBuiltinModule('node:fs');
const built = new URL('../dist/bundle/rjob.mjs', import.meta.url);
await import(existsSync(built) ? built.href : './run-source.js');
