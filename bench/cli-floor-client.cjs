// The floor for `rjob get` (bench/cli.ts): the least a Node program can do to list the local jobs.
// It connects to the running agent's socket and speaks protocol v1 by hand (docs/protocol.md):
// hello and open(host) in one write, ack + credit + the job.get request once opened, then `close`
// after the answer and exit. No rjob module is loaded; two built-ins, one connection, two round trips.
// A CommonJS file, as bin/rjob.cjs is: node starts one with less work than an ES module.
const net = process.getBuiltinModule('node:net');
const v8 = process.getBuiltinModule('node:v8');

/** @param {object} message */
const frame = (message) => {
  const body = v8.serialize(message);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length);
  return Buffer.concat([header, body]);
};
const socket = net.createConnection(/** @type {string} */ (process.argv[2]));
socket.write(Buffer.concat([frame({ type: 'hello', versions: [1] }), frame({ type: 'open', host: true })]));
let pending = Buffer.alloc(0);
socket.on('data', (chunk) => {
  pending = Buffer.concat([pending, chunk]);
  while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
    const message = v8.deserialize(pending.subarray(4, 4 + pending.readUInt32BE(0)));
    pending = pending.subarray(4 + pending.readUInt32BE(0));
    if (message.type === 'opened') {
      socket.write(
        Buffer.concat([
          frame({ type: 'ack', seq: 0 }),
          frame({ type: 'credit', seq: 1024, bytes: 8 * 1024 * 1024 }),
          frame({ type: 'request', seq: 1, id: 1, method: 'job.get', params: {} }),
        ]),
      );
    } else if (message.type === 'response') {
      if (message.error) throw new Error(message.error.message);
      process.stdout.write(`${message.result.length} jobs\n`);
      socket.end(frame({ type: 'close' }), () => process.exit(0));
    } else if (message.type === 'error') {
      throw new Error(message.error.message);
    }
  }
});
