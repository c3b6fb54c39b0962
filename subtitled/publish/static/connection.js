// The overlay's connection to the daemon: the shell around `CaptionFeed`.
//
// Before each (re)connection it asks `/healthz` whether the daemon is up, which
// keeps failed WebSocket handshakes out of the way while the daemon is down, and
// tells from `uptime_s` whether the daemon started while the page was away from
// it (a restart). Then it opens the feed with `?since=` the last seq seen, or
// `since=0` after a restart (everything the new daemon holds is new to the page).
// Retries back off from RETRY_MIN_MS to RETRY_MAX_MS.

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 3000;

export class FeedConnection {
  /**
   * `feed`: a CaptionFeed. `languages`: null (all) or a list. `onChanges(changes)`:
   * what `feed.apply` returned. `onState()`: the connection state changed.
   */
  constructor({feed, languages, onChanges, onState}) {
    this.feed = feed;
    this.languages = languages;
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
        if (!health || typeof health !== "object") {
          this.retry();
          return;
        }
        const awayMs = Date.now() - this.awaySince;
        if (typeof health.uptime_s === "number" && health.uptime_s * 1000 < awayMs) {
          this.feed.daemonRestarted();
        }
        this.open();
      });
  }

  open() {
    const query = new URLSearchParams();
    if (this.feed.since !== null) query.set("since", String(this.feed.since));
    if (this.languages !== null) query.set("languages", this.languages.join(","));
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.feed.connecting();
    const socket = new WebSocket(`${scheme}//${location.host}/?${query}`);
    this.socket = socket;
    socket.onopen = () => {
      this.retryMs = RETRY_MIN_MS;
      this.setState("open");
    };
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        console.warn("subtitled overlay: a feed message is not JSON", error);
        return;
      }
      this.onChanges(this.feed.apply(message));
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
