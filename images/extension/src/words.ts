/**
 * The words of the Course menu, its dialogs and banners, in the student's language.
 *
 * nbunits-helper hands the page the "lab.*" entries of the student's catalog
 * (locales/<language>.json; helper/capability.py extension_text) as the page option
 * nbunitsText, a JSON object. A key it lacks (a config written before the key was)
 * is said in the English here, which is en.json's (a unit test keeps them equal).
 */
import { PageConfig } from '@jupyterlab/coreutils';
import { fill, Say, STOP_ENGLISH } from './stops';

export const ENGLISH: Record<string, string> = {
  ...STOP_ENGLISH,
  'lab.menu.course': 'Course',
  'lab.menu.reset': 'Reset to original',
  'lab.menu.share': 'Share a static version',
  'lab.menu.unshare': 'Stop sharing',
  'lab.menu.download': 'Download my work',
  'lab.menu.download.caption': 'A zip archive of your course folder: your notebooks and files',
  'lab.menu.id': 'Show my student id',
  'lab.error.not_course': 'This notebook was not opened from a course.',
  'lab.error.unreachable': 'The server could not be reached. Please try again in a minute.',
  'lab.error.bad_link':
    'Your notebook link does not work any more. Your work is safe: open the notebook ' +
    'again from your course page.',
  'lab.error.ours': 'Something went wrong on our side. Please try again later.',
  'lab.error.busy':
    'You have made many requests in a short time: please wait a moment before the next ' +
    'one. Your work is safe; nothing was changed.',
  'lab.reset.title': 'Reset to original',
  'lab.reset.question': "Replace your copy of {name} with the course's current version?",
  'lab.reset.kept_beside':
    'Your copy is kept beside it, renamed with the date: nothing you wrote is deleted.',
  'lab.reset.button': 'Reset',
  'lab.reset.done': 'Reset done',
  'lab.reset.current': "{name} is now the course's current version.",
  'lab.reset.kept': 'Your previous copy is kept as {kept}.',
  'lab.reset.nothing_kept': 'Your copy had no changes of yours, so there was nothing to keep.',
  'lab.share.title': 'Shared: a static version',
  'lab.share.anyone':
    'Anyone with this link can read this notebook as it is now (nothing in it runs):',
  'lab.share.again':
    'Share it again after changes to update it. "Stop sharing" in the Course menu ' +
    'turns the link off.',
  'lab.unshare.title': 'No longer shared',
  'lab.unshare.body': 'The link to this notebook no longer works.',
  'lab.menu.submit': 'Submit for grading',
  'lab.submit.title': 'Graded',
  'lab.submit.score': 'Your score: {score}/{max}',
  'lab.submit.sent': 'This score is sent to your course (its grades).',
  'lab.submit.not_sent':
    'This score is not sent to your course: this notebook was not opened from a graded ' +
    'component of it.',
  'lab.submit.passed': '{test}: passed ({points}/{max})',
  'lab.submit.failed': '{test}: failed ({points}/{max}): {error}',
  'lab.submit.saved':
    "Your saved notebook was run from the start in a fresh kernel, with the course's own " +
    'tests; your kernel here is untouched. Submit again after changes: your last ' +
    'submission counts.',
  'lab.id.title': 'My student id',
  'lab.id.course': 'Your student id in the course {course}:',
  'lab.id.why': 'The course team may ask for it when you need help.',
  'lab.newer.body':
    'The course team has published a new version of this notebook. Your copy has ' +
    'your own changes, so it was left as it is.',
  'lab.newer.button': 'Reset to the new version',
  'lab.stop.keep': 'Keep it running',
  'lab.stop.save': 'Save now',
  'lab.stop.title': 'Your server was stopped',
  'lab.stop.reload': 'Reload'
};

let given: Record<string, unknown> | null = null;

/** The page's words (nbunitsText); none if it has none or they are not an object. */
function page(): Record<string, unknown> {
  if (given === null) {
    given = {};
    try {
      const parsed: unknown = JSON.parse(PageConfig.getOption('nbunitsText') || '{}');
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
        given = parsed as Record<string, unknown>;
      }
    } catch (e) {
      console.warn('nbunits: the page options have no valid nbunitsText', e);
    }
  }
  return given;
}

/** The page's language (a tag nbunits has a catalog for), '' on an older config. */
export function language(): string {
  return PageConfig.getOption('nbunitsLanguage');
}

/** The words for `key`, in the student's language, else in English. */
export const t: Say = (key, values) => {
  const found = page()[key];
  return fill(typeof found === 'string' && found ? found : ENGLISH[key] ?? key, values);
};

