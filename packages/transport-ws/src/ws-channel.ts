/**
 * A WebSocket as a {@link TransportChannel}: one protocol frame per binary message (no length
 * prefix; the WebSocket already delimits messages), `maxPayload` enforced by `ws` before a message
 * is buffered, backpressure from `bufferedAmount`, ping/pong heartbeat, coded close reasons.
 */
import { createChannelController, ProtocolErrorCode, RjobError, type TransportChannel } from '@rjob/core';
import { DEFAULT_MAX_FRAME_BYTES } from '@rjob/core/protocol';
import type { RawData, WebSocket } from 'ws';
import { WsErrorCode } from './errors.js';

export const DEFAULT_HIGH_WATER_MARK = 4 * 1024 * 1024;
export const DEFAULT_LOW_WATER_MARK = 1024 * 1024;
export const DEFAULT_HEARTBEAT_MS = 30_000;
/** Time a close handshake may take before the socket is torn down. */
const CLOSE_GRACE_MS = 5_000;

/** Close codes: 1000 normal; 4000 + reason text = an rjob error code closed the link. */
const WS_NORMAL = 1000;
const WS_TOO_BIG = 1009;
const WS_RJOB_ERROR = 4000;

export interface WsChannelOptions {
  /** Largest frame (message) in bytes, both ways. Must match the socket's `maxPayload`. Default 16 MiB. */
  maxFrameBytes?: number;
  /** `send` returns false once `bufferedAmount` exceeds this. Default 4 MiB. */
  highWaterMark?: number;
  /** `onDrain` fires once `bufferedAmount` falls to this. Default 1 MiB. */
  lowWaterMark?: number;
  /** Ping interval; a peer that has not answered the previous ping is cut. 0 disables. Default 30 s. */
  heartbeatMs?: number;
}

/** Wraps an open WebSocket. The socket must have been created with `maxPayload` = `maxFrameBytes`. */
export function channelFromWebSocket(ws: WebSocket, options: WsChannelOptions = {}): TransportChannel {
  const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const high = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
  const low = Math.min(options.lowWaterMark ?? DEFAULT_LOW_WATER_MARK, high);
  const heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  ws.binaryType = 'nodebuffer';
  let congested = false;
  let failure: RjobError | undefined;
  let alive = true;
  let heartbeat: NodeJS.Timeout | undefined;

  const afterWrite = (error?: Error): void => {
    if (error || !congested || ws.bufferedAmount > low) return;
    congested = false;
    controller.drained();
  };

  const controller = createChannelController({
    maxFrameBytes,
    write(frame) {
      ws.send(frame, { binary: true }, afterWrite);
      if (ws.bufferedAmount > high) congested = true;
      return !congested;
    },
    terminate(reason) {
      stopHeartbeat();
      detach();
      ws.on('error', () => {});
      if (ws.readyState === ws.CLOSED) return;
      // close() sends the close frame after the messages already queued, so they arrive first.
      const code = reason.code === ProtocolErrorCode.LinkClosed ? WS_NORMAL : WS_RJOB_ERROR;
      try {
        ws.close(code, code === WS_NORMAL ? undefined : reason.code.slice(0, 100));
      } catch {
        ws.terminate();
      }
      setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
    },
  });

  function onMessage(data: RawData, isBinary: boolean): void {
    if (!isBinary) {
      fail(new RjobError(ProtocolErrorCode.FrameMalformed, 'Text WebSocket message; frames are binary.'));
      return;
    }
    const frame = Array.isArray(data)
      ? Buffer.concat(data)
      : data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : (data as Buffer);
    if (frame.byteLength === 0) {
      fail(new RjobError(ProtocolErrorCode.FrameMalformed, 'Empty WebSocket message.'));
      return;
    }
    controller.deliver(frame);
  }

  function onError(error: Error & { code?: string }): void {
    // ws reports an oversized message (before buffering it) as WS_ERR_UNSUPPORTED_MESSAGE_LENGTH
    // and closes with 1009; other protocol errors close with 1002.
    failure ??=
      error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'
        ? new RjobError(ProtocolErrorCode.FrameTooLarge, `A message exceeded ${maxFrameBytes} bytes.`, {
            cause: error,
            details: { maxFrameBytes },
          })
        : new RjobError(ProtocolErrorCode.FrameMalformed, `WebSocket error: ${error.message}`, {
            cause: error,
          });
  }

  function onClose(code: number, reasonBuffer: Buffer): void {
    stopHeartbeat();
    detach();
    if (failure) {
      controller.closed(failure);
      return;
    }
    const peerReason = reasonBuffer.toString('utf8');
    controller.closed(
      new RjobError(
        ProtocolErrorCode.LinkClosed,
        `WebSocket closed (${code}${peerReason ? ` ${peerReason}` : ''}).`,
        {
          details: {
            wsCode: code,
            ...(peerReason ? { peerReason } : {}),
            ...(code === WS_TOO_BIG ? { peerRefused: ProtocolErrorCode.FrameTooLarge } : {}),
          },
        },
      ),
    );
  }

  function fail(error: RjobError): void {
    failure ??= error;
    controller.channel.close(error);
  }

  function onPong(): void {
    alive = true;
  }

  function detach(): void {
    ws.off('message', onMessage);
    ws.off('error', onError);
    ws.off('close', onClose);
    ws.off('pong', onPong);
  }

  function stopHeartbeat(): void {
    if (heartbeat) clearInterval(heartbeat);
    heartbeat = undefined;
  }

  ws.on('message', onMessage);
  ws.on('error', onError);
  ws.on('close', onClose);
  ws.on('pong', onPong);
  if (heartbeatMs > 0) {
    heartbeat = setInterval(() => {
      if (!alive) {
        fail(new RjobError(WsErrorCode.HeartbeatTimeout, `No pong within ${heartbeatMs} ms.`));
        ws.terminate();
        return;
      }
      alive = false;
      ws.ping();
    }, heartbeatMs);
    heartbeat.unref();
  }
  if (ws.readyState !== ws.OPEN) {
    queueMicrotask(() =>
      controller.closed(new RjobError(ProtocolErrorCode.LinkClosed, 'WebSocket not open.')),
    );
  }
  return controller.channel;
}
