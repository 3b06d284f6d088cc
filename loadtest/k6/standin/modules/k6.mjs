// `k6`: check, sleep, group, fail (grafana/k6 `js/modules/k6/k6.go`).
// - check(value, checks, tags): each entry is a function of `value` (or a plain value) whose
//   truthiness passes the check; every entry adds a sample to the `checks` Rate, tagged
//   `check: <name>`; returns true when all passed. An exception in a check function
//   propagates.
// - sleep(seconds) blocks the VU; an interrupted VU stops sleeping at once.
// - group(name, fn) runs fn with the `group` tag `::name` (nested: `::a::b`).
import { InterruptError, requireVuContext, sample, vu, waitFor } from "../bridge.mjs";

export function check(value, checks, tags) {
  requireVuContext("check() can't be used in the init context");
  let all = true;
  for (const [name, test] of Object.entries(checks || {})) {
    const ok = !!(typeof test === "function" ? test(value) : test);
    sample("checks", ok ? 1 : 0, { ...(tags || {}), check: name });
    all = all && ok;
  }
  return all;
}

export function sleep(seconds) {
  requireVuContext("sleep() can't be used in the init context");
  const ms = Number(seconds) * 1000;
  if (!(ms > 0)) {
    return;
  }
  const m = waitFor(() => false, ms);
  if (m && m.t === "interrupt") {
    throw new InterruptError();
  }
}

export function group(name, fn) {
  requireVuContext("group() can't be used in the init context");
  if (name.includes("::")) {
    throw new Error("group and check names may not contain '::'");
  }
  const outer = vu.tags.group || "";
  vu.tags = { ...vu.tags, group: `${outer}::${name}` };
  try {
    return fn();
  } finally {
    vu.tags = { ...vu.tags, group: outer };
  }
}

export function fail(message) {
  throw new Error(message);
}

export default { check, sleep, group, fail };
