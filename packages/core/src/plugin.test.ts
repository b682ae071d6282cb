import { describe, expect, it } from 'vitest';
import { ErrorCode } from './errors.js';
import { defineJobType } from './job/job-type.js';
import { definePlugin } from './plugin.js';

describe('definePlugin', () => {
  const type = defineJobType({ name: 'EchoJob', describe: () => 'echo', start: () => ({ stop() {} }) });
  const transport = {
    name: 'x',
    accepts: () => false,
    resolve: async () => ({ transport: {} as never, target: 1 }),
  };

  it('gives a plugin of job types and transports back as is', () => {
    const plugin = { name: 'p', jobTypes: [type], transports: [transport] };
    expect(definePlugin(plugin)).toBe(plugin);
  });

  it.each([
    [null, 'to be an object'],
    [{}, 'jobTypes or transports'],
    [{ jobTypes: type }, 'jobTypes as an array'],
    [{ jobTypes: [{ name: 'A' }] }, 'a name and a start function'],
    [{ jobTypes: [{ ...type, aliases: [1] }] }, "EchoJob's aliases as text"],
    [{ transports: [{ name: 'x', accepts: () => true }] }, 'accepts(target) and resolve(target, settings)'],
  ])('refuses %j with ERR_INVALID_ARGUMENT', (plugin, what) => {
    expect(() => definePlugin(plugin as never)).toThrow(
      expect.objectContaining({ code: ErrorCode.InvalidArgument, message: expect.stringContaining(what) }),
    );
  });
});
