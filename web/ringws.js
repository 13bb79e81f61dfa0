/**
 * ringws.js: a dependency-free browser client for ringws's `ringws.v1` protocol (docs/PROTOCOL.md).
 *
 * Served by the server at `GET /ringws.js`; also usable from the repository as an ES module
 * (`import { RingwsClient } from "./web/ringws.js"`). Types are JSDoc (checked by `tsc --checkJs` if you
 * have it; nothing here needs a build step).
 *
 * What it does:
 * - connects with the `ringws.v1` subprotocol and a JWT (`?token=`; browsers cannot set headers on a
 *   WebSocket), taken from `options.token` or from `options.tokenProvider(reason)` (called at the first
 *   connect and whenever a fresh token is needed);
 * - `subscribe(topic, handlers)` / `unsubscribe(topic)`, with per-topic callbacks; `publish(topic, data)`
 *   resolves with the ack's `{offset, epoch}`; `history(topic, {limit, since})`; `presence(topic)`, and
 *   join/leave callbacks for subscriptions made with `{presence: true}`;
 * - keeps, per topic, the offset and epoch of the last publication received, drops any publication at or
 *   before it (so a replay never duplicates), and after every reconnect resubscribes each topic with
 *   `since`, telling the app per topic in `onSubscribed` whether the gap was `recovered` (true: the missed
 *   publications follow, in order; false: they are lost, fetch state another way, e.g. `history()`);
 * - reconnects with exponential backoff and full jitter: the n-th attempt in a row waits a uniformly random
 *   time in [0, min(cap, base * factor^n)); the count is reset only after a connection stayed open for
 *   `stableMs` (so a server that accepts and drops at once still meets a growing backoff);
 * - close codes: 4001 (token expired) asks `tokenProvider("expired")` for a new token before reconnecting
 *   (without a provider it stops until `setToken()`); 1000 from the app's own `close()` never reconnects;
 *   anything else (1006 drops, 1001 going away, 1011...) reconnects with backoff;
 * - an auth refusal: the upgrade is answered `401`, which a browser only sees as a socket that fails
 *   without ever opening (code 1006, no status). Detected, when a token is in use, like this: a token
 *   whose `exp` (read from the JWT payload, not verified) has passed is an expiry, handled as 4001;
 *   otherwise after `authProbeAfter` failures in a row without an open, the client fetches `probeUrl`
 *   (default `/healthz` on the WebSocket's host, `no-cors`: only "did the server answer" matters); if the
 *   server answers, it retries once at once, and a second failure with the server answering again is taken
 *   for a refusal: `onState({state: "closed", reason: "auth"})`, no more attempts until `setToken()` (or,
 *   with a provider, until `tokenProvider("refused")` returns a different token). A server that refuses
 *   for capacity (503) looks the same; that is the price of the browser hiding the status;
 * - `onState` reports `connecting`, `open`, `reconnecting` (with the delay in ms; without one when the
 *   browser reconnects an event stream by itself), `closed` (with a reason).
 *
 * - transports (`client.transport`, `"websocket"` or `"sse"`, told to `onTransport` and in every state
 *   change): with `transport: "auto"` (the default), when the WebSocket fails `sseAfter` times in a row
 *   (default 2) without ever opening since `connect()` while `probeUrl` answers (the server is up, so the
 *   upgrade is what is blocked) and, with a token, `/sse` takes the token (a refused token fails a WebSocket
 *   the same way: see below), the client receives over Server-Sent Events instead: an `EventSource` on
 *   `sseUrl` (default `/sse` on the WebSocket's host, http(s)) with every subscribed topic, the token and
 *   `since=TOPIC:EPOCH:OFFSET` for each topic's last position (docs/PROTOCOL.md, "Event streams").
 *   Publications, `onSubscribed` (with `recovered`) and dedup by offset work as over the WebSocket; the
 *   browser reconnects the stream by itself after a drop and resumes through `Last-Event-ID`.
 *   `publish()`, `history()` and `presence()` reject with a `RingwsError` (code 0, `receive-only`), and a
 *   `subscribe()`/`unsubscribe()` reopens the stream with the new topic list. Every `wsRetryMs` (default
 *   60 s) a WebSocket is tried again in the background; once one opens, the stream is closed and the client
 *   is back on the WebSocket (resubscribing with `since`). `transport: "sse"` uses SSE from the start,
 *   `"websocket"` never does;
 *
 * A server without `ringws.v1` (`--mode broadcast` or `echo`) answers the upgrade without the
 * subprotocol, and a browser then fails the connection (it offered one, none was chosen). With
 * `rawFallback: true` and no token, a client that never opened with `ringws.v1` and whose first attempt
 * fails while `probeUrl` answers tries again without offering it; `client.protocol` is then `""`,
 * subscriptions are kept but not sent, `sendRaw()` sends text as is and `onRaw` receives every message.
 *
 * @module ringws
 */

/** The subprotocol this client speaks. */
export const SUBPROTOCOL = "ringws.v1";

/** The close code the server uses when the connection's token expired. */
export const CLOSE_TOKEN_EXPIRED = 4001;

/**
 * An error reply from the server (`{"error": ..., "code": ...}`), or a local failure (code 0).
 */
export class RingwsError extends Error {
  /**
   * @param {string} message
   * @param {number} [code] the protocol's error code (400, 403, 422, 429, 501), 0 for local failures
   * @param {string} [op]
   * @param {string} [topic]
   */
  constructor(message, code = 0, op, topic) {
    super(message);
    this.name = "RingwsError";
    this.code = code;
    this.op = op;
    this.topic = topic;
  }
}

/**
 * @typedef {{offset: number, epoch: string}} Position
 * @typedef {{topic: string, data?: string, bytes?: Uint8Array, offset?: number, epoch?: string}} Publication
 *   `data` for text, `bytes` for binary publications; offset and epoch when the server keeps history.
 * @typedef {{topic: string, offset?: number, epoch?: string, since?: Position, resubscribed: boolean, recovered: boolean|null}} Subscribed
 *   `recovered` is null on a first subscription, else whether the gap since the last position (`since`) was
 *   replayed: `offset - since.offset` publications then follow.
 * @typedef {{topic: string, client: string, user: string, info?: unknown}} Member
 * @typedef {{
 *   onMessage?: (publication: Publication) => void,
 *   onSubscribed?: (subscribed: Subscribed) => void,
 *   onJoin?: (member: Member) => void,
 *   onLeave?: (member: Member) => void,
 *   onError?: (error: RingwsError) => void,
 *   presence?: boolean,
 * }} TopicHandlers
 * @typedef {{
 *   state: "connecting"|"open"|"reconnecting"|"closed",
 *   attempt: number,
 *   delay?: number,
 *   code?: number,
 *   reason?: "app"|"expired"|"auth"|"no-token"|string,
 *   protocol?: string,
 *   transport?: "websocket"|"sse",
 * }} StateChange
 * @typedef {{
 *   token?: string,
 *   tokenProvider?: (reason: "initial"|"expired"|"refused") => string|Promise<string>,
 *   backoff?: {base?: number, cap?: number, factor?: number},
 *   stableMs?: number,
 *   requestTimeoutMs?: number,
 *   authProbeAfter?: number,
 *   probeUrl?: string,
 *   onState?: (change: StateChange) => void,
 *   rawFallback?: boolean,
 *   onRaw?: (data: string|ArrayBuffer) => void,
 *   onError?: (error: RingwsError) => void,
 *   transport?: "auto"|"websocket"|"sse",
 *   sseAfter?: number,
 *   sseUrl?: string,
 *   wsRetryMs?: number,
 *   onTransport?: (transport: "websocket"|"sse") => void,
 *   EventSource?: typeof EventSource,
 *   WebSocket?: typeof WebSocket,
 *   fetch?: typeof fetch,
 *   random?: () => number,
 * }} ClientOptions
 */

/**
 * The `exp` claim of a JWT (seconds since the epoch), read without verifying; undefined when unreadable.
 * @param {string|undefined} token
 * @returns {number|undefined}
 */
export function tokenExpiry(token) {
  const claims = tokenClaims(token);
  return claims && typeof claims.exp === "number" ? claims.exp : undefined;
}

/**
 * The claims of a JWT, read without verifying (for display: the server is the one that checks).
 * @param {string|undefined} token
 * @returns {Record<string, any>|undefined}
 */
export function tokenClaims(token) {
  if (!token) return undefined;
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (_) {
    return undefined;
  }
}

/**
 * The backoff delay of attempt `attempt` (0 for the first retry): full jitter, uniform in
 * [0, min(cap, base * factor^attempt)).
 * @param {number} attempt
 * @param {{base: number, cap: number, factor: number}} backoff
 * @param {() => number} random
 */
export function backoffDelay(attempt, backoff, random) {
  return Math.floor(random() * Math.min(backoff.cap, backoff.base * backoff.factor ** attempt));
}

export class RingwsClient {
  /**
   * @param {string} url the WebSocket URL (`ws://host:port/` or `wss://...`), without the token
   * @param {ClientOptions} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this.backoff = { base: 500, cap: 30_000, factor: 2, ...(options.backoff ?? {}) };
    this.stableMs = options.stableMs ?? 10_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.authProbeAfter = options.authProbeAfter ?? 3;
    this.random = options.random ?? Math.random;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    this.EventSourceImpl = options.EventSource ?? globalThis.EventSource;
    this.transportOption = options.transport ?? "auto";
    this.sseAfter = options.sseAfter ?? 2;
    this.wsRetryMs = options.wsRetryMs ?? 60_000;
    /** The transport in use: "websocket", or "sse" (receive-only). */
    this.transport = this.transportOption === "sse" ? "sse" : "websocket";
    /** @type {EventSource|null} */
    this.eventSource = null;
    /** WebSocket failures in a row without any open since `connect()`. */
    this.wsFailures = 0;
    this.wsEverOpened = false;
    this.wsRetryTimer = null;
    this.fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
    /** @type {string|undefined} */
    this.token = options.token;
    /** The subprotocol the server agreed to ("" for a server without ringws.v1). */
    this.protocol = "";
    /** @type {StateChange["state"]} */
    this.state = "closed";
    /** Connections opened, and how many of them were reconnects. */
    this.opens = 0;
    this.reconnects = 0;
    /** @type {WebSocket|null} */
    this.socket = null;
    /** @type {Map<string, {handlers: TopicHandlers, position?: Position, subscribed: boolean, everSubscribed: boolean}>} */
    this.topics = new Map();
    /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void, timer: any}>} */
    this.pending = new Map();
    this.nextId = 1;
    this.attempt = 0;
    this.unopenedFailures = 0;
    this.suspectRefusal = false;
    this.stopped = true;
    /** The subprotocol offered (null after a raw fallback), and whether ringws.v1 was ever agreed. */
    this.offer = SUBPROTOCOL;
    this.spokeV1 = false;
    this.retryTimer = null;
    this.stableTimer = null;
  }

  /** Starts connecting (and reconnecting, until `close()`). Returns this. */
  connect() {
    if (!this.stopped) return this;
    this.stopped = false;
    this.generation = (this.generation ?? 0) + 1;
    this.attempt = 0;
    this.unopenedFailures = 0;
    this.suspectRefusal = false;
    this.wsFailures = 0;
    this.wsEverOpened = false;
    this.#setTransport(this.transportOption === "sse" ? "sse" : "websocket");
    this.#open("initial");
    return this;
  }

  /** Closes with 1000 and stops reconnecting. Subscriptions are kept for a later `connect()`. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.stableTimer);
    this.#closeEventSource();
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = socket.onerror = socket.onmessage = socket.onopen = null;
      socket.close(1000, "client closed");
    }
    this.#failPending(new RingwsError("connection closed"));
    this.#setState({ state: "closed", attempt: this.attempt, code: 1000, reason: "app" });
  }

  /**
   * Gives a new token (after an auth refusal or an expiry without provider, or ahead of expiry: it is used
   * from the next connection). Resumes connecting if the client had stopped for want of a valid token.
   * @param {string} token
   */
  setToken(token) {
    this.token = token;
    const waitingForToken = ["auth", "expired", "no-token"].includes(this.lastStop);
    if (this.stopped && this.state === "closed" && waitingForToken) this.connect();
  }

  /**
   * Subscribes to `topic` (now if connected, else at the next open) and keeps the subscription across
   * reconnects. Calling it again for the same topic replaces the handlers.
   * @param {string} topic
   * @param {TopicHandlers} [handlers]
   */
  subscribe(topic, handlers = {}) {
    const existing = this.topics.get(topic);
    if (existing) {
      existing.handlers = handlers;
      return;
    }
    this.topics.set(topic, { handlers, subscribed: false, everSubscribed: false });
    if (this.#onStream()) this.#reopenEventSource();
    else if (this.#isOpen() && this.protocol === SUBPROTOCOL) this.#sendSub(topic);
  }

  /**
   * Unsubscribes and forgets the topic's position.
   * @param {string} topic
   */
  unsubscribe(topic) {
    if (!this.topics.delete(topic)) return;
    if (this.#onStream()) return this.#reopenEventSource();
    if (this.#isOpen() && this.protocol === SUBPROTOCOL) this.#request({ op: "unsub", topic }).catch(() => {});
  }

  /**
   * The position (offset, epoch) of the last publication received on `topic`, if any.
   * @param {string} topic
   * @returns {Position|undefined}
   */
  position(topic) {
    const entry = this.topics.get(topic);
    return entry?.position ? { ...entry.position } : undefined;
  }

  /**
   * Publishes on `topic`: a string is delivered as its text, any other JSON value as its JSON text.
   * Resolves with the ack (`offset` and `epoch` when the server keeps history). Rejects when not
   * connected (nothing is queued: the app decides whether to resend).
   * @param {string} topic
   * @param {unknown} data
   * @returns {Promise<{topic: string, offset?: number, epoch?: string}>}
   */
  publish(topic, data) {
    return this.#request({ op: "pub", topic, data });
  }

  /**
   * The latest publications kept on `topic` (`--history-size`), or those after `since`.
   * @param {string} topic
   * @param {{limit?: number, since?: Position}} [query]
   * @returns {Promise<{topic: string, offset?: number, epoch?: string, recovered?: boolean, publications: {offset: number, data?: string, b64?: string}[]}>}
   */
  history(topic, query = {}) {
    return this.#request({ op: "history", topic, ...query });
  }

  /**
   * Who is subscribed to `topic` on the server's node (`--presence`).
   * @param {string} topic
   * @returns {Promise<{topic: string, connections: number, users: number, members: Member[], truncated?: boolean}>}
   */
  presence(topic) {
    return this.#request({ op: "presence", topic });
  }

  /**
   * Sends text as is (for servers without ringws.v1). Returns whether it was sent.
   * @param {string} text
   */
  sendRaw(text) {
    if (!this.#isOpen()) return false;
    this.socket.send(text);
    return true;
  }

  // --- connection ------------------------------------------------------------------------------------

  #isOpen() {
    return this.socket !== null && this.socket.readyState === 1;
  }

  /** @param {StateChange} change */
  #setState(change) {
    this.state = change.state;
    if (change.state === "closed") this.lastStop = change.reason;
    this.options.onState?.(change);
  }

  /** @param {"websocket"|"sse"} transport */
  #setTransport(transport) {
    if (this.transport === transport) return;
    this.transport = transport;
    this.options.onTransport?.(transport);
  }

  /** @param {"initial"|"expired"|"refused"} reason */
  async #open(reason) {
    if (this.stopped) return;
    this.#setState({ state: "connecting", attempt: this.attempt, transport: this.transport });
    if (this.options.tokenProvider && (reason !== "initial" || this.token === undefined)) {
      let token;
      try {
        token = await this.options.tokenProvider(reason);
      } catch (_) {
        token = undefined;
      }
      if (this.stopped) return;
      if (!token || (reason === "refused" && token === this.token)) {
        this.#stop(reason === "refused" ? "auth" : "no-token");
        return;
      }
      this.token = token;
    }
    if (this.transport === "sse") return this.#openEventSource();
    let url = this.url;
    if (this.token) url += (url.includes("?") ? "&" : "?") + "token=" + this.token;
    let socket;
    try {
      socket = this.offer ? new this.WebSocketImpl(url, this.offer) : new this.WebSocketImpl(url);
    } catch (error) {
      this.options.onError?.(new RingwsError(`cannot open ${this.url}: ${error.message ?? error}`));
      this.#stop("bad-url");
      return;
    }
    this.#attach(socket);
  }

  /**
   * Makes `socket` the client's connection: its events drive the client from now on.
   * @param {WebSocket} socket
   */
  #attach(socket) {
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    let opened = false;
    const onOpen = () => {
      opened = true;
      this.wsFailures = 0;
      this.wsEverOpened = true;
      this.#setTransport("websocket");
      this.protocol = socket.protocol;
      if (this.protocol === SUBPROTOCOL) this.spokeV1 = true;
      this.opens += 1;
      if (this.opens > 1) this.reconnects += 1;
      this.unopenedFailures = 0;
      this.suspectRefusal = false;
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => { this.attempt = 0; }, this.stableMs);
      this.#setState({ state: "open", attempt: this.attempt, protocol: this.protocol, transport: "websocket" });
      if (this.protocol === SUBPROTOCOL) for (const topic of this.topics.keys()) this.#sendSub(topic);
    };
    if (socket.readyState === 1) onOpen();
    else socket.onopen = onOpen;
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearTimeout(this.stableTimer);
      for (const entry of this.topics.values()) entry.subscribed = false;
      this.#failPending(new RingwsError(`connection closed (${event.code})`));
      this.#afterClose(event.code, opened);
    };
  }

  /** @param {string} reason */
  #stop(reason) {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.#setState({ state: "closed", attempt: this.attempt, reason });
  }

  /**
   * @param {number} code
   * @param {boolean} opened
   */
  async #afterClose(code, opened) {
    if (this.stopped) return;
    const generation = this.generation;
    // After an await: whether close() (and perhaps connect()) came meanwhile, making this run stale.
    const stale = () => this.stopped || this.generation !== generation;
    if (code === CLOSE_TOKEN_EXPIRED) {
      if (!this.options.tokenProvider) return this.#stop("expired");
      return this.#retry("expired", code);
    }
    if (!opened && !this.wsEverOpened && this.transportOption === "auto" && this.transport === "websocket") {
      this.wsFailures += 1;
      if (this.wsFailures >= this.sseAfter && (await this.#serverAnswers()) && (await this.#streamTakesToken())) {
        if (stale()) return;
        // The server answers plain HTTP but the upgrade keeps failing: receive over SSE. (A server with
        // event streams speaks ringws.v1: a raw fallback tried meanwhile is undone for the later retries.)
        this.offer = SUBPROTOCOL;
        this.#setTransport("sse");
        this.#setState({ state: "reconnecting", attempt: this.attempt, delay: 0, code, transport: "sse" });
        this.retryTimer = setTimeout(() => this.#open("initial"), 0);
        return;
      }
      if (stale()) return;
    }
    if (!opened && this.transport === "websocket" && this.options.rawFallback && this.token === undefined && this.offer && !this.spokeV1) {
      const answers = await this.#serverAnswers();
      if (stale()) return;
      if (answers) {
        this.offer = null;
        this.#setState({ state: "reconnecting", attempt: this.attempt, delay: 0, code });
        this.retryTimer = setTimeout(() => this.#open("initial"), 0);
        return;
      }
    }
    if (!opened && this.token !== undefined) {
      const exp = tokenExpiry(this.token);
      if (exp !== undefined && exp * 1000 <= Date.now()) {
        if (!this.options.tokenProvider) return this.#stop("expired");
        return this.#retry("expired", code);
      }
      this.unopenedFailures += 1;
      const answers = this.unopenedFailures >= this.authProbeAfter && (await this.#serverAnswers());
      if (stale()) return;
      if (answers) {
        if (this.suspectRefusal) {
          this.suspectRefusal = false;
          this.unopenedFailures = 0;
          if (!this.options.tokenProvider) return this.#stop("auth");
          return this.#retry("refused", code);
        }
        this.suspectRefusal = true;
        this.#setState({ state: "reconnecting", attempt: this.attempt, delay: 0, code });
        this.retryTimer = setTimeout(() => this.#open("initial"), 0);
        return;
      }
      this.suspectRefusal = false;
    }
    this.#retry("initial", code);
  }

  /**
   * Schedules the next attempt with backoff.
   * @param {"initial"|"expired"|"refused"} reason
   * @param {number} code
   */
  #retry(reason, code) {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt += 1;
    this.#setState({ state: "reconnecting", attempt: this.attempt, delay, code });
    this.retryTimer = setTimeout(() => this.#open(reason), delay);
  }

  // --- Server-Sent Events (receive-only) ----------------------------------------------------------------

  /** `sseUrl`, or `/sse` on the WebSocket's host. */
  #eventSourceBase() {
    if (this.options.sseUrl) return this.options.sseUrl;
    const u = new URL(this.url);
    u.protocol = u.protocol === "wss:" ? "https:" : "http:";
    u.pathname = "/sse";
    u.search = "";
    return u.toString();
  }

  /**
   * Whether the event stream takes the token: a WebSocket refused for its token fails exactly like a
   * blocked upgrade, so before a fallback `/sse?token=` is asked without a topic, which the server answers
   * 400 ("needs ?topic=") once the token passed, 401 when it did not. No token: nothing to check. An answer
   * the page cannot read (another origin) counts as not taken: the auth checks then run as without SSE.
   */
  async #streamTakesToken() {
    if (this.token === undefined) return true;
    if (!this.fetchImpl) return false;
    const base = this.#eventSourceBase();
    try {
      const answer = await this.fetchImpl(base + (base.includes("?") ? "&" : "?") + "token=" + this.token, { cache: "no-store" });
      return answer.status === 400;
    } catch (_) {
      return false;
    }
  }

  /** The event-stream URL for the subscribed topics, the token and each topic's last position. */
  #eventSourceUrl() {
    const base = this.#eventSourceBase();
    // Topic names (A-Z a-z 0-9 . _ - : /) and JWTs need no percent-encoding in a query.
    const params = [];
    for (const [topic, entry] of this.topics) {
      params.push(`topic=${topic}`);
      if (entry.position) params.push(`since=${topic}:${entry.position.epoch}:${entry.position.offset}`);
    }
    if (this.token) params.push(`token=${this.token}`);
    return base + (base.includes("?") ? "&" : "?") + params.join("&");
  }

  #openEventSource() {
    if (!this.EventSourceImpl) {
      this.options.onError?.(new RingwsError("no EventSource in this environment"));
      return this.#stop("no-transport");
    }
    if (this.topics.size === 0) {
      // An event stream needs a topic: wait for `subscribe()`.
      this.protocol = SUBPROTOCOL;
      this.#setState({ state: "open", attempt: this.attempt, protocol: SUBPROTOCOL, transport: "sse" });
      return;
    }
    const source = new this.EventSourceImpl(this.#eventSourceUrl());
    this.eventSource = source;
    let opened = false;
    source.onopen = () => {
      if (this.eventSource !== source) return;
      opened = true;
      this.protocol = SUBPROTOCOL;
      this.unopenedFailures = 0;
      this.suspectRefusal = false;
      this.opens += 1;
      if (this.opens > 1) this.reconnects += 1;
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => { this.attempt = 0; }, this.stableMs);
      this.#setState({ state: "open", attempt: this.attempt, protocol: SUBPROTOCOL, transport: "sse" });
      this.#scheduleWebSocketRetry();
    };
    source.onmessage = (event) => this.#receive(event.data);
    source.addEventListener("close", (event) => {
      if (this.eventSource !== source) return;
      let code = 1006;
      try {
        code = JSON.parse(event.data).code ?? 1006;
      } catch (_) {}
      for (const entry of this.topics.values()) entry.subscribed = false;
      if (code === CLOSE_TOKEN_EXPIRED) {
        // The browser would reconnect with the expired token: stop it, and get a new one first.
        this.#closeEventSource();
        this.#afterClose(code, true);
      }
      // Otherwise the browser reconnects by itself (Last-Event-ID).
    });
    source.onerror = () => {
      if (this.eventSource !== source) return;
      for (const entry of this.topics.values()) entry.subscribed = false;
      clearTimeout(this.stableTimer);
      if (source.readyState === 2) {
        // Given up by the browser: the answer was not a stream (401, 403, 503...) or it never opened.
        this.#closeEventSource();
        this.#afterClose(1006, opened);
      } else {
        // The browser reconnects by itself, with Last-Event-ID.
        this.#setState({ state: "reconnecting", attempt: this.attempt, code: 1006, transport: "sse" });
      }
    };
  }

  /** Whether the client is receiving over SSE (a stream open or waiting for a first topic). */
  #onStream() {
    return this.transport === "sse" && this.socket === null && !this.stopped && (this.eventSource !== null || this.state === "open");
  }

  #closeEventSource() {
    clearTimeout(this.wsRetryTimer);
    const source = this.eventSource;
    this.eventSource = null;
    if (source) {
      source.onopen = source.onmessage = source.onerror = null;
      source.close();
    }
  }

  /** A new topic list: a new stream, from each topic's last position. */
  #reopenEventSource() {
    this.#closeEventSource();
    this.#openEventSource();
  }

  /** While on SSE (`transport: "auto"`), tries a WebSocket again in the background every `wsRetryMs`. */
  #scheduleWebSocketRetry() {
    clearTimeout(this.wsRetryTimer);
    if (this.transportOption !== "auto" || !this.WebSocketImpl) return;
    this.wsRetryTimer = setTimeout(() => {
      if (this.stopped || !this.eventSource) return;
      let url = this.url;
      if (this.token) url += (url.includes("?") ? "&" : "?") + "token=" + this.token;
      let socket;
      try {
        socket = this.offer ? new this.WebSocketImpl(url, this.offer) : new this.WebSocketImpl(url);
      } catch (_) {
        return this.#scheduleWebSocketRetry();
      }
      socket.onopen = () => {
        if (this.stopped || !this.eventSource) return socket.close(1000, "not needed");
        // Back on the WebSocket: the stream ends, every topic resubscribes with `since`.
        this.#closeEventSource();
        this.wsFailures = 0;
        this.#attach(socket);
      };
      socket.onclose = () => {
        if (this.socket !== socket) this.#scheduleWebSocketRetry();
      };
    }, this.wsRetryMs);
  }

  /** Whether the server answers plain HTTP at `probeUrl` (any answer counts). */
  async #serverAnswers() {
    if (!this.fetchImpl) return false;
    let probe = this.options.probeUrl;
    if (!probe) {
      const u = new URL(this.url);
      u.protocol = u.protocol === "wss:" ? "https:" : "http:";
      u.pathname = "/healthz";
      u.search = "";
      probe = u.toString();
    }
    try {
      await this.fetchImpl(probe, { mode: "no-cors", cache: "no-store" });
      return true;
    } catch (_) {
      return false;
    }
  }

  /** @param {Error} error */
  #failPending(error) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.pending.clear();
  }

  // --- requests and replies --------------------------------------------------------------------------

  /** @param {Record<string, unknown>} command */
  #request(command) {
    if (this.transport === "sse" && this.socket === null) {
      return Promise.reject(new RingwsError(`receive-only over SSE: ${command.op} needs the WebSocket`, 0, String(command.op), String(command.topic)));
    }
    if (!this.#isOpen()) return Promise.reject(new RingwsError("not connected", 0, String(command.op), String(command.topic)));
    if (this.protocol !== SUBPROTOCOL) {
      return Promise.reject(new RingwsError(`the server does not speak ${SUBPROTOCOL}`, 0, String(command.op)));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RingwsError(`no reply to ${command.op} in ${this.requestTimeoutMs} ms`, 0, String(command.op)));
      }, this.requestTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ id, ...command }));
    });
  }

  /** @param {string} topic */
  #sendSub(topic) {
    const entry = this.topics.get(topic);
    const command = { op: "sub", topic };
    if (entry.handlers.presence) command.presence = true;
    const resubscribed = entry.everSubscribed;
    const since = entry.position;
    if (since) command.since = since;
    this.#request(command).then(
      (reply) => {
        if (this.topics.get(topic) !== entry) return; // unsubscribed meanwhile
        entry.subscribed = true;
        entry.everSubscribed = true;
        const recovered = resubscribed ? (since ? reply.recovered === true : false) : null;
        if (!since || reply.recovered !== true) {
          // A fresh start (first subscription, or a gap that is lost): publications start after here.
          entry.position = reply.offset !== undefined ? { offset: reply.offset, epoch: reply.epoch } : undefined;
        }
        entry.handlers.onSubscribed?.({ topic, offset: reply.offset, epoch: reply.epoch, since, resubscribed, recovered });
      },
      (error) => {
        if (error.code && this.topics.get(topic) === entry) this.topics.delete(topic); // refused: forget it
        (entry.handlers.onError ?? this.options.onError)?.(error);
      },
    );
  }

  /** @param {string|ArrayBuffer} data */
  #receive(data) {
    if (this.protocol !== SUBPROTOCOL || typeof data !== "string") {
      this.options.onRaw?.(data);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch (_) {
      message = null;
    }
    if (!message || typeof message !== "object") {
      this.options.onRaw?.(data);
      return;
    }
    if (message.pub) return this.#publication(message.pub);
    if (message.ok === "sub" && this.eventSource) return this.#streamSubscribed(message);
    if (message.join || message.leave) {
      const member = message.join ?? message.leave;
      const entry = this.topics.get(member.topic);
      if (message.join) entry?.handlers.onJoin?.(member);
      else entry?.handlers.onLeave?.(member);
      return;
    }
    const pending = typeof message.id === "number" ? this.pending.get(message.id) : undefined;
    if (pending) {
      this.pending.delete(message.id);
      clearTimeout(pending.timer);
      if (message.error !== undefined) {
        pending.reject(new RingwsError(String(message.error), message.code ?? 0, message.op, message.topic));
      } else {
        pending.resolve(message);
      }
      return;
    }
    if (message.error !== undefined) {
      this.options.onError?.(new RingwsError(String(message.error), message.code ?? 0, message.op, message.topic));
      return;
    }
    this.options.onRaw?.(data);
  }

  /**
   * The reply to a topic of an event stream (the server subscribes every topic of the URL at open).
   * @param {{topic: string, offset?: number, epoch?: string, recovered?: boolean}} reply
   */
  #streamSubscribed(reply) {
    const topic = reply.topic;
    const entry = this.topics.get(topic);
    if (!entry) return;
    const resubscribed = entry.everSubscribed;
    const since = entry.position ? { ...entry.position } : undefined;
    entry.subscribed = true;
    entry.everSubscribed = true;
    const recovered = resubscribed ? (since ? reply.recovered === true : false) : null;
    if (!since || reply.recovered !== true) {
      entry.position = reply.offset !== undefined ? { offset: reply.offset, epoch: reply.epoch } : undefined;
    }
    entry.handlers.onSubscribed?.({ topic, offset: reply.offset, epoch: reply.epoch, since, resubscribed, recovered });
  }

  /** @param {{topic: string, offset?: number, epoch?: string, data?: string, b64?: string}} pub */
  #publication(pub) {
    const entry = this.topics.get(pub.topic);
    if (!entry) return;
    if (pub.offset !== undefined) {
      const last = entry.position;
      if (last && last.epoch === pub.epoch && pub.offset <= last.offset) return; // already delivered
      entry.position = { offset: pub.offset, epoch: pub.epoch };
    }
    /** @type {Publication} */
    const publication = { topic: pub.topic, offset: pub.offset, epoch: pub.epoch };
    if (pub.b64 !== undefined) publication.bytes = Uint8Array.from(atob(pub.b64), (c) => c.charCodeAt(0));
    else publication.data = pub.data;
    entry.handlers.onMessage?.(publication);
  }
}
