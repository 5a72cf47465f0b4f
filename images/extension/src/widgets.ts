/** Pieces of nbunits' own interface, shared by the Course menu and the stop warnings. */
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

export function text(tag: string, content: string, className = ''): HTMLElement {
  const node = document.createElement(tag);
  node.textContent = content;
  if (className) {
    node.className = className;
  }
  return node;
}

/**
 * A banner in a notebook's content header. The header is a Lumino BoxPanel that
 * sizes its children from their minimum height: give it the text's own height,
 * or the notebook below covers it.
 */
export class Banner extends Widget {
  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this.update();
  }

  protected onResize(msg: Widget.ResizeMessage): void {
    super.onResize(msg);
    this.update();
  }

  protected onUpdateRequest(msg: Message): void {
    super.onUpdateRequest(msg);
    const height = this.node.scrollHeight;
    if (height && this.node.style.minHeight !== `${height}px`) {
      this.node.style.minHeight = `${height}px`;
      this.parent?.fit();
    }
  }
}
