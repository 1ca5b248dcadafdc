// The clipboard both ways. Text the machine copies (noVNC's clipboard
// event, an RFB ServerCutText) is shown in the clipboard panel and copied
// to this computer's clipboard when the browser allows it; a browser may
// refuse writing without a click or a permission, and then the panel (its
// text, its Copy button) is the way. Text goes to the machine with the
// Paste button (the browser's clipboard, when it lets the page read it),
// Ctrl+V on the page outside the screen, or the panel's Send button.
//
// The token's policy decides which ways exist: setPolicy hides the rest.

export class Clipboard {
  constructor(page, { announce, showNotice }) {
    this._page = page;
    this._announce = announce;
    this._showNotice = showNotice;
    this._toggle = document.getElementById("clipboard-toggle");
    this._panel = document.getElementById("clipboard-panel");
    this._text = document.getElementById("clipboard-text");
    this._label = document.getElementById("clipboard-label");
    this._note = document.getElementById("clipboard-note");
    this._copy = document.getElementById("clipboard-copy");
    this._send = document.getElementById("clipboard-send");
    this._paste = document.getElementById("paste");
    this._toVM = true;
    this._fromVM = true;
    this._connected = false;
    // What the machine last copied, and how many times it did.
    page.clipboard = { text: "", received: 0, copied: 0 };

    this._toggle.addEventListener("click", () => this.show(this._panel.hidden));
    this._copy.addEventListener("click", () => this._copyOut(true));
    this._send.addEventListener("click", () => this._sendToVM(this._text.value, false));
    this._paste.addEventListener("click", async () => {
      try {
        const text = await navigator.clipboard.readText();
        if (text) {
          this._sendToVM(text, true);
        }
      } catch (err) {
        this._showNotice("The browser did not allow reading the clipboard: "
          + "press Ctrl+V in the console, or use the clipboard panel.");
      }
    });
    // Ctrl+V on the page outside noVNC's canvas pastes too; never from a
    // field (the panel's, the password's: a pasted password stays there).
    document.addEventListener("paste", (e) => {
      if (e.target instanceof Element && e.target.closest("input, textarea, select, dialog")) {
        return;
      }
      const text = e.clipboardData && e.clipboardData.getData("text/plain");
      if (text && this._toVM && this._page.rfb) {
        this._page.rfb.clipboardPasteFrom(text);
        e.preventDefault();
      }
    });
  }

  show(open) {
    this._panel.hidden = !open;
    this._toggle.setAttribute("aria-expanded", String(open));
    if (open) {
      delete this._toggle.dataset.unread;
      this._text.focus();
    }
  }

  setConnected(connected) {
    this._connected = connected;
    this._update();
  }

  setPolicy({ toVM, fromVM }) {
    this._toVM = toVM;
    this._fromVM = fromVM;
    this._update();
  }

  _update() {
    const any = this._toVM || this._fromVM;
    this._toggle.hidden = !any;
    if (!any) {
      this.show(false);
    }
    this._paste.hidden = !this._toVM;
    this._send.hidden = !this._toVM;
    this._copy.hidden = !this._fromVM;
    this._paste.disabled = !this._connected;
    this._send.disabled = !this._connected;
    this._text.readOnly = !this._toVM;
    this._label.textContent = this._fromVM
      ? (this._toVM ? "Text copied on the machine, or to send to it" : "Text copied on the machine")
      : "Text to send to the machine";
  }

  // noVNC's clipboard event: the machine copied C{text}.
  fromMachine(text) {
    if (!this._fromVM) {
      return;  // the proxy drops it; a server that sends it anyway is ignored
    }
    this._page.clipboard.text = text;
    this._page.clipboard.received += 1;
    this._text.value = text;
    this._copyOut(false);
  }

  async _copyOut(clicked) {
    const text = this._text.value;
    try {
      await navigator.clipboard.writeText(text);
      this._page.clipboard.copied += 1;
      this._note.textContent = clicked
        ? "Copied to this computer's clipboard."
        : "The machine copied text: it is on this computer's clipboard too.";
    } catch (err) {
      this._note.textContent = clicked
        ? "The browser did not allow copying: select the text and copy it."
        : "The machine copied text. The browser did not allow putting it on "
          + "this computer's clipboard: press Copy, or select the text here.";
      this._toggle.dataset.unread = "true";
    }
    if (!clicked && this._panel.hidden) {
      this._announce("The machine copied text: open the clipboard panel to see it.");
    }
  }

  // Send C{text}; C{focus}: then type into the screen (the Paste button),
  // else stay in the panel.
  _sendToVM(text, focus) {
    if (text && this._toVM && this._page.rfb) {
      this._page.rfb.clipboardPasteFrom(text);
      this._note.textContent = "Sent to the machine's clipboard.";
      if (focus) {
        this._page.rfb.focus();
      }
    }
  }
}
