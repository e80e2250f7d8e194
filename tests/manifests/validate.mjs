// Validates Knative, KEDA and Prometheus Operator objects against the schemas published in npm
// @kubernetes-models/knative, /keda and /prometheus-operator.
//
// stdin: a JSON array of Kubernetes objects. stdout: a JSON array, one result per object, in order:
//   {schema, errors: [{path, message}], unknown: [{path, known}], ignored: [{path, message, reason}]}
// schema: the module that validated it, or null when the package has no model for the kind (then only
// apiVersion, kind and metadata are checked, metadata against the published ObjectMeta schema).
// errors: what the published (AJV-compiled) schema rejects, less the documented false positives (`ignored`).
// unknown: fields the schema does not define. The published schemas allow unknown fields, so this script runs
// each validator on a Proxy of the object that records every property the validator looks up or enumerates:
// a compiled validator reads each property its schema defines (`data.spec`, `data.template`, ...) and
// enumerates maps (`for (key in data)`), so a key that is present but was never looked up on an object whose
// other properties were, is a field the schema does not know: a typo, or a field of a newer API. Objects the
// validator neither read nor enumerated are free-form (`x-kubernetes-preserve-unknown-fields`, `type: object`).
// Exit status: 0 when the script ran (whatever the verdicts), 2 on bad input.

const PACKAGES = [
  [/\.knative\.dev$/, "@kubernetes-models/knative"],
  [/^(eventing\.)?keda\.sh$/, "@kubernetes-models/keda"],
  [/^monitoring\.coreos\.com$/, "@kubernetes-models/prometheus-operator"],
];

// Errors the published schemas raise on valid objects, because they are generated from Go types without
// reading `omitempty`. Each filter names the kinds, the error and the reason.
const FALSE_POSITIVES = [
  {
    reason: "status is written by the controller, never by a manifest; some models (SinkBinding 4.0.0) list it as " +
      "required because its Go field has no omitempty",
    match: (e) => e.keyword === "required" && e.params?.missingProperty === "status" && e.instancePath === "",
  },
  {
    reason: "Knative Serving names containers itself (user-container, or user-container-N for several); " +
      "@kubernetes-models/knative 4.0.0 requires Container.name from core/v1",
    group: "serving.knative.dev",
    match: (e) => e.keyword === "required" && e.params?.missingProperty === "name" &&
      /^(\/spec\/template)?\/spec\/(containers|initContainers)\/\d+$/.test(e.instancePath),
  },
  {
    reason: "Knative Serving probes may omit the port: the queue-proxy probes the serving container's port " +
      "(a port, if set, must equal it); the core/v1 probe schema requires it",
    group: "serving.knative.dev",
    match: (e) => e.keyword === "required" && e.params?.missingProperty === "port" &&
      /^(\/spec\/template)?\/spec\/containers\/\d+\/(readiness|liveness|startup)Probe\/(httpGet|tcpSocket|grpc)$/
        .test(e.instancePath),
  },
  {
    reason: "IntegrationSource aws.* fields (autoCreateBucket, delay, deleteAfterRead, ...) are optional with " +
      "defaults in Knative Eventing; @kubernetes-models/knative 4.0.0 lists them all as required",
    group: "sources.knative.dev",
    kind: "IntegrationSource",
    match: (e) => e.keyword === "required" && /^\/spec\/aws(\/|$)/.test(e.instancePath),
  },
];

function packageFor(apiVersion) {
  const group = apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
  const hit = PACKAGES.find(([re]) => re.test(group));
  return hit ? hit[1] : null;
}

async function modelFor(apiVersion, kind) {
  const pkg = packageFor(apiVersion);
  if (!pkg || !/^[A-Za-z0-9]+$/.test(kind)) return null;
  const path = `${pkg}/${apiVersion}/${kind}`;
  try {
    const mod = await import(path);
    return mod[kind] && mod[kind].apiVersion === apiVersion && mod[kind].kind === kind ? { path, model: mod[kind] } : null;
  } catch (err) {
    if (err && (err.code === "ERR_MODULE_NOT_FOUND" || err.code === "ERR_PACKAGE_PATH_NOT_EXPORTED")) return null;
    throw err;
  }
}

// A deep Proxy: every object the validator touches records the keys it looked up and whether it enumerated.
function tracked(root) {
  const info = new Map(); // target object -> {looked: Set, enumerated: bool}
  const proxies = new WeakMap();
  const wrap = (value) => {
    if (value === null || typeof value !== "object") return value;
    if (proxies.has(value)) return proxies.get(value);
    const entry = { looked: new Set(), enumerated: false };
    info.set(value, entry);
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        if (typeof key === "string") entry.looked.add(key);
        return wrap(Reflect.get(target, key, receiver));
      },
      has(target, key) {
        if (typeof key === "string") entry.looked.add(key);
        return Reflect.has(target, key);
      },
      ownKeys(target) {
        entry.enumerated = true;
        return Reflect.ownKeys(target);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  };
  return { proxy: wrap(root), info };
}

const pointer = (parts) => parts.map((p) => "/" + String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("");

function unknownFields(root, info) {
  const found = [];
  const walk = (node, parts) => {
    if (node === null || typeof node !== "object") return;
    if (Array.isArray(node)) return node.forEach((item, i) => walk(item, [...parts, i]));
    const entry = info.get(node);
    if (!entry) return; // never reached by the validator (e.g. under a free-form object)
    const structured = !entry.enumerated && entry.looked.size > 0;
    for (const key of Object.keys(node)) {
      if (structured && !entry.looked.has(key)) {
        found.push({ path: pointer([...parts, key]), known: [...entry.looked].filter((k) => k !== "length").sort() });
      } else {
        walk(node[key], [...parts, key]);
      }
    }
  };
  walk(root, []);
  return found;
}

function runValidator(validate, obj) {
  // Model.prototype.validate runs the compiled schema on `this` and throws ValidationError(.errors) on failure.
  const { proxy, info } = tracked(obj);
  let errors = [];
  try {
    validate.call(proxy);
  } catch (err) {
    if (!Array.isArray(err?.errors)) throw err;
    errors = err.errors;
  }
  return { errors, unknown: unknownFields(obj, info) };
}

async function metadataOnly(obj) {
  const errors = [];
  if (typeof obj.apiVersion !== "string" || !obj.apiVersion) errors.push({ path: "/apiVersion", message: "must be a non-empty string" });
  if (typeof obj.kind !== "string" || !/^[A-Z][A-Za-z0-9]*$/.test(obj.kind ?? "")) errors.push({ path: "/kind", message: "must be a CamelCase string" });
  if (!obj.metadata || typeof obj.metadata !== "object" || !obj.metadata.name) errors.push({ path: "/metadata/name", message: "is required" });
  for (const key of Object.keys(obj)) {
    if (!["apiVersion", "kind", "metadata", "spec", "data", "status"].includes(key)) {
      errors.push({ path: pointer([key]), message: "is not a top-level field of a custom resource (apiVersion, kind, metadata, spec)" });
    }
  }
  const { validate } = await import("@kubernetes-models/apimachinery/_schemas/IoK8sApimachineryPkgApisMetaV1ObjectMeta");
  const meta = obj.metadata && typeof obj.metadata === "object" ? obj.metadata : {};
  const result = runValidator(function () { if (!validate(this)) throw Object.assign(new Error("metadata"), { errors: validate.errors }); }, meta);
  for (const e of result.errors) errors.push({ path: "/metadata" + e.instancePath, message: e.message ?? e.keyword });
  return { schema: null, errors, unknown: result.unknown.map((u) => ({ ...u, path: "/metadata" + u.path })), ignored: [] };
}

function describe(e) {
  const p = e.params || {};
  if (e.keyword === "required") return `must have required property '${p.missingProperty}'`;
  if (e.keyword === "enum") return `must be one of ${JSON.stringify(p.allowedValues)}`;
  if (e.keyword === "type") return `must be ${p.type}`;
  return e.message || `${e.keyword} ${JSON.stringify(p)}`;
}

async function check(obj) {
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return { schema: null, errors: [{ path: "", message: "not an object" }], unknown: [], ignored: [] };
  const found = typeof obj.apiVersion === "string" && typeof obj.kind === "string" ? await modelFor(obj.apiVersion, obj.kind) : null;
  if (!found) return metadataOnly(obj);
  const { errors, unknown } = runValidator(found.model.prototype.validate, obj);
  const group = obj.apiVersion.split("/")[0];
  const result = { schema: found.path, errors: [], unknown, ignored: [] };
  for (const e of errors) {
    const fp = FALSE_POSITIVES.find((f) => (!f.group || f.group === group) && (!f.kind || f.kind === obj.kind) && f.match(e));
    const item = { path: e.instancePath, message: describe(e) };
    if (fp) result.ignored.push({ ...item, reason: fp.reason });
    else result.errors.push(item);
  }
  return result;
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
let objects;
try {
  objects = JSON.parse(input);
  if (!Array.isArray(objects)) throw new Error("expected a JSON array of objects");
} catch (err) {
  process.stderr.write(`validate.mjs: ${err.message}\n`);
  process.exit(2);
}
const results = [];
for (const obj of objects) results.push(await check(obj));
process.stdout.write(JSON.stringify(results) + "\n");
