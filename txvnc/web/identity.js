// The check of a VNC server's own identity: with RSA-AES security (RA2,
// RA2ne: RealVNC's, TigerVNC 1.13's) the server first sends its RSA public
// key, and noVNC waits (its serververification event) until the page
// approves it. In a plain relay the proxy passes that handshake through
// untouched, so, as with a password, the page asks the user: it shows the
// key's SHA-256 fingerprint, to compare with the one the machine's
// administrator gives, and approves only when the user says so. A key the
// user approved is approved again for this page's later connections (a
// reconnect, a password asked again), never stored.

// "SHA-256 ab:cd:…" of C{publickey} (the bytes noVNC gives: the key's size
// in bits, its modulus and exponent, as the server sent them).
export async function fingerprint(publickey) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", publickey));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0"));
  return `SHA-256 ${hex.join(":")}`;
}

export class IdentityPrompt {
  constructor() {
    this._dialog = document.getElementById("identity");
    this._fingerprint = document.getElementById("identity-fingerprint");
    this._onAnswer = null;
    this.approved = null;
    document.getElementById("identity-approve").addEventListener("click", () => this._answer(true));
    document.getElementById("identity-cancel").addEventListener("click", () => this._answer(false));
    this._dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      this._answer(false);
    });
  }

  get open() {
    return this._dialog.open;
  }

  // Ask about C{key} (a fingerprint); C{onAnswer(true)} once approved,
  // C{onAnswer(false)} when the user refuses.
  ask(key, onAnswer) {
    if (key === this.approved) {
      onAnswer(true);
      return;
    }
    this._key = key;
    this._onAnswer = onAnswer;
    this._fingerprint.textContent = key;
    if (!this._dialog.open) {
      this._dialog.showModal();
    }
    document.getElementById("identity-cancel").focus();
  }

  _answer(approved) {
    const onAnswer = this._onAnswer;
    if (approved) {
      this.approved = this._key;
    }
    this.dismiss();
    if (onAnswer) {
      onAnswer(approved);
    }
  }

  // Closed without an answer (the connection ended while it was open).
  dismiss() {
    this._onAnswer = null;
    if (this._dialog.open) {
      this._dialog.close();
    }
  }
}
