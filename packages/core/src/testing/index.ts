export {
  createMemoryLink,
  createMemoryNetwork,
  type MemoryLink,
  type MemoryLinkOptions,
  type MemoryLinkSide,
  type MemoryNetwork,
} from './memory-transport.js';
export {
  type ConformanceCase,
  type MakeTransportPair,
  runTransportConformance,
  type TestApi,
  type TransportConformanceOptions,
  type TransportPair,
  transportConformanceCases,
} from './transport-conformance.js';
export { type InlineJobApi, type InlineJobDefinition, inlineJobType } from './inline-job-type.js';
export { type AcceptedLink, type AcceptOneLinkOptions, acceptOneLink, linkPair } from './unix-link.js';
