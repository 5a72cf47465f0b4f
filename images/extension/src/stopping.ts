/**
 * Warned before a stop, told after it (docs/admin.md, "Lifecycle").
 *
 * A student's server stops when it is idle and at the end of its lifetime. The page
 * looks at the server now and then (/api/status and /api/kernels, which Jupyter does
 * not count as activity), works out when the next stop comes (stops.ts) and, some
 * minutes before, shows a banner in every open notebook and saves them. Once the
 * server is gone it says so, with a Reload button, instead of JupyterLab's
 * dead-kernel and connection dialogs.
 *
 * After a stop the page must let go of the server: the student's socket still
 * listens, and any request (JupyterLab's polls, a kernel's reconnection) would start
 * a new server at once. So the page pauses every poll (IConnectionStatus, the way
 * JupyterLab offers for this), disposes its connections, refuses any request still
 * made (fence) and covers itself. The end
 * of a lifetime is known in advance: the page lets go a few seconds before it. An
 * idle stop is seen when the page's own connection to the server (the events
 * websocket) closes once the stop is due.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IConnectionStatus, ServerConnection } from '@jupyterlab/services';
import {
  IKernel,
  IServer,
  ISettings,
  IStop,
  Reason,
  letGoAt,
  lifetimeStop,
  nextPoll,
  nextStop,
  POLL_MAX,
  stoppedText,
  warning,
  warningText
} from './stops';
import { Banner, text } from './widgets';
import { t } from './words';

/** A stop seen this close to its predicted time (or later) is that stop. */
const TOLERANCE = 5_000;
const SAVE_TIMEOUT = 5_000;

/** The course's stop settings, from the page (nbunits writes them into Jupyter's
 * page_config_data); null on a server that has none. */
export function pageSettings(): ISettings | null {
  const seconds = (name: string): number => {
    const value = PageConfig.getOption(name);
    return value === '' ? NaN : Number(value);
  };
  const settings: ISettings = {
    maxLifetime: seconds('nbunitsMaxLifetime'),
    idleTimeout: seconds('nbunitsIdleTimeout'),
    kernelIdleTimeout: seconds('nbunitsKernelIdleTimeout'),
    warning: seconds('nbunitsStopWarning')
  };
  return Object.values(settings).every(v => Number.isFinite(v) && v >= 0) ? settings : null;
}

function time(value: unknown): number {
  const parsed = typeof value === 'string' ? Date.parse(value) : NaN;
  if (!Number.isFinite(parsed)) {
    throw new Error(`not a time: ${String(value)}`);
  }
  return parsed;
}

export class StopWatch {
  constructor(
    private readonly app: JupyterFrontEnd,
    private readonly tracker: INotebookTracker | null,
    private readonly connection: IConnectionStatus | null,
    private readonly settings: ISettings
  ) {
    this.server = app.serviceManager.serverSettings;
  }

  start(): void {
    this.tracker?.widgetAdded.connect(() => this.render());
    void this.poll();
  }

  /** The server's clock (the Date of its last answer), in milliseconds. */
  private now(): number {
    return Date.now() + this.offset;
  }

  private schedule(delay: number): void {
    window.clearTimeout(this.pollTimer);
    this.pollTimer = window.setTimeout(() => void this.poll(), delay);
  }

  private async poll(): Promise<void> {
    if (this.gone) {
      return;
    }
    let server: IServer;
    try {
      server = await this.look();
    } catch (e) {
      this.schedule(POLL_MAX); // the network, or a server starting: look again later
      return;
    }
    if (this.gone) {
      return;
    }
    this.stop = nextStop(this.settings, server);
    this.planLetGo(server);
    this.openWatch();
    this.render();
    this.schedule(nextPoll(this.settings, this.stop, this.now()));
  }

  /** What Jupyter says, without counting as activity. */
  private async look(): Promise<IServer> {
    const get = async (path: string): Promise<{ data: any; date: string | null }> => {
      const url = URLExt.join(this.server.baseUrl, path);
      const resp = await ServerConnection.makeRequest(url, { cache: 'no-store' }, this.server);
      if (!resp.ok) {
        throw new ServerConnection.ResponseError(resp);
      }
      return { data: await resp.json(), date: resp.headers.get('Date') };
    };
    const status = await get('api/status');
    // Any other query of the API is activity, unless it says it is not.
    const kernels = await get('api/kernels?no_track_activity=1');
    if (status.date) {
      // Dates have whole seconds: the server's clock is half a second past, on average.
      this.offset = Date.parse(status.date) + 500 - Date.now();
    }
    return {
      started: time(status.data.started),
      lastActivity: time(status.data.last_activity),
      kernels: (kernels.data as any[]).map(
        (k): IKernel => ({ lastActivity: time(k.last_activity), busy: k.execution_state === 'busy' })
      )
    };
  }

  /** Before a lifetime's end, the page saves and lets go of the server. */
  private planLetGo(server: IServer): void {
    window.clearTimeout(this.letGoTimer);
    const end = lifetimeStop(this.settings, server);
    if (end === null) {
      return;
    }
    const delay = letGoAt(this.settings, end) - this.now();
    this.letGoTimer = window.setTimeout(() => void this.letGo('lifetime', true), Math.max(0, delay));
  }

  /** The page's own connection to the server: it closes when the server stops. */
  private openWatch(): void {
    if (this.watch) {
      return;
    }
    const { appendToken, token, wsUrl } = this.server;
    let url = URLExt.join(wsUrl, 'api/events/subscribe');
    if (appendToken && token !== '') {
      url += `?token=${encodeURIComponent(token)}`;
    }
    const socket = new this.server.WebSocket(url);
    socket.onclose = () => {
      if (this.watch === socket) {
        this.watch = null;
        this.closed();
      }
    };
    this.watch = socket;
  }

  /** The server went away: the stop that was due, or something else (a restart by an
   * admin, the network), which JupyterLab handles as it always does. */
  private closed(): void {
    const stop = this.stop;
    if (this.gone || stop === null) {
      return;
    }
    if (this.now() >= Math.min(stop.warnAt, stop.at - TOLERANCE)) {
      void this.letGo(stop.reason, false);
    }
  }

  private async letGo(reason: Reason, save: boolean): Promise<void> {
    if (this.gone) {
      return;
    }
    if (save) {
      await this.saveAll();
    }
    this.gone = true;
    window.clearTimeout(this.pollTimer);
    window.clearTimeout(this.letGoTimer);
    if (this.connection) {
      this.connection.isConnected = false; // every poll of JupyterLab's pauses
    }
    fence(this.server);
    const watch = this.watch;
    this.watch = null;
    watch?.close();
    const services = this.app.serviceManager;
    for (const part of [services.sessions, services.kernels, services.terminals, services]) {
      try {
        part.dispose(); // kernels' and terminals' websockets, which would reconnect
      } catch (e) {
        console.warn('nbunits: while letting go of the server', e);
      }
    }
    this.render();
    showStopped(stoppedText(this.settings, reason, t));
  }

  /** Every open notebook with unsaved changes, saved (a save is activity: only
   * when there is something to save). */
  private async saveAll(): Promise<void> {
    const saves: Promise<void>[] = [];
    this.tracker?.forEach(panel => {
      if (!panel.context.isDisposed && panel.context.model.dirty) {
        saves.push(panel.context.save().catch(e => console.warn('nbunits: save failed', e)));
      }
    });
    const timeout = new Promise<void>(resolve => window.setTimeout(resolve, SAVE_TIMEOUT));
    await Promise.race([Promise.all(saves).then(() => undefined), timeout]);
  }

  /** The banner in every open notebook while a stop is near; none otherwise. */
  private render(): void {
    const stop = this.stop;
    const now = this.now();
    if (this.gone || stop === null || !warning(this.settings, stop, now)) {
      this.banners.forEach(b => b.dispose());
      this.banners.clear();
      this.warned = '';
      return;
    }
    const key = `${stop.reason}@${stop.at}`;
    if (this.warned !== key) {
      this.warned = key;
      void this.saveAll(); // "your work is saved": make it true
    }
    const words = warningText(this.settings, stop, now, t);
    this.tracker?.forEach(panel => this.banner(panel, stop.reason).setText(words));
  }

  private banner(panel: NotebookPanel, reason: Reason): StopBanner {
    let banner = this.banners.get(panel);
    if (!banner || banner.isDisposed || banner.reason !== reason) {
      banner?.dispose();
      banner = new StopBanner(reason, () => this.act(reason));
      this.banners.set(panel, banner);
      panel.contentHeader.insertWidget(0, banner);
      panel.disposed.connect(() => this.banners.delete(panel));
    }
    return banner;
  }

  /** The banner's button: save now (before the lifetime's end), or show activity
   * (an idle stop: any request the server counts postpones it). */
  private async act(reason: Reason): Promise<void> {
    await this.saveAll();
    if (reason === 'idle') {
      const url = URLExt.join(this.server.baseUrl, 'api/contents') + '?content=0';
      await ServerConnection.makeRequest(url, { cache: 'no-store' }, this.server).catch(
        () => undefined
      );
    }
    await this.poll();
  }

  private readonly server: ServerConnection.ISettings;
  private offset = 0;
  private stop: IStop | null = null;
  private pollTimer = 0;
  private letGoTimer = 0;
  private watch: WebSocket | null = null;
  private gone = false;
  private warned = '';
  private banners = new Map<NotebookPanel, StopBanner>();
}

/** The banner before a stop: said politely to screen readers (role="status"), with
 * one button, reachable by keyboard. */
class StopBanner extends Banner {
  constructor(
    readonly reason: Reason,
    act: () => Promise<void>
  ) {
    super();
    this.addClass('nbunits-banner');
    this.addClass('nbunits-stop-banner');
    this.message.setAttribute('role', 'status');
    this.message.setAttribute('aria-live', 'polite');
    const label = t(reason === 'idle' ? 'lab.stop.keep' : 'lab.stop.save');
    const button = text('button', label, 'jp-mod-styled jp-mod-accept');
    button.addEventListener('click', () => void act());
    this.node.append(this.message, button);
  }

  setText(words: string): void {
    if (this.message.textContent !== words) {
      this.message.textContent = words;
      this.update();
    }
  }

  private readonly message = text('p', '');
}

/**
 * From now on the page's requests to its server fail at once. Not every poll pauses
 * with IConnectionStatus (Notebook 7's checkpoint poll does not), and a request that
 * reached the student's socket would start a new server.
 */
function fence(settings: ServerConnection.ISettings): void {
  const refused = (): TypeError => new TypeError('nbunits: the server was stopped');
  const open = settings as { -readonly [K in keyof typeof settings]: (typeof settings)[K] };
  open.fetch = () => Promise.reject(refused());
  open.WebSocket = new Proxy(WebSocket, {
    construct: () => {
      throw refused();
    }
  });
}

/** The page once its server is gone: a message and a Reload button over everything
 * (the rest inert: nothing there would work, and a click could start a new server). */
function showStopped(words: string): void {
  if (document.querySelector('.nbunits-stopped')) {
    return;
  }
  const overlay = document.createElement('div');
  overlay.className = 'nbunits-stopped';
  overlay.setAttribute('role', 'alertdialog');
  overlay.setAttribute('aria-modal', 'true');
  overlay.setAttribute('aria-labelledby', 'nbunits-stopped-title');
  overlay.setAttribute('aria-describedby', 'nbunits-stopped-text');
  const box = document.createElement('div');
  box.className = 'nbunits-stopped-box';
  const title = text('h2', t('lab.stop.title'));
  title.id = 'nbunits-stopped-title';
  const message = text('p', words);
  message.id = 'nbunits-stopped-text';
  const reload = text('button', t('lab.stop.reload'), 'jp-mod-styled jp-mod-accept');
  reload.addEventListener('click', () => window.location.reload());
  box.append(title, message, reload);
  overlay.append(box);
  Array.from(document.body.children).forEach(child => child.setAttribute('inert', ''));
  document.body.append(overlay);
  reload.focus();
}
