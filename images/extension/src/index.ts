/**
 * nbunits: what a student can do from inside their notebook.
 *
 * A "Course" menu (Submit for grading, Reset to original, Share a static version,
 * Stop sharing, Download my work, Show my student id); on a notebook whose course has a newer
 * version, a banner saying what changed with the reset at hand; and a banner
 * before the server stops, a message after (stopping.ts). Every action is a
 * request to /_nbunits/student/<course>/<user>/<capability>/<action>, on the same
 * server as the notebook: the capability in the path is the student's credential
 * (nginx and nbunits-helper check it), so nothing depends on cookies, which a
 * browser may not send inside the course's cross-site iframe. "Download my work"
 * is the student's own Jupyter's (<base URL>nbunits/download, in
 * units/jupyter/jupyter_server_config.py), behind the same capability.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IConnectionStatus } from '@jupyterlab/services';
import { Menu, Widget } from '@lumino/widgets';
import { pageSettings, StopWatch } from './stopping';
import { Banner, text } from './widgets';
import { language, t } from './words';

/** What nbunits-helper answers (protocol.py: StudentState). */
interface IState {
  student_id: string;
  course: string;
  notebook: string;
  newer: boolean;
  changes: string[];
  kept: string;
  url: string;
  grade: IGrade | null;
}

/** A grading's result (helper/grading.py: Grade). */
interface IGrade {
  total: number;
  max: number;
  tests: {
    grade_id: string;
    points: number;
    max: number;
    passed: boolean;
    error: string;
    message: string;
  }[];
  sent: boolean;
}

const COMMANDS = {
  submit: 'nbunits:submit',
  reset: 'nbunits:reset',
  share: 'nbunits:share',
  unshare: 'nbunits:unshare',
  download: 'nbunits:download',
  id: 'nbunits:student-id'
};

/** /nb/<course>/<user>/<cap>/ -> /_nbunits/student/<course>/<user>/<cap>/ */
function endpoint(): string | null {
  const base = PageConfig.getOption('baseUrl');
  const m = /^\/nb\/([^/]+\/[^/]+\/[^/]+\/)$/.exec(base);
  return m ? `/_nbunits/student/${m[1]}` : null;
}

async function ask(action: string, notebook: string): Promise<IState> {
  const base = endpoint();
  if (!base) {
    throw new Error(t('lab.error.not_course'));
  }
  // The answer's words are in the page's language (else the browser's).
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (language()) {
    headers['Accept-Language'] = language();
  }
  let resp: Response;
  try {
    resp = await fetch(base + action, {
      method: 'POST',
      credentials: 'omit',
      cache: 'no-store',
      headers,
      body: JSON.stringify({ notebook })
    });
  } catch (e) {
    throw new Error(t('lab.error.unreachable'));
  }
  if (resp.status === 403) {
    // nginx refused the capability: the link changed (a new secret) or is broken.
    throw new Error(t('lab.error.bad_link'));
  }
  const data = await resp.json().catch(() => null);
  if (data && data.code === 'student_busy') {
    // nginx's own answer to a flood of requests (its words are English).
    throw new Error(t('lab.error.busy'));
  }
  if (!resp.ok || data === null) {
    throw new Error((data && data.message) || t('lab.error.ours'));
  }
  return data as IState;
}

function body(...nodes: HTMLElement[]): Widget {
  const widget = new Widget();
  widget.addClass('nbunits-dialog');
  nodes.forEach(n => widget.node.appendChild(n));
  return widget;
}

function changesList(changes: string[]): HTMLElement {
  const list = document.createElement('ul');
  changes.forEach(c => list.appendChild(text('li', c)));
  return list;
}

async function reset(panel: NotebookPanel): Promise<void> {
  const path = panel.context.path;
  const name = path.split('/').pop() || path;
  const ok = await showDialog({
    title: t('lab.reset.title'),
    body: body(text('p', t('lab.reset.question', { name })), text('p', t('lab.reset.kept_beside'))),
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: t('lab.reset.button') })]
  });
  if (!ok.button.accept) {
    return;
  }
  if (panel.context.model.dirty) {
    await panel.context.save(); // the kept copy has the last edits too
  }
  const state = await ask('reset', path);
  await panel.context.revert();
  panel.contentHeader.widgets
    .filter(w => w.hasClass('nbunits-banner'))
    .forEach(w => w.dispose());
  await showDialog({
    title: t('lab.reset.done'),
    body: body(
      text('p', t('lab.reset.current', { name })),
      text('p', state.kept ? t('lab.reset.kept', { kept: state.kept }) : t('lab.reset.nothing_kept'))
    ),
    buttons: [Dialog.okButton()]
  });
}

async function share(panel: NotebookPanel): Promise<void> {
  if (panel.context.model.dirty) {
    await panel.context.save(); // share what the student sees
  }
  const state = await ask('share', panel.context.path);
  const url = new URL(state.url, window.location.origin).href;
  const link = document.createElement('a');
  link.href = url;
  link.target = '_blank';
  link.rel = 'noopener noreferrer';
  link.textContent = url;
  link.className = 'nbunits-share-link';
  await showDialog({
    title: t('lab.share.title'),
    body: body(text('p', t('lab.share.anyone')), link, text('p', t('lab.share.again'))),
    buttons: [Dialog.okButton()]
  });
}

/**
 * "Submit for grading": the saved notebook (saved first) is graded by nbunits in a
 * fresh container, with the course's own tests; the dialog says the score and what
 * each test said.
 */
async function submit(panel: NotebookPanel): Promise<void> {
  if (panel.context.model.dirty) {
    await panel.context.save(); // grade what the student sees
  }
  const state = await ask('submit', panel.context.path);
  const grade = state.grade;
  if (!grade) {
    throw new Error(t('lab.error.ours'));
  }
  const list = document.createElement('ul');
  grade.tests.forEach(test => {
    const values = { test: test.grade_id, points: test.points, max: test.max };
    const error = test.message ? `${test.error}: ${test.message}` : test.error;
    list.appendChild(
      text('li', test.passed ? t('lab.submit.passed', values) : t('lab.submit.failed', { ...values, error }))
    );
  });
  await showDialog({
    title: t('lab.submit.title'),
    body: body(
      text('p', t('lab.submit.score', { score: grade.total, max: grade.max }), 'nbunits-score'),
      text('p', grade.sent ? t('lab.submit.sent') : t('lab.submit.not_sent')),
      list,
      text('p', t('lab.submit.saved'))
    ),
    buttons: [Dialog.okButton()]
  });
}

async function unshare(panel: NotebookPanel): Promise<void> {
  await ask('unshare', panel.context.path);
  await showDialog({
    title: t('lab.unshare.title'),
    body: body(text('p', t('lab.unshare.body'))),
    buttons: [Dialog.okButton()]
  });
}

async function showId(panel: NotebookPanel | null): Promise<void> {
  const state = await ask('info', panel ? panel.context.path : '');
  await showDialog({
    title: t('lab.id.title'),
    body: body(
      text('p', t('lab.id.course', { course: state.course })),
      text('code', state.student_id, 'nbunits-student-id'),
      text('p', t('lab.id.why'))
    ),
    buttons: [Dialog.okButton()]
  });
}

/**
 * "Download my work": a zip of the course folder, from the student's own server,
 * saved by the browser (a link click: the server names the file, and the archive
 * streams to disk, never whole in this page). What the open notebooks have not
 * saved is saved first: the archive holds the files as they are on disk.
 */
async function download(tracker: INotebookTracker | null): Promise<void> {
  const saving: Promise<void>[] = [];
  tracker?.forEach(panel => {
    if (panel.context.model.dirty && !panel.context.model.readOnly) {
      saving.push(panel.context.save());
    }
  });
  await Promise.all(saving);
  const link = document.createElement('a');
  link.href = URLExt.join(PageConfig.getBaseUrl(), 'nbunits', 'download');
  link.download = '';
  link.rel = 'noopener';
  link.hidden = true;
  document.body.appendChild(link);
  link.click();
  link.remove();
}

/** The banner on a notebook whose course has a newer version. */
async function checkNewer(app: JupyterFrontEnd, panel: NotebookPanel): Promise<void> {
  await panel.context.ready;
  let state: IState;
  try {
    state = await ask('info', panel.context.path);
  } catch (e) {
    return; // not a course notebook, or the server is busy: no banner
  }
  if (!state.newer || panel.isDisposed) {
    return;
  }
  const banner = new Banner();
  banner.addClass('nbunits-banner');
  const message = text('p', t('lab.newer.body'));
  if (state.changes.length) {
    message.appendChild(changesList(state.changes));
  }
  const button = text('button', t('lab.newer.button'), 'jp-mod-styled jp-mod-warn');
  button.addEventListener('click', () => {
    reset(panel).catch(e => showErrorMessage(t('lab.reset.title'), e));
  });
  banner.node.append(message, button);
  panel.contentHeader.addWidget(banner);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbunits-course:plugin',
  description: 'The Course menu, the newer-version banner and the stop warnings of nbunits.',
  autoStart: true,
  optional: [INotebookTracker, IMainMenu, IConnectionStatus],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker | null,
    mainMenu: IMainMenu | null,
    connection: IConnectionStatus | null
  ) => {
    if (!endpoint()) {
      return; // not a student's server of nbunits
    }
    const current = () => (tracker ? tracker.currentWidget : null);
    const withNotebook = (title: string, run: (p: NotebookPanel) => Promise<void>) => ({
      label: title,
      isEnabled: () => current() !== null,
      execute: async () => {
        const panel = current();
        if (panel) {
          await run(panel).catch(e => showErrorMessage(title, e));
        }
      }
    });
    app.commands.addCommand(COMMANDS.submit, withNotebook(t('lab.menu.submit'), submit));
    app.commands.addCommand(COMMANDS.reset, withNotebook(t('lab.menu.reset'), reset));
    app.commands.addCommand(COMMANDS.share, withNotebook(t('lab.menu.share'), share));
    app.commands.addCommand(COMMANDS.unshare, withNotebook(t('lab.menu.unshare'), unshare));
    app.commands.addCommand(COMMANDS.download, {
      label: t('lab.menu.download'),
      caption: t('lab.menu.download.caption'),
      execute: () =>
        download(tracker).catch(e => showErrorMessage(t('lab.menu.download'), e))
    });
    app.commands.addCommand(COMMANDS.id, {
      label: t('lab.menu.id'),
      execute: () => showId(current()).catch(e => showErrorMessage(t('lab.id.title'), e))
    });
    if (mainMenu) {
      const menu = new Menu({ commands: app.commands });
      menu.title.label = t('lab.menu.course');
      menu.id = 'nbunits-course-menu';
      // No separator: Lumino renders one focusable (tabindex) yet presentational,
      // which axe-core reports (aria-required-children; test_accessibility.py).
      [
        COMMANDS.submit,
        COMMANDS.reset,
        COMMANDS.share,
        COMMANDS.unshare,
        COMMANDS.download,
        COMMANDS.id
      ].forEach(command => menu.addItem({ command }));
      mainMenu.addMenu(menu, true, { rank: 2000 });
    }
    if (tracker) {
      tracker.widgetAdded.connect((_, panel) => {
        void checkNewer(app, panel);
      });
    }
    const stops = pageSettings();
    if (stops) {
      new StopWatch(app, tracker, connection, stops).start();
    }
  }
};

export default plugin;
