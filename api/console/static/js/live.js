// GET /live as server-sent events read with fetch (EventSource cannot send the Authorization
// header). Reconnects with a growing pause and Last-Event-ID, so no case change is missed.
// live.on('case', fn) / live.on('stream', fn) / live.on('status', fn) return a function that stops it.

import {authHeaders, url} from './api.js';

export class Live {
  constructor() {
    this.listeners = new Map();
    this.lastId = null;
    this.controller = null;
    this.status = 'off';
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, data) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(data);
      } catch (err) {
        console.error(err);
      }
    }
  }

  setStatus(status) {
    if (status !== this.status) {
      this.status = status;
      this.emit('status', status);
    }
  }

  start() {
    this.stop();
    const controller = new AbortController();
    this.controller = controller;
    this.run(controller.signal);
  }

  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.setStatus('off');
  }

  async run(signal) {
    let pause = 1000;
    while (!signal.aborted) {
      try {
        const headers = authHeaders({Accept: 'text/event-stream'});
        if (this.lastId) headers['Last-Event-ID'] = this.lastId;
        const res = await fetch(url('/live'), {headers, signal, cache: 'no-store'});
        if (res.status === 401 || res.status === 403) {
          this.setStatus('denied');
          return;
        }
        if (!res.ok || !res.body) throw new Error(`GET /live: ${res.status}`);
        this.setStatus('on');
        pause = 1000;
        await this.read(res.body, signal);
      } catch (err) {
        if (signal.aborted) return;
      }
      this.setStatus('offline');
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 30000);
    }
  }

  async read(body, signal) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    while (!signal.aborted) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, {stream: true});
      const blocks = buffer.split(/\r?\n\r?\n/);
      buffer = blocks.pop();
      for (const block of blocks) this.dispatch(block);
    }
  }

  dispatch(block) {
    let type = 'message';
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') this.lastId = value;
    }
    if (!data.length) return;
    try {
      this.emit(type, JSON.parse(data.join('\n')));
    } catch (err) {
      console.error('live: bad event', err);
    }
  }
}
