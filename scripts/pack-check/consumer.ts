/**
 * A consumer program that touches every published package, type-checked by scripts/pack-check.sh
 * against the installed tarballs under strict tsc with skipLibCheck off. It is compiled, not run.
 */
import { AgentServer, socketIsLive } from '@rjob/agent';
import { defaultSocketPath } from '@rjob/agent/cli';
import { JobManager, openSession, type RemoteRecord, RjobError, type Transport } from '@rjob/core';
import { decodeRecordEntries, encodeRecordEntries } from '@rjob/core/codec';
import { decodeMessage, encodeMessage, type MethodResult, ReliableChannel } from '@rjob/core/protocol';
import { createMemoryLink, type TestApi, transportConformanceCases } from '@rjob/core/testing';
import { processJobType } from '@rjob/job-process';
import { threadJobType } from '@rjob/job-thread';
import { type SshTransportOptions, sshTransport } from '@rjob/transport-ssh';
import { sshdUnavailableReason } from '@rjob/transport-ssh/testing';
import { certificateFingerprint, listenWs, wsTransport } from '@rjob/transport-ws';
import { startFaultProxy } from '@rjob/transport-ws/testing';
import { type CliIo, ExitCode, run } from 'rjob';

export async function everything(io: CliIo): Promise<number> {
  const jobs = new JobManager({ types: [threadJobType({ throttleLimit: 2 }), processJobType()] });
  const job = await jobs.start('process', { command: 'echo hi' });
  await jobs.wait([job]);
  await jobs.close();

  const options: SshTransportOptions = { strictHostKeyChecking: 'yes' };
  const transports: Transport<unknown>[] = [
    sshTransport(options) as Transport<unknown>,
    wsTransport({}) as Transport<unknown>,
  ];
  const session = await openSession(transports[0]!, 'host', { name: 's' });
  for await (const record of session.invoke({ definition: { command: 'uname' } })) {
    const r: RemoteRecord = record;
    console.log(r.computerName, r.data);
  }
  await session.close();

  const link = createMemoryLink({ maxFrameBytes: 1024 });
  const cases = transportConformanceCases(() => ({ client: link.a, server: link.b }));
  const api: TestApi = { describe: (_name, body) => body(), it: (_name, body) => void body() };
  api.describe('conformance', () => {});
  console.log(cases.length, typeof AgentServer, typeof listenWs, typeof startFaultProxy);

  // What an agent implementer uses: the channel, the message codec, the record entries.
  const channel = new ReliableChannel({ pingIntervalMs: 0 });
  const info: MethodResult<'session.info'> | undefined = undefined;
  const message = decodeMessage(encodeMessage({ type: 'event', seq: 1, name: 'job.end', data: info }));
  console.log(channel.state, message.type, decodeRecordEntries(encodeRecordEntries([], 1)).length);
  console.log(await socketIsLive(defaultSocketPath('/tmp')), sshdUnavailableReason, certificateFingerprint);
  try {
    return await run(['get'], io);
  } catch (error) {
    if (RjobError.is(error)) console.log(error.code);
    return ExitCode.Internal;
  }
}
