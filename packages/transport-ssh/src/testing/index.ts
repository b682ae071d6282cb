export {
  descendantPids,
  SSHD_PATH,
  SSHD_TEST_USER,
  type SshdFixture,
  type SshdHostKey,
  type StartSshdOptions,
  sshdUnavailableReason,
  startSshd,
  startSshds,
} from './sshd-fixture.js';
export { NO_NODE_TOOLS, noNodePath } from './no-node.js';
