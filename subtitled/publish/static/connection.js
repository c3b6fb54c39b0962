// The overlay's connection to the daemon: the shell around `CaptionFeed`.
//
// Before each (re)connection it asks `/healthz` (which needs no token) whether the
// daemon is up, so that no WebSocket handshake fails while the daemon is down;
// then it opens the feed with `?since=` the last seq seen (see captions.js), the
// languages wanted and the page's own `token`, if it has one. Retries back off
// from RETRY_MIN_MS to RETRY_MAX_MS.

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 3000;

export class FeedConnection {
  /**
   * `feed`: a CaptionFeed. `languages`: null (all) or a list. `token`: null or the
   * daemon's token. `onChanges(changes)`: what `feed.apply` returned. `onState()`:
   * the connection state changed.
   */
  constructor({feed, languages, token, onChanges, onState}) {
    this.feed = feed;
    this.languages = languages;
    this.token = token;
    this.onChanges = onChanges;
    this.onState = onState;
    this.state = "connecting";  // connecting | open | closed
    this.awaySince = Date.now();  // since the page lost the daemon (or was loaded)
    this.retryMs = RETRY_MIN_MS;
    this.socket = null;
  }

  start() {
    this.probe();
  }

  setState(state) {
    this.state = state;
    this.onState();
  }

  probe() {
    this.setState("connecting");
    fetch("/healthz", {cache: "no-store"})
      .then((response) => (response.ok ? response.json() : null))
      .catch(() => null)
      .then((health) => {
        if (health && typeof health === "object") this.open();
        else this.retry();
      });
  }

  open() {
    const query = new URLSearchParams();
    if (this.feed.since !== null) query.set("since", String(this.feed.since));
    if (this.languages !== null) query.set("languages", this.languages.join(","));
    if (this.token !== null) query.set("token", this.token);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.feed.connecting();
    const socket = new WebSocket(`${scheme}//${location.host}/?${query}`);
    this.socket = socket;
    socket.onmessage = (event) => {
      if (this.state !== "open") {  // the hello: the daemon has us on its list
        this.retryMs = RETRY_MIN_MS;
        this.setState("open");
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        console.warn("subtitled overlay: a feed message is not JSON", error);
        return;
      }
      const changes = this.feed.apply(message);
      if (changes.some((c) => c.type === "resync")) {
        socket.onmessage = null;  // what follows resumes the wrong numbering
        socket.close();
      }
      this.onChanges(changes);
    };
    socket.onclose = () => {
      if (this.state === "open") this.awaySince = Date.now();
      this.socket = null;
      this.setState("closed");
      this.retry();
    };
  }

  retry() {
    setTimeout(() => this.probe(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }
}
