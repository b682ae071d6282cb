/**
 * `@rjob/core/codec`: how values and records become bytes. The value codec (v8 serialization with
 * coded errors for what cannot cross) and the record entries the agent's spool stores and
 * `job.packed` events carry (docs/protocol.md). For the agent and other peers; a library user
 * gets decoded records from `Session` and `JobManager`.
 */
export {
  decodeRecordEntries,
  decodeRecordPayload,
  decodeRecordRuns,
  encodeRecordEntries,
  encodeRecordPayload,
  encodeRecordRuns,
  encodeUnstampedEntry,
  isCompactPayload,
  isTextPayload,
  RECORD_ENTRY_HEADER_BYTES,
  stampHeader,
} from './record-entries.js';
export { decodeValue, encodeValue, notCloneable } from './value-codec.js';
