// Live updates: Server-Sent Events from api/events/stream, or polling every 2 s when the stream fails.
//
// The current view gets each event and says whether it concerns it; relevant events refresh the
// view once per burst (debounced). With a bearer token, the sign-in cookie authenticates the stream.

import { debounce } from "./dom.js";

const POLL_MS = 2000;
const RETRY_STREAM_MS = 15000;
const DEBOUNCE_MS = 150;
const RECONNECT_GRACE_MS = 4000;

export class Live {
  constructor(indicator) {
    this.indicator = indicator;
    this.view = null;
    this.source = null;
    this.mode = "connecting";
    this.pollTimer = null;
    this.retryTimer = null;
    this.reconnectTimer = null;
    this.refreshSoon = debounce(() => this.refreshView(), DEBOUNCE_MS);
  }

  /** The view to keep fresh: {refresh(): Promise, onEvent(event): boolean}. */
  setView(view) {
    this.view = view;
  }

  start() {
    this.connect();
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.setMode("connecting", "connecting to the event stream");
    let source;
    try {
      source = new EventSource("api/events/stream");
    } catch {
      this.fallBack();
      return;
    }
    this.source = source;
    source.onopen = () => {
      clearTimeout(this.reconnectTimer);
      this.stopPolling();
      this.setMode("live", "live: updates arrive as events happen");
      this.refreshSoon(); // events may have been missed while not connected
    };
    source.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (this.view && this.view.onEvent && this.view.onEvent(event)) this.refreshSoon();
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CONNECTING) {
        // The stream ended (the server ends each one after a while, or it restarted): the browser
        // reconnects by itself, sending Last-Event-ID, so nothing is missed. Poll only if it is not
        // back soon (onopen cancels this).
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = setTimeout(() => {
          if (this.source === source && source.readyState !== EventSource.OPEN) {
            this.poll("polling every 2 s while the event stream reconnects");
          }
        }, RECONNECT_GRACE_MS);
        return;
      }
      // The stream was refused (an error status, not an event stream): closed, retried later; meanwhile poll.
      this.fallBack();
    };
  }

  fallBack() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
    this.poll("polling every 2 s (the event stream is unavailable; retrying it later)");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), RETRY_STREAM_MS);
  }

  poll(title) {
    this.setMode("polling", title);
    if (this.pollTimer === null) this.pollTimer = setInterval(() => this.refreshView(), POLL_MS);
  }

  stopPolling() {
    clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  async refreshView() {
    if (document.hidden || !this.view || !this.view.refresh) return;
    try {
      await this.view.refresh();
    } catch {
      // the view shows its own errors
    }
  }

  setMode(mode, title) {
    this.mode = mode;
    this.indicator.dataset.mode = mode;
    this.indicator.textContent = mode === "live" ? "live" : mode === "polling" ? "polling" : "connecting";
    this.indicator.title = title;
  }
}
