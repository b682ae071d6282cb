export {
  descendantPids,
  SSHD_PATH,
  SSHD_TEST_USER,
  type SshdFixture,
  type SshdHostKey,
  type StartSshdOptions,
  sshdUnavailableReason,
  startSshd,
} from './sshd-fixture.js';
