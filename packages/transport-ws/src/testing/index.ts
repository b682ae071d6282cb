export { type FaultProxy, type FaultProxyOptions, type Stall, startFaultProxy } from './fault-proxy.js';
