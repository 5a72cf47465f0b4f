/**
 * When a student's server stops, and when the page says so: arithmetic only, on the
 * course's settings (handed to the page by nbunits: helper/capability.py stop_times)
 * and on what Jupyter's own API says (/api/status, /api/kernels). No DOM, no fetch:
 * tests/unit/test_stop_timing.py runs it under node.
 *
 * Times are milliseconds on the server's clock; durations in settings are seconds.
 */

/** The course's settings, as the container unit passes them to Jupyter. */
export interface ISettings {
  maxLifetime: number; // `timeout` around Jupyter; 0: none
  idleTimeout: number; // ServerApp.shutdown_no_activity_timeout; 0: none
  kernelIdleTimeout: number; // MappingKernelManager.cull_idle_timeout; 0: never culled
  warning: number; // the course's stop_warning; 0: no banner
}

/** A running kernel (/api/kernels). */
export interface IKernel {
  lastActivity: number;
  busy: boolean;
}

/** The server (/api/status), with its kernels. */
export interface IServer {
  started: number;
  lastActivity: number; // every activity Jupyter counts, kernels' included
  kernels: IKernel[];
}

export type Reason = 'idle' | 'lifetime';

export interface IStop {
  reason: Reason;
  at: number; // when the server stops
  warnAt: number; // when the banner appears
}

/** jupyter_server looks for "no activity" once a minute, counted from its start
 * (ServerApp.init_shutdown_no_activity: a 60 s PeriodicCallback). */
export const IDLE_CHECK = 60_000;
/** The lifetime's `timeout` starts with the container, a little before Jupyter's
 * `started`: the page lets go of the server this long before the predicted end. */
export const LIFETIME_MARGIN = 10_000;
/** Polls while nothing is due (a stop can only come later than predicted, but a busy
 * kernel, which has no idle stop, may become idle). */
export const POLL_MAX = 60_000;
const POLL_MIN = 2_000;

/** When the lifetime cap stops the server; null: no cap. */
export function lifetimeStop(s: ISettings, server: IServer): number | null {
  return s.maxLifetime > 0 ? server.started + s.maxLifetime * 1000 : null;
}

/**
 * When Jupyter stops itself for lack of activity, if nothing happens meanwhile; null:
 * not while things are as they are (a busy kernel, kernels that are never culled).
 *
 * Jupyter stops at its first check more than `idleTimeout` after the last activity,
 * once no kernel is left: idle kernels are culled `kernelIdleTimeout` after their own
 * last activity (a cull is not activity: measured on jupyter_server 2.21). At the
 * earliest: culls run every cull_interval, and the page would rather warn early.
 */
export function idleStop(s: ISettings, server: IServer): number | null {
  if (s.idleTimeout <= 0) {
    return null;
  }
  let eligible = server.lastActivity + s.idleTimeout * 1000;
  for (const kernel of server.kernels) {
    if (kernel.busy || s.kernelIdleTimeout <= 0) {
      return null;
    }
    eligible = Math.max(eligible, kernel.lastActivity + s.kernelIdleTimeout * 1000);
  }
  const checks = Math.max(1, Math.floor((eligible - server.started) / IDLE_CHECK) + 1);
  return server.started + checks * IDLE_CHECK;
}

/** How long before a stop the banner shows: the course's warning, shortened to a
 * third of the timeout for short ones (a 30 s lifetime is not warned 5 minutes ahead). */
export function lead(s: ISettings, reason: Reason): number {
  const span = reason === 'lifetime' ? s.maxLifetime : s.idleTimeout;
  return Math.max(0, Math.min(s.warning, span / 3)) * 1000;
}

/** The next stop, the earlier of the two; null: none in sight. */
export function nextStop(s: ISettings, server: IServer): IStop | null {
  const stops: IStop[] = [];
  const life = lifetimeStop(s, server);
  const idle = idleStop(s, server);
  if (life !== null) {
    stops.push({ reason: 'lifetime', at: life, warnAt: life - lead(s, 'lifetime') });
  }
  if (idle !== null) {
    stops.push({ reason: 'idle', at: idle, warnAt: idle - lead(s, 'idle') });
  }
  stops.sort((a, b) => a.at - b.at);
  return stops.length ? stops[0] : null;
}

/** Whether the banner shows now. */
export function warning(s: ISettings, stop: IStop | null, now: number): boolean {
  return stop !== null && s.warning > 0 && now >= stop.warnAt;
}

/** When the page lets go of its server before a lifetime stop: it saves, closes its
 * connections and says the server stopped (a reconnection would start a new one). */
export function letGoAt(s: ISettings, end: number): number {
  return end - Math.min(LIFETIME_MARGIN, lead(s, 'lifetime') / 2);
}

/** The delay until the next look at the server: up to the banner, then often
 * enough that activity takes the banner away within a few seconds. */
export function nextPoll(s: ISettings, stop: IStop | null, now: number): number {
  if (stop === null) {
    return POLL_MAX;
  }
  if (now < stop.warnAt) {
    return Math.min(POLL_MAX, Math.max(POLL_MIN, stop.warnAt - now));
  }
  const during = lead(s, stop.reason) / 5;
  return Math.min(15_000, Math.max(POLL_MIN, during));
}

/** Words by catalog key (locales/*.json, "lab.*"), with their {placeholders} filled. */
export type Say = (key: string, values?: Record<string, string | number>) => string;

/** The English of the stop messages: the words the page has by itself (words.ts). */
export const STOP_ENGLISH: Record<string, string> = {
  'lab.stop.lifetime':
    'Your server stops in {left}: a session lasts at most {limit}. ' +
    'Your work is saved. Afterwards, reload the page to start a new session.',
  'lab.stop.idle':
    'Your server stops in {left}: nothing has happened in it for a while. ' +
    'Your work is saved. Any activity (running a cell, saving) keeps it running.',
  'lab.stopped.lifetime':
    'Your server was stopped: it reached its time limit of {limit}. Your saved work is ' +
    'kept. Reload the page (or open the exercise again) to start it again.',
  'lab.stopped.idle':
    'Your server was stopped: it was idle for more than {limit}. Your saved work is ' +
    'kept. Reload the page (or open the exercise again) to start it again.',
  'lab.duration.second': '{n} second',
  'lab.duration.seconds': '{n} seconds',
  'lab.duration.minute': '{n} minute',
  'lab.duration.minutes': '{n} minutes',
  'lab.duration.hour': '{n} hour',
  'lab.duration.hours': '{n} hours'
};

/** `message` with its {name}s replaced by `values` (an unknown name stays as it is). */
export function fill(message: string, values: Record<string, string | number> = {}): string {
  return message.replace(/\{(\w+)\}/g, (whole, name: string) =>
    Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : whole
  );
}

const english: Say = (key, values) => fill(STOP_ENGLISH[key] ?? key, values);

/** A duration, for people: "40 seconds", "5 minutes", "1 hour", "1.5 hours". */
export function duration(ms: number, say: Say = english): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  const minutes = Math.round(seconds / 60);
  const [n, unit] =
    seconds < 90
      ? [seconds, 'second']
      : minutes < 60 || (minutes < 90 && minutes % 60 !== 0)
        ? [minutes, 'minute']
        : [Math.round(seconds / 360) / 10, 'hour'];
  return say(`lab.duration.${unit}${n === 1 ? '' : 's'}`, { n });
}

/** What the banner says before a stop. */
export function warningText(s: ISettings, stop: IStop, now: number, say: Say = english): string {
  const left = duration(stop.at - now, say);
  return stop.reason === 'lifetime'
    ? say('lab.stop.lifetime', { left, limit: duration(s.maxLifetime * 1000, say) })
    : say('lab.stop.idle', { left });
}

/** What the page says once the server is gone. */
export function stoppedText(s: ISettings, reason: Reason, say: Say = english): string {
  return reason === 'lifetime'
    ? say('lab.stopped.lifetime', { limit: duration(s.maxLifetime * 1000, say) })
    : say('lab.stopped.idle', { limit: duration(s.idleTimeout * 1000, say) });
}
