/**
 * Nothing lost over SSH: `rjob receive -s NAME` of a job in a named session on a host reached
 * through OpenSSH sshd on loopback, killed (SIGKILL) or interrupted (SIGINT to its process group) at
 * several moments, then received again: every line arrives, repeats only as one run of records that
 * were in flight. The remote agent is this CLI's own `rjob agent --stdio`, run by the test user.
 */
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type SshdFixture, sshdUnavailableReason, startSshd } from '@rjob/transport-ssh/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopDaemonIn } from './testing/daemon.js';
import { describeMoment, interruptedThenAgain, killAllBins, type Moment } from './testing/processes.js';
import { type Sandbox, sandbox } from './testing/sandbox.js';

const skip = sshdUnavailableReason();
const TSX = fileURLToPath(import.meta.resolve('tsx'));
const ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url));

const N = 150_000;
/** Prints 1..n, pausing every 2000 lines: still printing while a `receive --wait` follows it. */
const slowSeq = (n: number): string =>
  `awk 'BEGIN { for (i = 1; i <= ${n}; i++) { print i; if (i % 2000 == 0) { fflush(); system("sleep 0.05") } } }'`;

let fixture: SshdFixture | undefined;
let home = '';
let remoteState = '';
let s: Sandbox | undefined;

describe
  .skipIf(skip !== undefined)
  .concurrent('nothing lost over ssh (receive -s NAME)', { timeout: 180_000 }, () => {
    beforeAll(async () => {
      fixture = await startSshd();
      remoteState = await mkdtemp(join(tmpdir(), 'rjob-lossless-remote-'));
      const uid = Number(execFileSync('id', ['-u', fixture.user]).toString().trim());
      const gid = Number(execFileSync('id', ['-g', fixture.user]).toString().trim());
      await chown(remoteState, uid, gid);
      await chmod(remoteState, 0o700);
      home = await mkdtemp(join(tmpdir(), 'rjob-lossless-home-'));
      await mkdir(join(home, '.ssh'), { mode: 0o700 });
      const knownHosts = join(home, '.ssh', 'known_hosts');
      await writeFile(knownHosts, `${fixture.knownHostsLine}\n`);
      await writeFile(
        join(home, '.ssh', 'config'),
        `Host server01\n  HostName 127.0.0.1\n  Port ${fixture.port}\n  User ${fixture.user}\n  IdentityFile ${fixture.clientKeyPath}\n  UserKnownHostsFile ${knownHosts}\n  StrictHostKeyChecking yes\n`,
      );
      s = await sandbox({
        HOME: home,
        SSH_AUTH_SOCK: '',
        RJOB_REMOTE_AGENT: `TMPDIR=${remoteState} exec node --conditions=@rjob/source --import ${TSX} ${ENTRY} agent --stdio --state-dir ${remoteState}`,
      });
    });

    afterAll(async () => {
      await killAllBins();
      await s?.[Symbol.asyncDispose]();
      await stopDaemonIn(remoteState);
      await fixture?.stop();
      await rm(remoteState, { recursive: true, force: true });
      await rm(home, { recursive: true, force: true });
    });

    let sessions = 0;
    /** A named session on server01 holding one job `out` (finished, or still printing). */
    async function sessionWithJob(command: string, finished: boolean): Promise<string> {
      const name = `s${++sessions}`;
      const created = await s!.rjob('session', 'new', 'server01', '--name', name);
      expect(created.code, created.stderr).toBe(0);
      const started = await s!.rjob('start', '-s', name, '--name', 'out', '--', command);
      expect(started.code, started.stderr).toBe(0);
      if (finished) {
        const waited = await s!.rjob('wait', '-s', name, 'out');
        expect(waited.code, waited.stderr).toBe(0);
      }
      return name;
    }

    const moments: Moment[] = [
      { afterSpawnMs: 300 },
      { afterOutputMs: 300 },
      { afterOutputMs: 1000 },
      { afterBytes: 64 * 1024, thenMs: 100 },
    ];

    // Each case has a session of its own, so they run at once.
    for (const signal of ['SIGKILL', 'SIGINT'] as const) {
      for (const moment of moments) {
        it(`receive -s NAME, ${signal} ${describeMoment(moment)}`, async () => {
          const name = await sessionWithJob(`seq 1 ${N}`, true);
          await interruptedThenAgain(s!, ['receive', '-s', name, 'out'], signal, moment, N, async () => {
            const again = await s!.rjob('receive', '-s', name, 'out');
            expect(again.code, again.stderr).toBe(0);
            return again.stdout;
          });
          expect((await s!.rjob('receive', '-s', name, 'out')).stdout).toBe('');
          expect((await s!.rjob('session', 'remove', name)).code).toBe(0);
        });
      }

      it(`receive -s NAME --wait of a job still printing, ${signal} while it follows`, async () => {
        const n = 40_000;
        const name = await sessionWithJob(slowSeq(n), false);
        await interruptedThenAgain(
          s!,
          ['receive', '-s', name, '--wait', 'out'],
          signal,
          { afterOutputMs: 300 },
          n,
          async () => {
            const again = await s!.rjob('receive', '-s', name, '--wait', 'out');
            expect(again.code, again.stderr).toBe(0);
            return again.stdout;
          },
        );
        expect((await s!.rjob('session', 'remove', name)).code).toBe(0);
      });
    }
  });
