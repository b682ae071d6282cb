// A job type plugin for the CLI's plugin tests: `rjob start --type repeat --definition
// '{"text":"hi","times":3}'` emits "hi 1", "hi 2", "hi 3" (every `everyMs`, default 0) and ends.
import { defineJobType, ErrorCode, RjobError } from '@rjob/core';

export const repeatJobType = defineJobType({
  name: 'RepeatJob',
  aliases: ['repeat'],
  describe: (definition) => `repeat ${definition?.text} x${definition?.times}`,
  start(definition, context) {
    if (typeof definition?.text !== 'string' || !Number.isInteger(definition?.times)) {
      throw new RjobError(ErrorCode.InvalidArgument, 'A repeat job needs {"text": TEXT, "times": N}.');
    }
    context.running();
    let n = 0;
    const timer = setInterval(() => {
      if (n === definition.times) {
        clearInterval(timer);
        context.finish({ state: 'Completed' });
        return;
      }
      n++;
      context.emit('output', `${definition.text} ${n}`);
    }, definition.everyMs ?? 0);
    return {
      stop() {
        clearInterval(timer);
        context.finish({ state: 'Stopped' });
      },
    };
  },
});

export default { name: 'repeat', jobTypes: [repeatJobType] };
