// The token's console policy, as far as the page can know it. The proxy
// enforces it whatever the page shows (view-only consoles have their input
// dropped, a clipboard direction that is not allowed is filtered out);
// the page only hides the controls that could not work.
//
// The page learns it from the proxy's notice on the console's WebSocket:
//   {"type": "policy", "view_only": true|false,
//    "clipboard": "both"|"to_vm"|"from_vm"|"none"}
// Until one arrives (or from a proxy that sends none) every control shows.

const CLIPBOARD_MODES = new Set(["both", "to_vm", "from_vm", "none"]);

export const OPEN_POLICY = Object.freeze({ viewOnly: false, clipboard: "both" });

// The policy a notice carries; null when C{message} is not a policy notice.
export function policyFrom(message) {
  if (!message || message.type !== "policy") {
    return null;
  }
  const clipboard = CLIPBOARD_MODES.has(message.clipboard) ? message.clipboard : "both";
  return { viewOnly: message.view_only === true, clipboard };
}

// What a policy lets the page offer.
export function abilities(policy) {
  const input = !policy.viewOnly;
  return {
    input,
    toVM: input && (policy.clipboard === "both" || policy.clipboard === "to_vm"),
    fromVM: policy.clipboard === "both" || policy.clipboard === "from_vm",
  };
}
