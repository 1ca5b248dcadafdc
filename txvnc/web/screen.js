// How the machine's screen sits in the page: scaled to fit the window (the
// default), shown 1:1 with scroll bars, or with the machine's own screen
// resized to the window (noVNC's resizeSession: an RFB SetDesktopSize,
// which the server may refuse and a view-only console never sends).
//
// And how a keyboard reaches it and leaves it. noVNC's canvas takes every
// key, Tab included, once it has the focus: the page puts it in the tab
// order after the controls and gives the focus back to the controls on
// Ctrl+Alt+Shift (pressed together, then let go), which the machine never
// sees whole.

const MODES = ["fit", "native", "remote"];
const STORAGE_KEY = "txvnc.scaling";
export const LEAVE_SCREEN = "Ctrl+Alt+Shift";

function stored() {
  try {
    const mode = window.localStorage.getItem(STORAGE_KEY);
    return MODES.includes(mode) ? mode : "fit";
  } catch (err) {
    return "fit";  // storage may be off: the default, every time
  }
}

export class Scaling {
  constructor(page) {
    this._page = page;
    this._select = document.getElementById("scaling");
    this._remote = this._select.querySelector("option[value=remote]");
    this._input = true;
    this.mode = stored();
    this._select.value = this.mode;
    this._select.addEventListener("change", () => {
      this.set(this._select.value);
      try {
        window.localStorage.setItem(STORAGE_KEY, this.mode);
      } catch (err) {
        // Not remembered: the choice still holds for this page.
      }
    });
  }

  set(mode) {
    this.mode = MODES.includes(mode) ? mode : "fit";
    if (this.mode === "remote" && !this._input) {
      this.mode = "fit";
    }
    this._select.value = this.mode;
    document.body.dataset.scaling = this.mode;
    this.apply(this._page.rfb);
  }

  apply(rfb) {
    if (!rfb) {
      return;
    }
    rfb.clipViewport = false;
    rfb.scaleViewport = this.mode === "fit";
    rfb.resizeSession = this.mode === "remote";
  }

  // Resizing the machine's screen is input: not for view-only consoles.
  setPolicy({ input }) {
    this._input = input;
    this._remote.disabled = !input;
    this._remote.hidden = !input;
    this.set(this.mode === "remote" && !input ? "fit" : this.mode);
  }
}

// Make noVNC's canvas in C{screen} reachable and leavable by keyboard.
export function keyboardReachable(screen, leaveTo) {
  const canvas = screen.querySelector("canvas");
  if (canvas) {
    canvas.tabIndex = 0;
    canvas.setAttribute("role", "application");
    canvas.setAttribute("aria-roledescription", "remote screen");
    canvas.setAttribute("aria-label",
      `The machine's screen: keys typed here go to the machine. `
      + `Press ${LEAVE_SCREEN} to return to the controls.`);
  }
  if (screen.dataset.leaveKey) {
    return;
  }
  screen.dataset.leaveKey = LEAVE_SCREEN;
  // The third of Ctrl, Alt and Shift going down is kept from noVNC (these
  // listeners capture, so they run before noVNC's on the canvas); the
  // releases reach noVNC, so the machine sees Ctrl and Alt come back up;
  // the focus moves once all three are up. noVNC itself lets go of keys
  // only when the window loses the focus, not the canvas.
  let leaving = false;
  const MODIFIER_KEYS = ["Control", "Alt", "Shift"];
  screen.addEventListener("keydown", (e) => {
    if (!MODIFIER_KEYS.includes(e.key)) {
      leaving = false;  // a key with all three: the machine's own shortcut
    } else if (e.ctrlKey && e.altKey && e.shiftKey) {
      e.preventDefault();
      e.stopPropagation();
      leaving = true;
    }
  }, { capture: true });
  screen.addEventListener("keyup", (e) => {
    if (leaving && !e.ctrlKey && !e.altKey && !e.shiftKey) {
      leaving = false;
      setTimeout(leaveTo, 0);  // after noVNC has sent this release
    }
  }, { capture: true });
  screen.addEventListener("focusout", () => { leaving = false; });
}
