export { type InlineJobApi, type InlineJobDefinition, inlineJobType } from './inline-job-type.js';
