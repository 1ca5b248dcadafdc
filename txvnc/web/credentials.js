// The prompt for what a VNC server asks before it shows its screen (a
// password; with some security types a user name or a target too). In a
// plain relay the proxy passes the VNC handshake through untouched, so
// noVNC meets the server's challenge itself and asks the page with its
// credentialsrequired event.
//
// What the user types goes to noVNC's sendCredentials and nowhere else:
// the form submits to its dialog (never a request), its fields have no
// names, and they are emptied as soon as noVNC has the values.

const FIELDS = ["username", "password", "target"];

export class CredentialsPrompt {
  constructor() {
    this._dialog = document.getElementById("credentials");
    this._form = document.getElementById("credentials-form");
    this._heading = document.getElementById("credentials-heading");
    this._error = document.getElementById("credentials-error");
    this._inputs = {};
    this._rows = {};
    for (const name of FIELDS) {
      this._inputs[name] = document.getElementById(`credentials-${name}`);
      this._rows[name] = document.getElementById(`credentials-row-${name}`);
    }
    this._onSubmit = null;
    this._onCancel = null;
    this._form.addEventListener("submit", (e) => {
      e.preventDefault();
      this._submit();
    });
    document.getElementById("credentials-cancel").addEventListener("click", () => this._cancel());
    // Escape on a modal dialog.
    this._dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      this._cancel();
    });
  }

  get open() {
    return this._dialog.open;
  }

  // Ask for C{types} (noVNC's names: "username", "password", "target");
  // C{error} says why when asking again. C{onSubmit} gets the values,
  // C{onCancel} is called when the user gives up.
  ask(types, error, onSubmit, onCancel) {
    this._onSubmit = onSubmit;
    this._onCancel = onCancel;
    const wanted = new Set(types.length ? types : ["password"]);
    this._heading.textContent = wanted.has("username") ? "VNC sign-in" : "VNC password";
    for (const name of FIELDS) {
      this._rows[name].hidden = !wanted.has(name);
      this._inputs[name].required = wanted.has(name) && name !== "password";
      this._inputs[name].value = "";
    }
    const password = this._inputs.password;
    if (error) {
      this._error.textContent = error;
      this._error.hidden = false;
      password.setAttribute("aria-invalid", "true");
      password.setAttribute("aria-describedby", "credentials-error");
    } else {
      this._error.hidden = true;
      this._error.textContent = "";
      password.removeAttribute("aria-invalid");
      password.removeAttribute("aria-describedby");
    }
    if (!this._dialog.open) {
      this._dialog.showModal();
    }
    const first = FIELDS.find((name) => wanted.has(name) && !this._inputs[name].value);
    this._inputs[first || "password"].focus();
  }

  _values() {
    const values = {};
    for (const name of FIELDS) {
      if (!this._rows[name].hidden) {
        values[name] = this._inputs[name].value;
      }
      this._inputs[name].value = "";
    }
    return values;
  }

  _submit() {
    const onSubmit = this._onSubmit;
    const values = this._values();
    this._close();
    if (onSubmit) {
      onSubmit(values);
    }
  }

  _cancel() {
    const onCancel = this._onCancel;
    this._values();
    this._close();
    if (onCancel) {
      onCancel();
    }
  }

  // Closed without an answer (the connection ended while it was open).
  dismiss() {
    this._values();
    this._close();
  }

  _close() {
    this._onSubmit = null;
    this._onCancel = null;
    if (this._dialog.open) {
      this._dialog.close();
    }
  }
}

// Whether C{values} answer every one of C{types}.
export function covers(values, types) {
  return values !== null && types.every((name) => typeof values[name] === "string");
}
