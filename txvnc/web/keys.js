// The extra-keys bar: keys a browser, an operating system or a small
// keyboard keeps from reaching the screen (Esc leaves full screen, Tab
// moves the browser's focus, Ctrl-Alt-Del and Ctrl-Alt-F1…F12 are the
// host's). Ctrl, Alt and Windows are toggles: pressed once they stay down
// on the machine, for keys typed afterwards, until pressed again.
//
// A button pressed with the pointer gives the keyboard back to the screen,
// so the next key typed goes to the machine; one pressed from the keyboard
// keeps the focus, so a keyboard user stays where they are.
import KeyTable from "./novnc/core/input/keysym.js";

const MODIFIERS = {
  ctrl: { keysym: KeyTable.XK_Control_L, code: "ControlLeft" },
  alt: { keysym: KeyTable.XK_Alt_L, code: "AltLeft" },
  super: { keysym: KeyTable.XK_Super_L, code: "MetaLeft" },
};
const TAPS = {
  esc: { keysym: KeyTable.XK_Escape, code: "Escape" },
  tab: { keysym: KeyTable.XK_Tab, code: "Tab" },
};
const DELETE = { keysym: KeyTable.XK_Delete, code: "Delete" };
const FUNCTION_KEYS = 12;

export class ExtraKeys {
  constructor(page) {
    this._page = page;
    this._bar = document.getElementById("keys");
    this._fkeys = document.getElementById("fkeys");
    this._fkeysToggle = document.getElementById("fkeys-toggle");
    this._held = new Set();
    this._buttons = {};
    for (const name of Object.keys(MODIFIERS)) {
      const button = document.getElementById(`key-${name}`);
      this._buttons[name] = button;
      button.addEventListener("click", (e) => {
        this.toggle(name);
        this._afterClick(e);
      });
    }
    for (const [name, key] of Object.entries(TAPS)) {
      document.getElementById(`key-${name}`).addEventListener("click", (e) => {
        this.press([], key);
        this._afterClick(e);
      });
    }
    document.getElementById("ctrl-alt-del").addEventListener("click", (e) => {
      this.press(["ctrl", "alt"], DELETE);
      this._afterClick(e);
    });
    for (let n = 1; n <= FUNCTION_KEYS; n++) {
      const button = document.createElement("button");
      button.type = "button";
      button.id = `key-ctrl-alt-f${n}`;
      button.textContent = `F${n}`;
      button.setAttribute("aria-label", `Ctrl+Alt+F${n}`);
      button.addEventListener("click", (e) => {
        this.press(["ctrl", "alt"], { keysym: KeyTable[`XK_F${n}`], code: `F${n}` });
        this._afterClick(e);
      });
      this._fkeys.appendChild(button);
    }
    this._fkeysToggle.addEventListener("click", () => this.showFunctionKeys(this._fkeys.hidden));
    this.setConnected(false);
  }

  showFunctionKeys(open) {
    this._fkeys.hidden = !open;
    this._fkeysToggle.setAttribute("aria-expanded", String(open));
  }

  setConnected(connected) {
    for (const button of this._bar.querySelectorAll("button")) {
      button.disabled = !connected;
    }
    if (!connected) {
      // The machine forgets held keys with the connection; so do we.
      this._held.clear();
      for (const button of Object.values(this._buttons)) {
        button.setAttribute("aria-pressed", "false");
      }
    }
  }

  // View-only consoles send no keys: the whole bar goes.
  setPolicy({ input }) {
    this._bar.hidden = !input;
    if (!input) {
      this.releaseAll();
    }
  }

  toggle(name) {
    const rfb = this._page.rfb;
    if (!rfb) {
      return;
    }
    const { keysym, code } = MODIFIERS[name];
    const down = !this._held.has(name);
    rfb.sendKey(keysym, code, down);
    if (down) {
      this._held.add(name);
    } else {
      this._held.delete(name);
    }
    this._buttons[name].setAttribute("aria-pressed", String(down));
  }

  // Press C{key} with the C{modifiers} down; those already held stay held.
  press(modifiers, key) {
    const rfb = this._page.rfb;
    if (!rfb) {
      return;
    }
    const pressed = modifiers.filter((name) => !this._held.has(name));
    for (const name of pressed) {
      rfb.sendKey(MODIFIERS[name].keysym, MODIFIERS[name].code, true);
    }
    rfb.sendKey(key.keysym, key.code);
    for (const name of pressed.reverse()) {
      rfb.sendKey(MODIFIERS[name].keysym, MODIFIERS[name].code, false);
    }
  }

  releaseAll() {
    for (const name of [...this._held]) {
      this.toggle(name);
    }
  }

  _afterClick(e) {
    // detail is the click count: 0 for a click made with Enter or Space.
    if (e.detail > 0 && this._page.rfb) {
      this._page.rfb.focus();
    }
  }
}
